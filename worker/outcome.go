package worker

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// Outcomes of a task attempt, for [Attempt].Outcome: what became of the
// task, whatever the agent's command did (see [Attempt].Exit for that).
const (
	// OutcomeCompleted: the pipeline ran to its end; the agent's exit code,
	// zero or not, is the task's result. Final.
	OutcomeCompleted = "completed"
	// OutcomeRetried: a smolvm failure; asynq retries the task.
	OutcomeRetried = "retried"
	// OutcomeFailed: a smolvm failure on the last attempt asynq allows;
	// asynq archives the task. Final.
	OutcomeFailed = "failed"
	// OutcomeInvalid: bad input; archived without retry. Final.
	OutcomeInvalid = "invalid"
	// OutcomeCancelled: a user cancelled the task; it ends for good.
	// Final.
	OutcomeCancelled = "cancelled"
	// OutcomeRequeued: the attempt's context was cancelled: the worker
	// shut down, and asynq puts the task back in its queue without burning
	// a retry.
	OutcomeRequeued = "requeued"
)

// outcomes lists every Outcome constant, and taskOutcomes those that end a
// task (an attempt with one of them is its last).
var (
	outcomes     = []string{OutcomeCompleted, OutcomeRetried, OutcomeFailed, OutcomeInvalid, OutcomeCancelled, OutcomeRequeued}
	taskOutcomes = []string{OutcomeCompleted, OutcomeFailed, OutcomeInvalid, OutcomeCancelled}
)

// How the agent's command ended, for [Attempt].Exit.
const (
	ExitZero    = "zero"    // it exited 0
	ExitNonzero = "nonzero" // it exited with another code
	ExitTimeout = "timeout" // its timeout killed it
)

// exits lists every Exit constant.
var exits = []string{ExitZero, ExitNonzero, ExitTimeout}

// Attempt is how one attempt of a task ended, for [Hooks].Attempt.
type Attempt struct {
	// Outcome is one of the Outcome constants.
	Outcome string
	// Phase is the phase the attempt ended in: "decode" for a payload
	// that cannot run, "done" for a completed one.
	Phase string
	// Final is set on a task's last attempt: no other follows, and
	// Outcome is the task's.
	Final bool
	// Exit is how the agent's command ended in this attempt, one of the
	// Exit constants; empty when it did not run to its end.
	Exit string
}

// outcomeOf classifies an attempt that failed with err: bad input is
// invalid whatever else happened, a cancelled ctx means the task is
// requeued, and anything else (asynq's deadline too) is a failure that
// asynq retries unless m is the last attempt it allows.
func outcomeOf(ctx context.Context, err error, m Meta) string {
	switch {
	case isPermanent(err):
		return OutcomeInvalid
	case errors.Is(ctx.Err(), context.Canceled):
		return OutcomeRequeued
	case m.Retried >= m.MaxRetry:
		return OutcomeFailed // asynq's own test of a retry left
	}
	return OutcomeRetried
}

// isPermanent tells input this host can never run from a smolvm failure.
func isPermanent(err error) bool {
	var ce *CommitError
	var ve *tasks.ValidationError
	return errors.As(err, &ce) || errors.As(err, &ve) || errors.Is(err, smolvm.ErrInvalid)
}

// msgInvalid is the log message of a task that cannot run.
const msgInvalid = "invalid input; archived without retry"

// failedMsg is the log message of an attempt of m that failed as o, from
// outcomeOf: what becomes of the task, in a user's terms. asynq's own line
// on an archived task is demoted (see asynqLogger), so this is the one.
func failedMsg(o string, m Meta) string {
	n, of := m.Retried+1, m.MaxRetry+1
	switch o {
	case OutcomeInvalid:
		return msgInvalid
	case OutcomeRequeued:
		return "task interrupted: a user's cancel, the worker's shutdown or a lost lease"
	case OutcomeFailed:
		return fmt.Sprintf("task failed on its last attempt (%d of %d); archived", n, of)
	}
	return fmt.Sprintf("task failed; asynq will retry it (attempt %d of %d)", n, of)
}

// noRetry returns err as an error that ends its task: it matches
// asynq.SkipRetry, so asynq archives the task without a retry, yet its
// text, which asynq keeps as the task's LastErr (what `enqueue --wait`,
// `enqueue status` and the dashboard show), is err's alone, without
// asynq's ": skip retry for the task".
func noRetry(err error) error { return &noRetryError{err: err} }

// noRetryError is an error that asynq does not retry; see noRetry.
type noRetryError struct{ err error }

func (e *noRetryError) Error() string   { return e.err.Error() }
func (e *noRetryError) Unwrap() []error { return []error{e.err, asynq.SkipRetry} }

// outcome tells the Attempt hook of an attempt that ended, as o, before
// the agent's command ran; o ends the task.
func (h *Handler) outcome(o, phase string) {
	h.attempt(Attempt{Outcome: o, Phase: phase, Final: true})
}

// attempt calls the Attempt hook, if any, with a.
func (h *Handler) attempt(a Attempt) {
	if h.cfg.Hooks.Attempt != nil {
		h.cfg.Hooks.Attempt(a)
	}
}

// ended tells the Attempt hook how r ended, as o from outcomeOf or
// completed. Under [Serve], an attempt whose context was cancelled
// (requeued) is left to the canceller, which alone can tell a user's
// cancel from a shutdown: see cancelled.
func (r *run) ended(o string) {
	if o == OutcomeRequeued && r.h.cancels != nil {
		return
	}
	r.h.attempt(attemptOf(o, r.res))
}

// cancelled tells the Attempt hook of an attempt Run left to the
// canceller: as cancelled when a user cancelled it, else as requeued. err
// is what Run returned under ctx, last its last report; an attempt Run
// itself told the hook of (bad input, say) is not told again.
func (h *Handler) cancelled(ctx context.Context, m Meta, err error, byUser bool, last []byte) {
	if h.cancels == nil || outcomeOf(ctx, err, m) != OutcomeRequeued {
		return
	}
	var res tasks.Result
	if json.Unmarshal(last, &res) != nil {
		res = tasks.Result{} // no report: no phase, no agent exit
	}
	o := OutcomeRequeued
	if byUser {
		o = OutcomeCancelled
	}
	h.attempt(attemptOf(o, res))
}

// attemptOf is how an attempt that ended as o went, by its result res:
// the agent's exit is there when its command ran to its end, that is,
// when the exec phase finished without error, so that the attempt got past
// it or completed.
func attemptOf(o string, res tasks.Result) Attempt {
	a := Attempt{Outcome: o, Phase: res.Phase, Final: o != OutcomeRetried && o != OutcomeRequeued}
	if o == OutcomeCompleted {
		a.Phase = "done"
	}
	execRan := slices.ContainsFunc(res.Phases, func(p tasks.PhaseTime) bool { return p.Name == tasks.PhaseExec })
	if o == OutcomeCompleted || (execRan && res.Phase != tasks.PhaseExec) {
		switch {
		case res.TimedOut:
			a.Exit = ExitTimeout
		case res.ExitCode == 0:
			a.Exit = ExitZero
		default:
			a.Exit = ExitNonzero
		}
	}
	return a
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
