package enqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/cancelmark"
	"github.com/bot-bottle/bottleq/tasks"
)

// Outcome is a task as [Client.Status] read it, or where it ended as
// [Client.Wait] and [Client.Cancel] last saw it.
type Outcome struct {
	// TaskID and Queue name the task.
	TaskID, Queue string
	// State is asynq's state of the task. Wait returns once it is
	// asynq.TaskStateCompleted or asynq.TaskStateArchived; when it stops
	// early, it is the state it saw last.
	State asynq.TaskState
	// Cancelled is true for a task a user cancelled (Cancel, `enqueue
	// cancel`, the dashboard's cancel): asynq archived it, or is about to,
	// and Result.State is tasks.StateCancelled.
	Cancelled bool
	// Result is the last result the worker wrote: the final one
	// (State tasks.StateDone) for a completed task, the last progress
	// report otherwise. Zero if the worker wrote none.
	Result tasks.Result
	// LastErr is the error of the last failed delivery, if any.
	LastErr string
	// Retried counts the deliveries that failed and were retried.
	Retried int
	// MaxRetry is how many retries the task allows.
	MaxRetry int
}

// TaskFailedError is a task that ended without a result: asynq archived it
// after its last retry, or at once for a failure that cannot succeed on
// retry (such as an invalid payload), or a user cancelled it (Cancelled;
// the error then matches [ErrCancelled]).
type TaskFailedError struct {
	// TaskID is the ID of the task that failed.
	TaskID string
	// State is where the task ended: asynq.TaskStateArchived.
	State asynq.TaskState
	// LastErr is the error of the last delivery, as the worker returned it.
	LastErr string
	// Cancelled is true when a user cancelled the task.
	Cancelled bool
}

// Error names the task and quotes its last error, or says it was
// cancelled.
func (e *TaskFailedError) Error() string {
	if e.Cancelled {
		return fmt.Sprintf("task %s was cancelled", e.TaskID)
	}
	return fmt.Sprintf("task %s failed: %s", e.TaskID, e.LastErr)
}

// Is matches ErrCancelled when the task was cancelled.
func (e *TaskFailedError) Is(target error) bool { return e.Cancelled && target == ErrCancelled }

// notFoundError matches both ErrNotFound and asynq's own error.
type notFoundError struct {
	taskID, queue string
	err           error
}

func (e *notFoundError) Error() string {
	return fmt.Sprintf("enqueue: task %s not found in queue %q", e.taskID, e.queue)
}

func (e *notFoundError) Unwrap() []error { return []error{ErrNotFound, e.err} }

// Wait polls the task until it is completed or archived and returns where
// it ended. progress, if not nil, is called from Wait's goroutine once for
// each new phase the worker reports while the task runs (phases that start
// and end between two polls are not seen; a retry reports its phases
// again). [Client.Follow] passes on every phase, and the output.
//
// A completed task returns a nil error, whatever its command's exit code
// (see Outcome.Result.ExitCode). An archived task returns the Outcome and a
// [*TaskFailedError], which matches [ErrCancelled] when a user cancelled
// the task. A task that does not exist is an error matching
// [ErrNotFound]. When ctx ends, Wait returns ctx.Err() and the Outcome it
// saw last; the task runs on, and Wait may be called again. Any other error
// reading Redis ends Wait too.
func (c *Client) Wait(ctx context.Context, queue, taskID string, progress func(tasks.Result)) (Outcome, error) {
	if queue == "" {
		queue = tasks.DefaultQueue
	}
	out := Outcome{TaskID: taskID, Queue: queue}
	type seen struct {
		attempt int
		phase   string
	}
	var last seen
	interval := c.minPoll
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-timer.C:
		}
		now, resultErr, err := c.read(ctx, queue, taskID)
		if err != nil {
			return out, err // with what it saw last
		}
		out = now
		r := out.Result
		switch out.State {
		case asynq.TaskStateCompleted:
			if resultErr != nil {
				return out, fmt.Errorf("enqueue: task %s: %w", taskID, resultErr)
			}
			return out, nil
		case asynq.TaskStateArchived:
			return out, &TaskFailedError{TaskID: taskID, State: out.State, LastErr: out.LastErr, Cancelled: out.Cancelled}
		}
		if phase := (seen{r.Attempt, r.Phase}); progress != nil && resultErr == nil &&
			r.State == tasks.StateRunning && r.Phase != "" && phase != last {
			last = phase
			progress(r)
		}
		timer.Reset(interval)
		interval = min(2*interval, c.maxPoll)
	}
}

// read reads the task once. resultErr is a result that does not decode;
// err is a task that does not exist, or a failure to read Redis.
func (c *Client) read(ctx context.Context, queue, taskID string) (out Outcome, resultErr, err error) {
	out = Outcome{TaskID: taskID, Queue: queue}
	info, err := c.inspector.GetTaskInfo(queue, taskID)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return out, nil, &notFoundError{taskID: taskID, queue: queue, err: err}
	case err != nil:
		return out, nil, fmt.Errorf("enqueue: task %s: %w", taskID, err)
	}
	out.State, out.LastErr, out.Retried, out.MaxRetry = info.State, info.LastErr, info.Retried, info.MaxRetry
	var r tasks.Result
	if resultErr = decodeResult(info.Result, &r); resultErr == nil {
		out.Result = r
	}
	out.Cancelled = r.State == tasks.StateCancelled
	if !out.Cancelled && info.State == asynq.TaskStateArchived {
		// The mark comes first, the cancelled result a moment later.
		by, err := cancelmark.Get(ctx, c.redis, queue, taskID)
		if err != nil {
			return out, resultErr, fmt.Errorf("enqueue: task %s: %w", taskID, err)
		}
		out.Cancelled = by != ""
	}
	return out, resultErr, nil
}

// decodeResult reads what the worker wrote with its ResultWriter; none is
// not an error.
func decodeResult(b []byte, r *tasks.Result) error {
	if len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, r); err != nil {
		return fmt.Errorf("result is not a bottleq result: %w", err)
	}
	return nil
}
