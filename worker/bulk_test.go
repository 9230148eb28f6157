package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"

	"github.com/bot-bottle/bottleq/internal/teststore"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// testStore is a store a test reads and writes through the store package,
// with the file on disk that holds each key's bytes (to corrupt it) and a
// way to make it unreachable.
type testStore struct {
	store.Store
	file func(key string) string
	// down makes the store unreachable; nil for a file store, which has
	// no server to stop.
	down func()
}

// eachStore runs fn against a file:// store and an s3:// store on a real
// versitygw on loopback (which skips, outside CI, where versitygw cannot be
// installed). The s3 run sets the AWS environment, so neither runs in
// parallel with other tests.
func eachStore(t *testing.T, fn func(t *testing.T, st testStore)) {
	t.Helper()
	t.Run("file", func(t *testing.T) {
		dir := t.TempDir()
		st, err := store.Open(context.Background(), "file://"+dir)
		if err != nil {
			t.Fatal(err)
		}
		fn(t, testStore{Store: st, file: func(k string) string { return filepath.Join(dir, filepath.FromSlash(k)) }})
	})
	t.Run("s3", func(t *testing.T) { fn(t, s3Store(t)) })
}

// s3Store opens an s3:// store on a real versitygw on loopback, through
// the AWS environment the worker would read (so t must not be parallel).
func s3Store(t *testing.T) testStore {
	t.Helper()
	srv := teststore.Start(t)
	srv.Setenv(t)
	st, err := store.Open(context.Background(), srv.URL("pool"))
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(srv.Dir, srv.Bucket, "pool")
	return testStore{Store: st, down: srv.Stop, file: func(k string) string { return filepath.Join(root, filepath.FromSlash(k)) }}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// putInput stores data as an input of the default tenant and returns its
// ref.
func putInput(t *testing.T, st store.Store, name string, data []byte) tasks.FileRef {
	t.Helper()
	key := tasks.InputKey(tasks.DefaultTenant, name)
	if _, err := st.Put(context.Background(), key, bytes.NewReader(data), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	return tasks.FileRef{Key: key, SHA256: sha(data), Size: int64(len(data))}
}

// TestFetchInput: a referenced input comes down whole with its mode; a
// missing object, or one whose size or digest is not the payload's, is bad
// input (archived, not retried); bytes that do not match what the store
// recorded, and an unreachable store, are retried errors. A failed fetch
// leaves no file.
func TestFetchInput(t *testing.T) {
	eachStore(t, func(t *testing.T, st testStore) {
		ctx := context.Background()
		data := bytes.Repeat([]byte("input file, 700 KB of it\n"), 28000)
		good := putInput(t, st, "good", data)
		dir := t.TempDir()

		t.Run("whole", func(t *testing.T) {
			path := filepath.Join(dir, "whole")
			if err := fetchInput(ctx, st, "files[0].ref", good, path, 0o751); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("fetched %d bytes (%v), want the %d stored", len(got), err, len(data))
			}
			if info, _ := os.Stat(path); info.Mode().Perm() != 0o751 {
				t.Errorf("mode %v, want 0751", info.Mode().Perm())
			}
			if err := fetchInput(ctx, st, "files[0].ref", good, path, 0o644); err == nil || isPermanent(err) {
				t.Errorf("fetching onto an existing file: %v, want a retried error", err)
			}
		})

		permanent := []struct {
			name   string
			ref    tasks.FileRef
			reason string
		}{
			{"missing", tasks.FileRef{Key: tasks.InputKey(tasks.DefaultTenant, "gone"), SHA256: good.SHA256, Size: good.Size}, "no object inputs/default/gone in the store"},
			{"size differs", tasks.FileRef{Key: good.Key, SHA256: good.SHA256, Size: good.Size - 1}, "is 700000 bytes, not the 699999 the payload says"},
			{"digest differs", tasks.FileRef{Key: good.Key, SHA256: sha([]byte("other")), Size: good.Size}, "has SHA-256 " + good.SHA256 + ", not the " + sha([]byte("other"))},
		}
		for _, tt := range permanent {
			t.Run(tt.name, func(t *testing.T) {
				path := filepath.Join(dir, tt.name)
				err := fetchInput(ctx, st, "files[2].ref", tt.ref, path, 0o644)
				var ve *tasks.ValidationError
				if !errors.As(err, &ve) || ve.Field != "files[2].ref" || !strings.Contains(ve.Reason, tt.reason) || !isPermanent(err) {
					t.Fatalf("err = %v, want bad input for files[2].ref saying %q", err, tt.reason)
				}
				if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a failed fetch left %s: %v", path, err)
				}
			})
		}

		t.Run("corrupted in the store", func(t *testing.T) {
			ref := putInput(t, st, "rot", data)
			f, err := os.OpenFile(st.file(ref.Key), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte("rot"), 5000)
			f.Close()
			path := filepath.Join(dir, "rot")
			err = fetchInput(ctx, st, "files[0].ref", ref, path, 0o644)
			if !errors.Is(err, store.ErrDigestMismatch) || isPermanent(err) {
				t.Fatalf("err = %v, want a retried error matching store.ErrDigestMismatch", err)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a corrupted download left %s: %v", path, err)
			}
		})

		if st.down == nil {
			return // a file store has no server to stop
		}
		t.Run("store down", func(t *testing.T) {
			st.down()
			err := fetchInput(ctx, st, "files[0].ref", good, filepath.Join(dir, "down"), 0o644)
			if !errors.Is(err, store.ErrUnavailable) || isPermanent(err) {
				t.Fatalf("err = %v, want a retried error matching store.ErrUnavailable", err)
			}
		})
	})
}

