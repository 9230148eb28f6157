package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// TestOutcomeOf: bad input is invalid even when the task was cancelled too;
// otherwise a cancelled context means requeued, and anything else (asynq's
// deadline too) is a failure that asynq retries, or, on the last attempt
// it allows, archives.
func TestOutcomeOf(t *testing.T) {
	t.Parallel()
	live := context.Background()
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	late, cancelLate := context.WithDeadline(context.Background(), time.Unix(1, 0))
	defer cancelLate()
	first := Meta{MaxRetry: 2}
	last := Meta{Retried: 2, MaxRetry: 2}
	smolvmFailure := &smolvm.Error{Op: "machine start", ExitCode: 1, Message: "injected"}
	for _, tt := range []struct {
		name string
		ctx  context.Context
		err  error
		m    Meta
		want string
	}{
		{"validation error", live, &tasks.ValidationError{Field: "files", Reason: "too big"}, first, OutcomeInvalid},
		{"wrapped commit error", live, fmt.Errorf("pack: %w", &CommitError{TaskID: "t1", Tenant: "acme"}), first, OutcomeInvalid},
		{"argument smolvm refuses", live, &smolvm.ArgError{Field: "name", Reason: "bad"}, first, OutcomeInvalid},
		{"validation error after cancel", ended, &tasks.ValidationError{Field: "from", Reason: "unreadable"}, first, OutcomeInvalid},
		{"validation error on the last attempt", live, &tasks.ValidationError{Field: "from", Reason: "unreadable"}, last, OutcomeInvalid},
		{"smolvm failure", live, smolvmFailure, first, OutcomeRetried},
		{"smolvm failure on the last attempt", live, smolvmFailure, last, OutcomeFailed},
		{"smolvm failure with no retry allowed", live, smolvmFailure, Meta{}, OutcomeFailed},
		{"smolvm failure after cancel", ended, smolvmFailure, first, OutcomeRequeued},
		{"cancel on the last attempt", ended, smolvmFailure, last, OutcomeRequeued},
		{"asynq's deadline", late, smolvmFailure, first, OutcomeRetried},
		{"asynq's deadline on the last attempt", late, smolvmFailure, last, OutcomeFailed},
		{"busy machine", live, &busyError{VM: "bq-x-a1"}, first, OutcomeRetried},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := outcomeOf(tt.ctx, tt.err, tt.m); got != tt.want {
				t.Errorf("outcomeOf(%v, %+v) = %s, want %s", tt.err, tt.m, got, tt.want)
			}
		})
	}
}

// TestScrubber: every secret of four bytes or more goes from error text,
// a longer one whole even when it holds a shorter one; the error still
// unwraps to its cause; text without a secret is left as is.
func TestScrubber(t *testing.T) {
	t.Parallel()
	s := newScrubber("sekret-value-42", "value", "abc", "", "tok-9f", "sekret-value-42")
	for in, want := range map[string]string{
		"exit 1: vm not found: sekret-value-42":          "exit 1: vm not found: [redacted]",
		"sekret-value-42sekret-value-42 and tok-9f":      "[redacted][redacted] and [redacted]",
		"a value; abc stays, it is short; 1 and yes too": "a [redacted]; abc stays, it is short; 1 and yes too",
		"http://task:tok-9f@10.0.0.1:3128":               "http://task:[redacted]@10.0.0.1:3128",
		"nothing here":                                   "nothing here",
	} {
		if got := s.text(in); got != want {
			t.Errorf("text(%q) = %q, want %q", in, got, want)
		}
	}
	cause := &smolvm.Error{Op: "machine create", ExitCode: 1, Message: "bad sekret-value-42"}
	err := s.err(fmt.Errorf("create: %w", cause))
	var se *smolvm.Error
	if err.Error() != "create: smolvm machine create: exit 1: bad [redacted]" || !errors.As(err, &se) || se != cause {
		t.Errorf("err = %q (unwraps to the cause: %v)", err, se == cause)
	}
	plain := errors.New("plain")
	if s.err(plain) != plain || s.err(nil) != nil || (scrubber{}).err(cause) != error(cause) {
		t.Error("an error without a secret must come back as it is")
	}
}

