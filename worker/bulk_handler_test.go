package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// loud is a command that checks its input file came in whole and prints
// 40 KB to each of stdout and stderr through the streams, as smolvm's
// --stream relays them, returning the head and tail smolvm keeps.
func loud(f *fakeSmolvm, input []byte, seen *bool) func(context.Context, string, []string, smolvm.ExecOptions) (smolvm.ExecResult, error) {
	return func(_ context.Context, vm string, _ []string, o smolvm.ExecOptions) (smolvm.ExecResult, error) {
		in, ok := f.file(vm, "/work/in/big")
		*seen = ok && bytes.Equal(in.data, input) && in.mode == 0o640
		out := bytes.Repeat([]byte("stdout line of a loud agent\n"), 1430)
		errs := bytes.Repeat([]byte("stderr line of a loud agent\n"), 1430)
		for i := 0; o.Stdout != nil && i < len(out); i += 4096 { // nil: no live output, no store
			o.Stdout.Write(out[i:min(i+4096, len(out))])
			o.Stderr.Write(errs[i:min(i+4096, len(errs))])
		}
		return smolvm.ExecResult{ExitCode: 0, Stdout: out, Stderr: errs}, nil
	}
}

// TestHandlerBulkInStore: with a store, a task's input file by reference
// is fetched and copied in whole, its whole output goes to the store, and
// the result written to Redis keeps only the output's tails and keys, a
// few KiB; nothing is left in DATA/tmp. Against a file store and a real
// S3 server.
func TestHandlerBulkInStore(t *testing.T) {
	eachStore(t, func(t *testing.T, st testStore) {
		input := bytes.Repeat([]byte("700 KB of input\n"), 43750)
		ref := putInput(t, st, "big-input", input)
		f := newFake()
		var seen bool
		f.exec = loud(f, input, &seen)
		h, _ := newHandler(t, f, func(c *Config) { c.Store = st })
		p := basic
		p.Files = []tasks.File{{Path: "/work/in/big", Ref: &ref, Mode: "0640"}, {Path: "/work/in/small", Content: []byte("hi")}}
		var w results
		if err := h.Run(context.Background(), Meta{ID: "bulk-1"}, payload(t, p), &w); err != nil {
			t.Fatal(err)
		}
		if !seen {
			t.Error("the command did not find the referenced file whole, with its mode, in the VM")
		}
		res := w.result(t)
		for _, s := range []struct {
			name, key, tail string
			omitted         int64
		}{{"stdout", res.StdoutKey, res.Stdout, res.StdoutOmitted}, {"stderr", res.StderrKey, res.Stderr, res.StderrOmitted}} {
			if !regexp.MustCompile(`^outputs/default/bulk-1-[0-9a-f]{32}/1-[0-9a-f]{8}/` + s.name + `$`).MatchString(s.key) {
				t.Errorf("%s key %q, want outputs/default/TASK-KEY/1-RANDOM/%s", s.name, s.key, s.name)
			}
			var got bytes.Buffer
			rc, _, err := st.Get(context.Background(), s.key)
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			_, err = io.Copy(&got, rc)
			rc.Close()
			want := strings.Repeat(s.name+" line of a loud agent\n", 1430)
			if err != nil || got.String() != want {
				t.Errorf("%s in the store: %d bytes (%v), want the %d written", s.name, got.Len(), err, len(want))
			}
			_, tail, _ := strings.Cut(s.tail, "…]\n")
			if jsonLen(s.tail) > tasks.OutputTailBytes || !strings.HasSuffix(want, tail) || s.omitted+int64(len(tail)) != int64(len(want)) {
				t.Errorf("%s in the result: %q (omitted %d); want the stream's last bytes within %d of JSON", s.name, s.tail, s.omitted, tasks.OutputTailBytes)
			}
		}
		b, _ := json.Marshal(res)
		if len(b) > 3<<10 {
			t.Errorf("the final result is %d bytes of JSON, want at most 3 KiB:\n%s", len(b), b)
		}
		if left := tmpLeft(t, h); len(left) != 0 {
			t.Errorf("left in DATA/tmp: %q", left)
		}
	})
}

