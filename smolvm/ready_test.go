package smolvm

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// The seed's TestWaitExecReady, ported: poll `exec -- true` until it works.
func TestWaitReady(t *testing.T) {
	t.Parallel()
	notRunning := fail(1, "Error: agent operation failed: connect: machine 'vm-x' is not running. Use 'smolvm machine start --name vm-x' first.\n")
	tests := []struct {
		name    string
		answers []proc
		timeout time.Duration
		calls   int // exact number of probes; 0: at least 2
		want    error
	}{
		{"returns immediately when exec succeeds first try", []proc{ok("")}, time.Second, 1, nil},
		{"retries on nonzero and returns on success", []proc{notRunning, fail(1, "not ready"), ok("")}, 5 * time.Second, 3, nil},
		{"times out naming the machine", []proc{notRunning}, 50 * time.Millisecond, 0, ErrNotReady},
		{"gives up at once on an unknown machine", []proc{fail(1, "Error: vm not found: vm-x\n")}, 5 * time.Second, 1, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeRun{answers: tt.answers}
			err := fakeClient(t, v080, f).WaitReady(context.Background(), "vm-x", tt.timeout)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			calls := f.argvs()
			if (tt.calls > 0 && len(calls) != tt.calls) || (tt.calls == 0 && len(calls) < 2) {
				t.Errorf("%d probes, want %d", len(calls), tt.calls)
			}
			want := []string{"machine", "exec", "--name", "vm-x", "--", "true"}
			for _, c := range calls {
				if !slices.Equal(c, want) {
					t.Fatalf("probe argv %q, want %q", c, want)
				}
			}
			if errors.Is(err, ErrNotReady) {
				msg := err.Error()
				if !strings.Contains(msg, "vm-x") || !strings.Contains(msg, "not ready") || !strings.Contains(msg, "last probe: machine not running") {
					t.Errorf("message %q should name the machine, say not ready and carry the last probe", msg)
				}
			}
		})
	}
}

func TestWaitReadyCancelled(t *testing.T) {
	t.Parallel()
	f := &fakeRun{answers: []proc{fail(1, "Error: machine 'vm-x' is not running. Use ...\n")}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err := fakeClient(t, v193, f).WaitReady(ctx, "vm-x", time.Hour)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNotReady) {
		t.Fatalf("err = %v, want the caller's context error", err)
	}
}

func TestNewMissingBinary(t *testing.T) {
	t.Parallel()
	_, err := New(context.Background(), Config{Bin: "/nonexistent/smolvm"})
	var e *Error
	if !errors.Is(err, ErrNotInstalled) || !errors.As(err, &e) {
		t.Fatalf("err = %v, want ErrNotInstalled", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("not one line: %q", err)
	}
}