// TestHandlerScrubsErrors: a smolvm message holding an env value (smolvm
// should never print one; this is the last line of defence) reaches
// neither the returned error (asynq's LastErr), the result nor the log,
// and the error is still a retryable *smolvm.Error.
func TestHandlerScrubsErrors(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.start = func(_ context.Context, name string) error {
		return &smolvm.Error{Op: "machine start", Machine: name, ExitCode: 1, Message: "agent operation failed: echo sekret-value-42"}
	}
	h, logs := newHandler(t, f, nil)
	var w results
	err := h.Run(context.Background(), Meta{ID: "scrub"}, payload(t, basic), &w)
	var se *smolvm.Error
	if !errors.As(err, &se) || errors.Is(err, asynq.SkipRetry) || !strings.Contains(err.Error(), "echo [redacted]") {
		t.Fatalf("err = %v, want a retryable *smolvm.Error with the value redacted", err)
	}
	for what, text := range map[string]string{"error": err.Error(), "result": w.result(t).Error, "log": logs.String()} {
		if strings.Contains(text, "sekret-value-42") {
			t.Errorf("the env value reached the %s", what)
		}
	}
	if !strings.Contains(logs.String(), "echo [redacted]") {
		t.Error("the log lacks the failure")
	}
}

// TestHandlerFakedSmolvmError: an exec that ends like smolvm's own failure
// is smolvm's only when `machine status` says the VM is gone or not
// running; while it runs, it is the agent's exit: the task completes with
// the exit code, its artifacts and commit, and is not retried.
func TestHandlerFakedSmolvmError(t *testing.T) {
	t.Parallel()
	notFound := func(vm string) error {
		return &smolvm.Error{Op: "machine exec", Machine: vm, ExitCode: 1, Message: "machine not found", Err: smolvm.ErrNotFound}
	}
	for _, tt := range []struct {
		name   string
		before func(f *fakeSmolvm, vm string) // what happens to the VM under the command
		agent  bool                           // the agent's exit, else smolvm's failure
	}{
		{"VM runs", func(*fakeSmolvm, string) {}, true},
		{"VM stopped", func(f *fakeSmolvm, vm string) { f.setState(vm, smolvm.StateStopped) }, false},
		{"VM unreachable", func(f *fakeSmolvm, vm string) { f.setState(vm, smolvm.StateUnreachable) }, false},
		{"VM gone", func(f *fakeSmolvm, vm string) {
			f.mu.Lock()
			delete(f.machines, vm)
			f.mu.Unlock()
		}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake()
			f.exec = func(_ context.Context, vm string, _ []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
				f.put(vm, "/work/out/A.txt", []byte("made\n"), 0o644)
				tt.before(f, vm)
				return smolvm.ExecResult{ExitCode: 1, Stderr: []byte("Error: vm not found: sekret-value-42\n")}, notFound(vm)
			}
			h, logs := newHandler(t, f, nil)
			var w results
			err := h.Run(context.Background(), Meta{ID: "faked"}, payload(t, withIO()), &w)
			res := w.result(t)
			if f.count("status") != 2 { // one after create, one probe after exec
				t.Errorf("calls %q, want one status probe after exec", f.ops())
			}
			if strings.Contains(logs.String(), "sekret-value-42") || strings.Contains(res.Error, "sekret-value-42") {
				t.Error("the agent's stderr line reached the log or the error")
			}
			if !tt.agent {
				if !retryable(err) || !errors.Is(err, smolvm.ErrNotFound) {
					t.Errorf("err = %v, want smolvm's failure, retried", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v, want the agent's exit", err)
			}
			if res.State != tasks.StateDone || res.ExitCode != 1 || res.Stderr != "Error: vm not found: sekret-value-42\n" || res.Commit == "" {
				t.Errorf("result = %+v, want done with exit code 1, the agent's stderr and a commit", res)
			}
			if len(res.Artifacts) != 2 || res.Artifacts[0].HostPath == "" {
				t.Errorf("artifacts = %+v, want out/A.txt copied", res.Artifacts)
			}
		})
	}
}