// TestHandlerRefBadInput: a payload with a file by reference whose object
// is missing is archived as bad input naming files[i].ref, after its VM was
// made, which is then deleted.
func TestHandlerRefBadInput(t *testing.T) {
	t.Parallel()
	ref := tasks.FileRef{Key: "inputs/default/nothing-here", SHA256: strings.Repeat("a", 64), Size: 10}
	p := basic
	p.Files = []tasks.File{{Path: "/work/in/x", Content: []byte("x")}, {Path: "/work/in/big", Ref: &ref}}
	st, err := store.Open(context.Background(), "file://"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		store  store.Store
		reason string
		calls  bool
	}{
		{"missing object", st, "files[1].ref: no object inputs/default/nothing-here in the store", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake()
			h, _ := newHandler(t, f, func(c *Config) { c.Store = tt.store })
			err := h.Run(context.Background(), Meta{ID: "ref-1"}, payload(t, p), nil)
			var ve *tasks.ValidationError
			if !errors.As(err, &ve) || !isPermanent(err) || !strings.HasPrefix(err.Error(), tt.reason) {
				t.Fatalf("Run = %v, want bad input %q", err, tt.reason)
			}
			if got := len(f.ops()) > 0; got != tt.calls {
				t.Errorf("smolvm calls %q; want some: %v", f.ops(), tt.calls)
			}
			if left := f.left(); len(left) != 0 {
				t.Errorf("VMs left: %q", left)
			}
		})
	}
}

// TestHandlerOutputStoreDown: a store that fails as the output is kept
// fails the attempt with a retried error; its result names no key.
func TestHandlerOutputStoreDown(t *testing.T) {
	st := s3Store(t)
	f := newFake()
	var seen bool
	f.exec = func(ctx context.Context, vm string, cmd []string, o smolvm.ExecOptions) (smolvm.ExecResult, error) {
		st.down()
		return loud(f, nil, &seen)(ctx, vm, cmd, o)
	}
	h, _ := newHandler(t, f, func(c *Config) { c.Store = st })
	var w results
	err := h.Run(context.Background(), Meta{ID: "down-1"}, payload(t, basic), &w)
	if !errors.Is(err, store.ErrUnavailable) || isPermanent(err) {
		t.Fatalf("Run = %v, want a retried error matching store.ErrUnavailable", err)
	}
	if res := w.result(t); res.StdoutKey != "" || res.State == tasks.StateDone {
		t.Errorf("result %+v after a failed upload", res)
	}
	if left := tmpLeft(t, h); len(left) != 0 {
		t.Errorf("left in DATA/tmp: %q", left)
	}
}

// TestHandlerOutputInResult: with OutputInResult a worker with a store
// keeps the output in the result as smolvm captured it, and stores none.
func TestHandlerOutputInResult(t *testing.T) {
	t.Parallel()
	st, err := store.Open(context.Background(), "file://"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := newFake()
	var seen bool
	f.exec = loud(f, nil, &seen)
	h, _ := newHandler(t, f, func(c *Config) { c.Store = st; c.OutputInResult = true })
	var w results
	if err := h.Run(context.Background(), Meta{ID: "inres-1"}, payload(t, basic), &w); err != nil {
		t.Fatal(err)
	}
	res := w.result(t)
	if res.StdoutKey != "" || res.StderrKey != "" || res.Stdout != strings.Repeat("stdout line of a loud agent\n", 1430) {
		t.Errorf("result: keys %q %q, stdout of %d bytes; want no keys and the whole stdout", res.StdoutKey, res.StderrKey, len(res.Stdout))
	}
	var keys []string
	st.List(context.Background(), "outputs/", func(o store.Object) error { keys = append(keys, o.Key); return nil })
	if len(keys) != 0 {
		t.Errorf("outputs stored: %q", keys)
	}
}
