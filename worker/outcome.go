package worker

import (
	"context"
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

// outcomeOf classifies an attempt that failed with err: bad input is
// invalid whatever else happened, an ended ctx cancelled it, and anything
// else is a failure asynq retries.
func outcomeOf(ctx context.Context, err error) string {
	switch {
	case isPermanent(err):
		return OutcomeInvalid
	case ctx.Err() != nil:
		return OutcomeCancelled
	}
	return OutcomeFailed
}

// isPermanent tells input this host can never run from a smolvm failure.
func isPermanent(err error) bool {
	var ce *CommitError
	var ve *tasks.ValidationError
	return errors.As(err, &ce) || errors.As(err, &ve) || errors.Is(err, smolvm.ErrInvalid)
}

// outcome tells the Outcome hook how an attempt ended.
func (h *Handler) outcome(o, phase string) {
	if h.cfg.Hooks.Outcome != nil {
		h.cfg.Hooks.Outcome(o, phase)
	}
}
