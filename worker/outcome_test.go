package worker

import (
	"context"
	"fmt"
	"testing"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// TestOutcomeOf: bad input is invalid even when the task was cancelled too;
// otherwise an ended context means cancelled, and anything else is a
// failure asynq retries.
func TestOutcomeOf(t *testing.T) {
	t.Parallel()
	live := context.Background()
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	smolvmFailure := &smolvm.Error{Op: "machine start", ExitCode: 1, Message: "injected"}
	for _, tt := range []struct {
		name string
		ctx  context.Context
		err  error
		want string
	}{
		{"validation error", live, &tasks.ValidationError{Field: "files", Reason: "too big"}, OutcomeInvalid},
		{"wrapped commit error", live, fmt.Errorf("pack: %w", &CommitError{TaskID: "t1", Host: "other"}), OutcomeInvalid},
		{"argument smolvm refuses", live, &smolvm.ArgError{Field: "name", Reason: "bad"}, OutcomeInvalid},
		{"validation error after cancel", ended, &tasks.ValidationError{Field: "from", Reason: "unreadable"}, OutcomeInvalid},
		{"smolvm failure", live, smolvmFailure, OutcomeFailed},
		{"smolvm failure after cancel", ended, smolvmFailure, OutcomeCancelled},
		{"busy machine", live, &BusyError{VM: "bq-x-a1"}, OutcomeFailed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := outcomeOf(tt.ctx, tt.err); got != tt.want {
				t.Errorf("outcomeOf(%v) = %s, want %s", tt.err, got, tt.want)
			}
		})
	}
}
