package worker

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"

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

// agentExit tells whether err, from the exec of the agent's command, is in
// truth the agent's own exit. smolvm reports its failures with a last
// stderr line that the guest's stderr, relayed just before it, can imitate
// ("Error: vm not found: …" and exit 1); so an exec that ended that way is
// smolvm's failure only when `machine status` finds the VM gone or not
// running (or cannot tell). While the VM runs, the exit code is the
// command's result.
func (r *run) agentExit(ctx context.Context, err error) bool {
	var se *smolvm.Error
	if ctx.Err() != nil || !errors.As(err, &se) || se.ExitCode < 0 {
		return false // smolvm did not exit by itself: the guest had no say
	}
	m, serr := r.h.cfg.Smolvm.Status(ctx, r.vm)
	if serr != nil || m.State != smolvm.StateRunning {
		return false
	}
	r.log.Warn().Str("phase", tasks.PhaseExec).Int("exit_code", se.ExitCode).
		Msg("exec ended like a smolvm failure, but the VM runs: the agent's exit")
	return true
}

// minScrubLen is the shortest secret a scrubber replaces: a shorter value
// ("1", "yes") cannot be told from the rest of a message, and is no secret
// worth the name.
const minScrubLen = 4

// scrubbed stands in error text for a secret that a scrubber removed.
const scrubbed = "[redacted]"

// scrubber removes a task's secrets (its env values, its proxy
// credentials) from text that leaves the handler: errors, and through
// them the result, asynq's LastErr and the log. Error text is built
// without them; this is the last line of defence. The zero scrubber
// changes nothing.
type scrubber struct{ r *strings.Replacer }

// newScrubber returns a scrubber of secrets, longest first so that a secret
// holding another goes whole.
func newScrubber(secrets ...string) scrubber {
	s := slices.DeleteFunc(slices.Clone(secrets), func(v string) bool { return len(v) < minScrubLen })
	if len(s) == 0 {
		return scrubber{}
	}
	slices.SortFunc(s, func(a, b string) int { return cmp.Or(len(b)-len(a), strings.Compare(a, b)) })
	pairs := make([]string, 0, 2*len(s))
	for _, v := range slices.Compact(s) {
		pairs = append(pairs, v, scrubbed)
	}
	return scrubber{r: strings.NewReplacer(pairs...)}
}

// text returns t without the secrets.
func (s scrubber) text(t string) string {
	if s.r == nil {
		return t
	}
	return s.r.Replace(t)
}

// err returns err, or when its text holds a secret, an error with the text
// scrubbed that unwraps to err.
func (s scrubber) err(err error) error {
	if err == nil || s.r == nil {
		return err
	}
	if msg := err.Error(); s.text(msg) != msg {
		return &scrubbedError{msg: s.text(msg), err: err}
	}
	return err
}

// scrubbedError is an error whose text had a secret removed.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }
