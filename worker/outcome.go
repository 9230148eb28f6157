package worker

import (
	"errors"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// Outcomes of a task attempt, for [Hooks].Outcome.
const (
	OutcomeCompleted = "completed" // the command ran; its exit code is the result
	OutcomeFailed    = "failed"    // a smolvm failure; asynq retries the task
	OutcomeInvalid   = "invalid"   // bad input; archived without retry
	OutcomeCancelled = "cancelled" // the task's context ended (shutdown or timeout)
)

// isPermanent tells input this host can never run from a smolvm failure.
func isPermanent(err error) bool {
	var ce *CommitError
	var ve *tasks.ValidationError
	return errors.As(err, &ce) || errors.As(err, &ve) || errors.Is(err, smolvm.ErrInvalid)
}

func (h *Handler) outcome(o, phase string) {
	if h.cfg.Hooks.Outcome != nil {
		h.cfg.Hooks.Outcome(o, phase)
	}
}