// writeChunks writes data to w in chunks of n bytes, as smolvm's stream
// does.
func writeChunks(t *testing.T, w io.Writer, data []byte, n int) {
	t.Helper()
	for len(data) > 0 {
		k := min(n, len(data))
		if m, err := w.Write(data[:k]); err != nil || m != k {
			t.Fatalf("Write = %d, %v", m, err)
		}
		data = data[k:]
	}
}

// TestAttemptOutputs: a loud stream goes to the store whole, and the result
// keeps its tail (at most tasks.OutputTailBytes of JSON, from the start of
// a character) and key, counting what the tail leaves out; a quiet stream
// stays in the result whole with no object; the live output sees every
// byte too; the spool files are gone after close.
func TestAttemptOutputs(t *testing.T) {
	eachStore(t, func(t *testing.T, st testStore) {
		ctx := context.Background()
		var loud bytes.Buffer
		for i := 0; loud.Len() < 40_000; i++ {
			loud.WriteString("line " + strings.Repeat("é", i%7) + " of the agent's stdout\n")
		}
		spool := t.TempDir()
		prefix := outputKeyPrefix("acme", "task/1", 2)
		o, err := newAttemptOutputs(st.Store, spool, prefix, tasks.MaxStoredOutputBytes)
		if err != nil {
			t.Fatal(err)
		}
		var live bytes.Buffer
		writeChunks(t, o.writer(0, &live), loud.Bytes(), 4093)
		writeChunks(t, o.writer(1, nil), []byte("a warning\n"), 3)
		var res tasks.Result
		if err := o.keep(ctx, &res); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(live.Bytes(), loud.Bytes()) {
			t.Errorf("the live output got %d bytes, want %d", live.Len(), loud.Len())
		}
		if !strings.HasPrefix(res.StdoutKey, "outputs/acme/task-1-") || !strings.HasSuffix(res.StdoutKey, "/stdout") || !strings.Contains(res.StdoutKey, "/2-") {
			t.Errorf("StdoutKey = %q, want outputs/acme/TASK-KEY/2-RANDOM/stdout", res.StdoutKey)
		}
		rc, obj, err := st.Get(ctx, res.StdoutKey)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(stored, loud.Bytes()) || obj.SHA256 != sha(loud.Bytes()) {
			t.Errorf("stored stdout: %d bytes, %v, sha %s; want the %d written", len(stored), err, obj.SHA256, loud.Len())
		}
		if st.down == nil { // a file store takes the spool by a hard link: no second copy
			spoolFile, _ := os.Stat(o.spools[0].f.Name())
			object, _ := os.Stat(st.file(res.StdoutKey))
			if spoolFile == nil || object == nil || !os.SameFile(spoolFile, object) {
				t.Errorf("the file store holds a copy of the spool, not the spool itself")
			}
		}
		if n := jsonLen(res.Stdout); n > tasks.OutputTailBytes || n < tasks.OutputTailBytes-2*utf8.UTFMax {
			t.Errorf("the tail is %d bytes of JSON, want just under %d", n, tasks.OutputTailBytes)
		}
		marker, tail, ok := strings.Cut(res.Stdout, "…]\n")
		if !ok || !strings.HasPrefix(marker, "[… ") || !utf8.ValidString(tail) || !strings.HasSuffix(loud.String(), tail) {
			t.Errorf("Stdout = %q, want a marker and then the stream's last characters", res.Stdout)
		}
		if res.StdoutOmitted+int64(len(tail)) != int64(loud.Len()) || !strings.Contains(marker, " "+strconv.FormatInt(res.StdoutOmitted, 10)+" bytes omitted") {
			t.Errorf("StdoutOmitted = %d, tail %d bytes: want them to make %d, and the marker to say it (%q)", res.StdoutOmitted, len(tail), loud.Len(), marker)
		}
		if res.Stderr != "a warning\n" || res.StderrKey != "" || res.StderrOmitted != 0 {
			t.Errorf("stderr: %q key %q omitted %d; want it whole with no key", res.Stderr, res.StderrKey, res.StderrOmitted)
		}
		if _, err := st.Stat(ctx, prefix+"stderr"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a quiet stream was stored: %v", err)
		}
		if err := o.close(); err != nil {
			t.Fatal(err)
		}
		if left, _ := os.ReadDir(spool); len(left) != 0 {
			t.Errorf("spool files left: %v", left)
		}
		b, _ := json.Marshal(res)
		t.Logf("result with a 40 KB stdout: %d bytes of JSON", len(b))
	})
}

