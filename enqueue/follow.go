package enqueue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/livelog"
	"github.com/bot-bottle/bottleq/tasks"
)

// ErrInvalidEventID: Follow's from is not an event ID (see [Event.ID]).
var ErrInvalidEventID = errors.New("not a live output event ID")

// Types of [Event].
const (
	// EventAttempt starts a delivery of the task: Attempt, Host. After
	// a worker's shutdown asynq delivers the task again under the same
	// Attempt.
	EventAttempt = livelog.KindAttempt
	// EventPhase: the delivery entered Phase (tasks.PhasePack, …,
	// tasks.PhaseDelete), in the order they run.
	EventPhase = livelog.KindPhase
	// EventOutput is a chunk of the agent's output, Data, written to
	// Stream: StreamStdout or StreamStderr. A chunk may end in the middle
	// of a line, or of a UTF-8 character.
	EventOutput = livelog.KindOutput
	// EventTruncated: output was dropped just before it, StdoutDropped and
	// StderrDropped bytes, for Reason.
	EventTruncated = livelog.KindTruncated
	// EventEnd ends a delivery, in Phase: Outcome, with ExitCode and
	// TimedOut or Error, and the bytes of its output not streamed.
	EventEnd = livelog.KindEnd
)

// Output streams of an [EventOutput].
const (
	StreamStdout = livelog.Stdout
	StreamStderr = livelog.Stderr
)

// Reasons of an [EventTruncated].
const (
	// ReasonCap: the task's live output reached its cap (the worker's
	// -live-output-bytes, for all its attempts together). The attempt
	// streams no more output; its result still keeps the head and tail.
	ReasonCap = livelog.ReasonCap
	// ReasonBacklog: Redis did not take the output as fast as the agent
	// wrote it, and the worker dropped some rather than slow the agent.
	ReasonBacklog = livelog.ReasonBacklog
)

// Outcomes of a delivery, in its [EventEnd].
const (
	// AttemptDone: the command ran and exited with ExitCode (124 and
	// TimedOut when its timeout fired). The task completes.
	AttemptDone = livelog.OutcomeDone
	// AttemptFailed: the delivery failed with Error; asynq retries the
	// task if it may and the failure is not for good. The task's state
	// says which.
	AttemptFailed = livelog.OutcomeFailed
	// AttemptStopped: the delivery was stopped: a user cancelled the task,
	// its worker shut down (the task goes back to its queue), or asynq's
	// deadline for it passed. The task's state says which.
	AttemptStopped = livelog.OutcomeStopped
)

// Event is one event of a task's live output, as [Client.Follow] passes
// it on. Which fields are set depends on Type.
type Event struct {
	// ID is the event's Redis stream ID, "MS-SEQ": Follow resumes after
	// it, so it serves as an SSE event's id and Last-Event-ID.
	ID string
	// Type is one of the Event constants.
	Type string
	// Attempt counts the task's deliveries from 1; every event has it.
	Attempt int
	// Host is the worker's host an attempt runs on.
	Host string
	// Phase is the phase entered, or the one an attempt ended in.
	Phase string
	// Stream and Data are an output chunk.
	Stream string
	Data   []byte
	// Reason is why output was dropped: ReasonCap or ReasonBacklog.
	Reason string
	// StdoutDropped and StderrDropped count the output bytes not
	// streamed: just before an EventTruncated, or in all the attempt, in
	// its EventEnd.
	StdoutDropped, StderrDropped int64
	// Outcome is how an attempt ended: AttemptDone, AttemptFailed or
	// AttemptStopped.
	Outcome string
	// ExitCode and TimedOut say how the command ended (AttemptDone).
	ExitCode int
	TimedOut bool
	// Error says why an attempt failed or stopped.
	Error string
}

func eventOf(e livelog.Entry) Event {
	return Event{
		ID: e.ID, Type: e.Kind, Attempt: e.Attempt, Host: e.Host, Phase: e.Phase,
		Stream: e.Stream, Data: e.Data, Reason: e.Reason, StdoutDropped: e.StdoutDropped, StderrDropped: e.StderrDropped,
		Outcome: e.Outcome, ExitCode: e.ExitCode, TimedOut: e.TimedOut, Error: e.Error,
	}
}

// followBlock is the longest Follow waits for an event before it looks at
// the task's state; followBatch is the most events it reads at once.
const (
	followBlock = time.Second
	followBatch = 512
)

// Follow calls fn, from Follow's goroutine, with each event of the task's
// live output in order, as its worker writes them: each attempt's start,
// each phase, the agent's output (within about 100 ms of the agent writing
// it), and each attempt's end. It starts after the event with ID from, or
// at the first event when from is "", so that a reader that lost its
// place (an HTTP client reconnecting with Last-Event-ID) resumes without
// an event twice or missed.
//
// Follow returns nil once the task has completed or been archived and fn
// has had every event written before that; [Client.Status] then says how
// the task ended. An error from fn ends Follow and is returned as it is.
// When ctx ends, Follow returns ctx.Err() (within about a second). A task
// that does not exist is an error matching [ErrNotFound], and a from that
// is no event ID one matching [ErrInvalidEventID]. An empty queue is
// tasks.DefaultQueue.
//
// The worker caps each task's live output (ReasonCap) and expires it a
// minute after the task completes (an archived task's with the task). A
// task whose live output expired, or that a worker without live output
// ran, has no events; its result (Outcome.Result) keeps the head and tail
// of the output either way, or its tail and the keys of the whole streams
// in the workers' store (tasks.Result.StdoutKey; see ReadOutput).
func (c *Client) Follow(ctx context.Context, queue, taskID string, fn func(Event) error, from string) error {
	if queue == "" {
		queue = tasks.DefaultQueue
	}
	after := "0"
	if from != "" {
		if !livelog.ValidID(from) {
			return fmt.Errorf("enqueue: from %q: %w", from, ErrInvalidEventID)
		}
		after = from
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := c.ended(queue, taskID); err != nil {
		return err
	}
	pass := func(es []livelog.Entry) (sawEnd bool, err error) {
		for _, e := range es {
			if err := fn(eventOf(e)); err != nil {
				return false, err
			}
			after = e.ID
			sawEnd = sawEnd || e.Kind == livelog.KindEnd
		}
		return sawEnd, nil
	}
	block := followBlock
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		es, err := livelog.Read(ctx, c.redis, queue, taskID, after, followBatch, block)
		if err != nil {
			return fmt.Errorf("enqueue: %w", err)
		}
		sawEnd, err := pass(es)
		if err != nil {
			return err
		}
		if len(es) > 0 && !sawEnd {
			block = followBlock
			continue // more may be there already
		}
		ended, err := c.ended(queue, taskID)
		if err != nil {
			return err
		}
		if ended {
			for { // what was written before it ended
				es, err := livelog.Read(ctx, c.redis, queue, taskID, after, followBatch, 0)
				if err != nil {
					return fmt.Errorf("enqueue: %w", err)
				}
				if len(es) == 0 {
					return nil
				}
				if _, err := pass(es); err != nil {
					return err
				}
			}
		}
		switch {
		case sawEnd: // asynq moves the task on in a moment
			block = c.minPoll
		case block < followBlock:
			block = min(2*block, followBlock)
		}
	}
}

// ended reads whether the task has completed or been archived.
func (c *Client) ended(queue, taskID string) (bool, error) {
	info, err := c.inspector.GetTaskInfo(queue, taskID)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return false, &notFoundError{taskID: taskID, queue: queue, err: err}
	case err != nil:
		return false, fmt.Errorf("enqueue: task %s: %w", taskID, err)
	}
	return info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived, nil
}
