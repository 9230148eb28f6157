package enqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

// Outcome is where a task ended, as [Client.Wait] last saw it.
type Outcome struct {
	// TaskID and Queue name the task.
	TaskID, Queue string
	// State is asynq.TaskStateCompleted or asynq.TaskStateArchived, or,
	// when Wait stopped early, the state it saw last.
	State asynq.TaskState
	// Result is the last result the worker wrote: the final one
	// (State tasks.StateDone) for a completed task, the last progress
	// report otherwise. Zero if the worker wrote none.
	Result tasks.Result
	// LastErr is the error of the last failed delivery, if any.
	LastErr string
	// Retried counts the deliveries that failed and were retried.
	Retried int
}

// TaskFailedError is a task the worker gave up on: asynq archived it after
// its last retry, or at once for a failure that cannot succeed on retry
// (such as an invalid payload).
type TaskFailedError struct {
	// TaskID is the ID of the task that failed.
	TaskID string
	// State is where the task ended: asynq.TaskStateArchived.
	State asynq.TaskState
	// LastErr is the error of the last delivery, as the worker returned it.
	LastErr string
}

// Error names the task and quotes its last error.
func (e *TaskFailedError) Error() string {
	return fmt.Sprintf("task %s failed: %s", e.TaskID, e.LastErr)
}

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
// again).
//
// A completed task returns a nil error, whatever its command's exit code
// (see Outcome.Result.ExitCode). An archived task returns the Outcome and a
// [*TaskFailedError]. A task that does not exist is an error matching
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
		info, err := c.inspector.GetTaskInfo(queue, taskID)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
			return out, &notFoundError{taskID: taskID, queue: queue, err: err}
		case err != nil:
			return out, fmt.Errorf("enqueue: task %s: %w", taskID, err)
		}
		out.State, out.LastErr, out.Retried = info.State, info.LastErr, info.Retried
		var r tasks.Result
		resultErr := decodeResult(info.Result, &r)
		if resultErr == nil {
			out.Result = r
		}
		switch info.State {
		case asynq.TaskStateCompleted:
			if resultErr != nil {
				return out, fmt.Errorf("enqueue: task %s: %w", taskID, resultErr)
			}
			return out, nil
		case asynq.TaskStateArchived:
			return out, &TaskFailedError{TaskID: taskID, State: info.State, LastErr: info.LastErr}
		}
		if now := (seen{r.Attempt, r.Phase}); progress != nil && resultErr == nil &&
			r.State == tasks.StateRunning && r.Phase != "" && now != last {
			last = now
			progress(r)
		}
		timer.Reset(interval)
		interval = min(2*interval, c.maxPoll)
	}
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