// TestOutputTailEscapes: output that JSON escapes six times over (control
// characters) still makes a tail within tasks.OutputTailBytes of JSON, and
// a stream that is short but escapes past it is stored.
func TestOutputTailEscapes(t *testing.T) {
	t.Parallel()
	st, err := store.Open(context.Background(), "file://"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	o, err := newAttemptOutputs(st, t.TempDir(), outputKeyPrefix("default", "esc", 1), tasks.MaxStoredOutputBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	ctrl := bytes.Repeat([]byte{1}, 600) // 600 bytes, 3600 as JSON
	writeChunks(t, o.writer(0, nil), ctrl, 100)
	var res tasks.Result
	if err := o.keep(context.Background(), &res); err != nil {
		t.Fatal(err)
	}
	if res.StdoutKey == "" || jsonLen(res.Stdout) > tasks.OutputTailBytes {
		t.Fatalf("key %q, tail %d bytes of JSON: want a key and at most %d", res.StdoutKey, jsonLen(res.Stdout), tasks.OutputTailBytes)
	}
	_, tail, _ := strings.Cut(res.Stdout, "…]\n")
	if res.StdoutOmitted+int64(len(tail)) != 600 || len(tail) == 0 {
		t.Errorf("omitted %d + tail %d, want 600", res.StdoutOmitted, len(tail))
	}
}

// TestOutputStoredCap: a stream past the cap is stored up to the cap, its
// tail still the stream's true end, its omitted count the whole rest.
func TestOutputStoredCap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.Open(ctx, "file://"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	o, err := newAttemptOutputs(st, t.TempDir(), outputKeyPrefix("default", "cap", 1), 10_000)
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	data := []byte(strings.Repeat("0123456789abcdef", 4000)) // 64000 bytes
	copy(data[len(data)-4:], "END\n")
	writeChunks(t, o.writer(0, nil), data, 4096)
	var res tasks.Result
	if err := o.keep(ctx, &res); err != nil {
		t.Fatal(err)
	}
	rc, _, err := st.Get(ctx, res.StdoutKey)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(stored, data[:10_000]) {
		t.Errorf("stored %d bytes, want the first 10000", len(stored))
	}
	_, tail, _ := strings.Cut(res.Stdout, "…]\n")
	if !strings.HasSuffix(tail, "END\n") || res.StdoutOmitted+int64(len(tail)) != 64000 {
		t.Errorf("tail %q, omitted %d: want the stream's end and 64000 in all", tail, res.StdoutOmitted)
	}
}

// TestOutputSpoolDiskFull: a spool the disk refuses (/dev/full) does not
// stop the command's output, and keep fails with a retried error matching
// ENOSPC instead of storing part of the stream.
func TestOutputSpoolDiskFull(t *testing.T) {
	t.Parallel()
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full here: %v", err)
	}
	st, err := store.Open(context.Background(), "file://"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	spool := t.TempDir()
	o, err := newAttemptOutputs(st, spool, outputKeyPrefix("default", "full", 1), tasks.MaxStoredOutputBytes)
	if err != nil {
		t.Fatal(err)
	}
	// Stand /dev/full in for stdout's spool file; close removes the
	// original, which is what it would remove.
	real := o.spools[0].f
	o.spools[0].f = full
	defer func() { o.spools[0].f = real; o.close() }()
	var live bytes.Buffer
	writeChunks(t, o.writer(0, &live), bytes.Repeat([]byte("x"), 50_000), 4096)
	if live.Len() != 50_000 {
		t.Errorf("the live output got %d bytes, want 50000", live.Len())
	}
	var res tasks.Result
	err = o.keep(context.Background(), &res)
	if !errors.Is(err, syscall.ENOSPC) || isPermanent(err) || !strings.HasPrefix(err.Error(), "stdout: ") {
		t.Fatalf("keep = %v, want a retried stdout error matching ENOSPC", err)
	}
	if res.StdoutKey != "" {
		t.Errorf("a result names %q after a failed spool", res.StdoutKey)
	}
}

// TestOutputStoreDown: an unreachable store fails keep with a retried
// error matching store.ErrUnavailable, and the result names no key.
func TestOutputStoreDown(t *testing.T) {
	st := s3Store(t)
	o, err := newAttemptOutputs(st, t.TempDir(), outputKeyPrefix("default", "down", 1), tasks.MaxStoredOutputBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	writeChunks(t, o.writer(1, nil), bytes.Repeat([]byte("e"), 5000), 4096)
	st.down()
	var res tasks.Result
	err = o.keep(context.Background(), &res)
	if !errors.Is(err, store.ErrUnavailable) || isPermanent(err) || !strings.HasPrefix(err.Error(), "stderr: ") {
		t.Fatalf("keep = %v, want a retried stderr error matching store.ErrUnavailable", err)
	}
	if res.StderrKey != "" {
		t.Errorf("a result names %q after a failed upload", res.StderrKey)
	}
}

// TestNilAttemptOutputs: a worker without a store spools nothing: the
// command's writers are the live output's own, and keep leaves the
// result as smolvm's capture made it.
func TestNilAttemptOutputs(t *testing.T) {
	t.Parallel()
	var o *attemptOutputs
	var live bytes.Buffer
	if w := o.writer(0, &live); w != io.Writer(&live) {
		t.Errorf("writer = %T, want the live writer itself", w)
	}
	if w := o.writer(1, nil); w != nil {
		t.Errorf("writer without live output = %T, want nil", w)
	}
	res := tasks.Result{Stdout: "head…tail", StdoutOmitted: 7}
	if err := o.keep(context.Background(), &res); err != nil || res.Stdout != "head…tail" || res.StdoutOmitted != 7 {
		t.Errorf("keep changed the result: %+v, %v", res, err)
	}
	if err := o.close(); err != nil {
		t.Error(err)
	}
}
