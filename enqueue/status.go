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

// Status reads the task once: its state, retries, last error and the last
// result the worker wrote (see [Outcome]). An empty queue is
// tasks.DefaultQueue; asynq's task IDs are per queue. A task that does not
// exist is an error matching [ErrNotFound].
func (c *Client) Status(ctx context.Context, queue, taskID string) (Outcome, error) {
	if queue == "" {
		queue = tasks.DefaultQueue
	}
	if err := ctx.Err(); err != nil {
		return Outcome{TaskID: taskID, Queue: queue}, err
	}
	out, _, err := c.read(ctx, queue, taskID)
	return out, err
}

// Workers counts the live worker processes that serve queue, as asynq's
// server heartbeats in Redis list them. A task on a queue no worker serves
// stays pending until one starts.
func (c *Client) Workers(ctx context.Context, queue string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	servers, err := c.inspector.Servers()
	if err != nil {
		return 0, fmt.Errorf("enqueue: workers: %w", err)
	}
	n := 0
	for _, s := range servers {
		if s.Queues[queue] > 0 {
			n++
		}
	}
	return n, nil
}

// cancelResend is how often Cancel repeats asynq's cancel signal to a task
// that is still running: asynq sends it by Redis pub/sub, which a worker
// reconnecting to Redis misses.
const cancelResend = 2 * time.Second

// Cancel cancels the task for good and returns once it has ended
// cancelled: asynq archives it, without a retry, and its result says
// tasks.StateCancelled. A task waiting to run (pending, scheduled, or
// waiting for a retry) is archived at once; a running one is cancelled
// through asynq (Inspector.CancelProcessing), and its worker deletes the
// VM and archives it. A worker's shutdown, by contrast, puts a running
// task back in its queue.
//
// Before anything else Cancel sets the task's cancel mark, so that a
// delivery of the task that starts later, on any worker, ends at once.
// When ctx ends first, Cancel returns ctx.Err() and what it saw last: the
// cancel stands, and the task ends cancelled when its worker gets to it.
//
// A task already cancelled returns its Outcome and no error. A task that
// already completed, or was archived for a failure, is an error matching
// [ErrFinished]; one that does not exist matches [ErrNotFound]. An empty
// queue is tasks.DefaultQueue.
func (c *Client) Cancel(ctx context.Context, queue, taskID string) (Outcome, error) {
	if queue == "" {
		queue = tasks.DefaultQueue
	}
	out, err := c.Status(ctx, queue, taskID)
	switch {
	case err != nil:
		return out, err
	case out.Cancelled && out.State == asynq.TaskStateArchived:
		return out, nil
	case out.State == asynq.TaskStateCompleted, out.State == asynq.TaskStateArchived:
		return out, &finishedError{taskID: taskID, state: out.State}
	}
	if err := cancelmark.Set(ctx, c.redis, queue, taskID, cancelmark.ByEnqueue); err != nil {
		return out, fmt.Errorf("enqueue: %w", err)
	}
	var signalled time.Time
	interval := c.minPoll
	for {
		switch out.State {
		case asynq.TaskStateArchived:
			out.Cancelled = true // the mark says so, and the result will
			return out, nil
		case asynq.TaskStateCompleted:
			return out, &finishedError{taskID: taskID, state: out.State, late: true}
		case asynq.TaskStateActive:
			if time.Since(signalled) >= cancelResend {
				if err := c.inspector.CancelProcessing(taskID); err != nil {
					return out, fmt.Errorf("enqueue: cancel task %s: %w", taskID, err)
				}
				signalled = time.Now()
			}
		default: // waiting to run: nobody else will end it
			if err := c.archive(ctx, out); err != nil {
				return out, err
			}
			interval = 0 // read at once what became of it
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(interval):
		}
		interval = min(max(2*interval, c.minPoll), c.maxPoll)
		now, _, err := c.read(ctx, queue, taskID)
		if err != nil {
			return out, err
		}
		out = now
	}
}

// archive archives a task that is waiting to run and writes its cancelled
// result, keeping what an earlier attempt reported. A task that started
// meanwhile is left to the caller's next look.
func (c *Client) archive(ctx context.Context, out Outcome) error {
	err := c.inspector.ArchiveTask(out.Queue, out.TaskID)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return &notFoundError{taskID: out.TaskID, queue: out.Queue, err: err}
	case err != nil:
		return nil // it started, or its worker archived it: look again
	}
	if out.Result.State == tasks.StateCancelled {
		return nil // its worker wrote the result already
	}
	r := out.Result
	r.State, r.Error = tasks.StateCancelled, "cancelled by "+cancelmark.ByEnqueue+" before it ran"
	if r.Attempt > 0 {
		r.Error = "cancelled by " + cancelmark.ByEnqueue + " while it waited for a retry"
	}
	b, err := json.Marshal(r)
	if err == nil {
		_, err = cancelmark.WriteResult(ctx, c.redis, out.Queue, out.TaskID, b)
	}
	if err != nil {
		return fmt.Errorf("enqueue: task %s was cancelled, but its result not written: %w", out.TaskID, err)
	}
	return nil
}

// finishedError matches ErrFinished.
type finishedError struct {
	taskID string
	state  asynq.TaskState
	// late: it completed while Cancel waited for it to end.
	late bool
}

func (e *finishedError) Error() string {
	if e.late {
		return fmt.Sprintf("enqueue: task %s completed before the cancel reached it", e.taskID)
	}
	return fmt.Sprintf("enqueue: task %s already finished (%s): nothing to cancel", e.taskID, e.state)
}

func (e *finishedError) Unwrap() error { return ErrFinished }
