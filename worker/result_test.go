package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/bot-bottle/bottleq/tasks"
)

// stream is a stream as smolvm keeps it: the head and tail of n bytes of
// b, half of limit each, with the marker between them.
func stream(b byte, n, limit int) (string, int64) {
	if n <= limit {
		return strings.Repeat(string([]byte{b}), n), 0
	}
	dropped := int64(n - limit)
	half := strings.Repeat(string([]byte{b}), limit/2)
	return half + fmt.Sprintf(omittedMarker, dropped) + half, dropped
}

// TestEncodeResult: a result under the cap is plain JSON; one over it has
// its streams cut in the middle until it fits, whatever the escaping
// costs, and the markers and counts still add up to the bytes printed.
func TestEncodeResult(t *testing.T) {
	t.Parallel()
	const printed = 2_000_000
	for _, tt := range []struct {
		name     string
		out, err byte
		limit    int
	}{
		{"control characters", 0x01, 0x02, maxResultBytes},
		{"html escapes and text", '<', 'x', maxResultBytes},
		{"invalid utf-8", 0xff, 0x01, maxResultBytes},
		{"text only on stderr", 'x', 0x00, maxResultBytes},
		{"tight cap", 0x01, 0x01, 2 << 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := tasks.Result{State: tasks.StateDone, Phase: tasks.PhaseExec, Host: "h", VM: "bq-x"}
			res.Stdout, res.StdoutOmitted = stream(tt.out, printed, 64<<10)
			res.Stderr, res.StderrOmitted = stream(tt.err, printed, 64<<10)
			b, err := encodeResult(res, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > tt.limit {
				t.Errorf("%d bytes of JSON, over the cap of %d", len(b), tt.limit)
			}
			var got tasks.Result
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			for _, s := range []struct {
				name    string
				text    string
				omitted int64
				b       byte
			}{{"stdout", got.Stdout, got.StdoutOmitted, tt.out}, {"stderr", got.Stderr, got.StderrOmitted, tt.err}} {
				kept := strings.Count(s.text, string([]byte{s.b}))
				if s.b >= utf8.RuneSelf { // decoded as U+FFFD
					kept = strings.Count(s.text, "\uFFFD") - strings.Count(fmt.Sprintf(omittedMarker, s.omitted), "\uFFFD")
				}
				if int64(kept)+s.omitted != printed || !strings.Contains(s.text, fmt.Sprintf(omittedMarker, s.omitted)) {
					t.Errorf("%s keeps %d bytes and counts %d omitted, want %d in all, with one marker", s.name, kept, s.omitted, printed)
				}
			}
		})
	}
	small := tasks.Result{State: tasks.StateDone, Stdout: "hello\x01\n", Stderr: "<warn>\n"}
	want, _ := json.Marshal(small)
	if got, err := encodeResult(small, maxResultBytes); err != nil || string(got) != string(want) {
		t.Errorf("a small result = %s, %v; want it as is: %s", got, err, want)
	}
}

// TestHandlerResultCap: an agent printing 2 MB of control characters on
// each stream through the real smolvm client yields a result within
// maxResultBytes that still counts every byte.
func TestHandlerResultCap(t *testing.T) {
	t.Parallel()
	h, _, _ := simHandler(t, nil)
	p := basic
	p.Command = []string{"sh", "-c", `head -c 2000000 /dev/zero | tr '\000' '\001'; head -c 2000000 /dev/zero | tr '\000' '\002' >&2`}
	var w results
	if err := h.Run(context.Background(), Meta{ID: "flood"}, payload(t, p), &w); err != nil {
		t.Fatal(err)
	}
	if len(w.last) > maxResultBytes {
		t.Errorf("result is %d bytes of JSON, over the cap of %d", len(w.last), maxResultBytes)
	}
	res := w.result(t)
	if res.State != tasks.StateDone || res.ExitCode != 0 {
		t.Fatalf("result = %+v", res)
	}
	if n := int64(strings.Count(res.Stdout, "\x01")) + res.StdoutOmitted; n != 2_000_000 {
		t.Errorf("stdout: %d kept + %d omitted, want 2000000", strings.Count(res.Stdout, "\x01"), res.StdoutOmitted)
	}
	if n := int64(strings.Count(res.Stderr, "\x02")) + res.StderrOmitted; n != 2_000_000 {
		t.Errorf("stderr: %d kept + %d omitted, want 2000000", strings.Count(res.Stderr, "\x02"), res.StderrOmitted)
	}
}
