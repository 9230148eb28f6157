package enqueue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/internal/cancelmark"
	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/internal/testworker"
	"github.com/bot-bottle/bottleq/tasks"
)

// TestStatus reads a task waiting to run, a finished one and one that
// does not exist.
func TestStatus(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	c := newClient(t, r)
	ctx := context.Background()
	pending, err := c.Enqueue(ctx, payload(), enqueue.Options{Queue: "nobody", MaxRetry: 2})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Status(ctx, "nobody", pending.ID)
	if err != nil || out.State != asynq.TaskStatePending || out.MaxRetry != 2 || out.Cancelled || out.Result.State != "" || out.TaskID != pending.ID || out.Queue != "nobody" {
		t.Errorf("Status of a pending task = %+v, %v", out, err)
	}

	testworker.Serve(t, r, &testworker.Agent{Run: func(context.Context, tasks.AgentRun, int) (tasks.Result, error) {
		return tasks.Result{ExitCode: 4, Stdout: "out"}, nil
	}})
	done, err := c.Enqueue(ctx, payload(), enqueue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(ctx, "", done.ID, nil); err != nil {
		t.Fatal(err)
	}
	out, err = c.Status(ctx, "", done.ID)
	if err != nil || out.State != asynq.TaskStateCompleted || out.Result.State != tasks.StateDone || out.Result.ExitCode != 4 || out.Queue != tasks.DefaultQueue {
		t.Errorf("Status of a completed task = %+v, %v", out, err)
	}

	if _, err := c.Status(ctx, "", pending.ID); !errors.Is(err, enqueue.ErrNotFound) {
		t.Errorf("Status of a task on another queue: %v, want ErrNotFound", err)
	}
}

// TestCancelWaiting: a task waiting to run, pending or scheduled, is
// archived at once with a cancelled result and its cancel mark; Wait and
// Status then say cancelled, and a second Cancel is no error.
func TestCancelWaiting(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		opts []asynq.Option
		want asynq.TaskState
	}{
		{"pending", nil, asynq.TaskStatePending},
		{"scheduled", []asynq.Option{asynq.ProcessIn(time.Hour)}, asynq.TaskStateScheduled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr} // no worker: the task waits
			c := newClient(t, r)
			ctx := context.Background()
			task, err := tasks.NewAgentRun(payload(), append(tt.opts, asynq.Queue("q1"))...)
			if err != nil {
				t.Fatal(err)
			}
			ac := asynq.NewClient(r)
			defer ac.Close()
			info, err := ac.Enqueue(task)
			if err != nil || info.State != tt.want {
				t.Fatalf("enqueued %+v, %v", info, err)
			}

			out, err := c.Cancel(ctx, "q1", info.ID)
			if err != nil || out.State != asynq.TaskStateArchived || !out.Cancelled {
				t.Fatalf("Cancel = %+v, %v; want archived, cancelled", out, err)
			}
			got, err := newInspector(t, r).GetTaskInfo("q1", info.ID)
			if err != nil {
				t.Fatal(err)
			}
			var res tasks.Result
			if err := json.Unmarshal(got.Result, &res); err != nil || res.State != tasks.StateCancelled || res.Error != "cancelled by enqueue cancel before it ran" {
				t.Errorf("result %s (%v)", got.Result, err)
			}
			rdb, err := cancelmark.Client(r)
			if err != nil {
				t.Fatal(err)
			}
			defer rdb.Close()
			if by, _ := cancelmark.Get(ctx, rdb, "q1", info.ID); by != cancelmark.ByEnqueue {
				t.Errorf("cancel mark %q", by)
			}

			_, err = c.Wait(ctx, "q1", info.ID, nil)
			var fe *enqueue.TaskFailedError
			if !errors.Is(err, enqueue.ErrCancelled) || !errors.As(err, &fe) || !fe.Cancelled || fe.Error() != "task "+info.ID+" was cancelled" {
				t.Errorf("Wait after Cancel: %v", err)
			}
			if out, err := c.Status(ctx, "q1", info.ID); err != nil || !out.Cancelled || out.Result.State != tasks.StateCancelled {
				t.Errorf("Status after Cancel = %+v, %v", out, err)
			}
			if out, err := c.Cancel(ctx, "q1", info.ID); err != nil || !out.Cancelled {
				t.Errorf("a second Cancel = %+v, %v; want no error", out, err)
			}
		})
	}
}

// TestCancelFinished: a finished task is not cancelled, nor marked; an
// unknown one is ErrNotFound.
func TestCancelFinished(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	testworker.Serve(t, r, &testworker.Agent{Run: func(_ context.Context, p tasks.AgentRun, _ int) (tasks.Result, error) {
		if p.Workdir == "/fail" {
			return tasks.Result{}, fmt.Errorf("from: no commit: %w", asynq.SkipRetry)
		}
		return tasks.Result{}, nil
	}})
	c := newClient(t, r)
	ctx := context.Background()
	failing := payload()
	failing.Workdir = "/fail"
	rdb, err := cancelmark.Client(r)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	for _, p := range []tasks.AgentRun{payload(), failing} {
		info, err := c.Enqueue(ctx, p, enqueue.Options{})
		if err != nil {
			t.Fatal(err)
		}
		end, _ := c.Wait(ctx, "", info.ID, nil)
		out, err := c.Cancel(ctx, "", info.ID)
		if !errors.Is(err, enqueue.ErrFinished) || out.State != end.State || out.Cancelled {
			t.Errorf("Cancel of a task %v = %+v, %v; want ErrFinished", end.State, out, err)
		}
		if by, _ := cancelmark.Get(ctx, rdb, tasks.DefaultQueue, info.ID); by != "" {
			t.Errorf("a finished task was marked cancelled by %q", by)
		}
	}
	if _, err := c.Cancel(ctx, "", "no-such-task"); !errors.Is(err, enqueue.ErrNotFound) {
		t.Errorf("Cancel of an unknown task: %v", err)
	}
}

// TestEnqueueClearsCancelMark: a task ID used again after its cancelled
// task was deleted starts clean.
func TestEnqueueClearsCancelMark(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	c := newClient(t, r)
	ctx := context.Background()
	rdb, err := cancelmark.Client(r)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if err := cancelmark.Set(ctx, rdb, "q1", "again", cancelmark.ByEnqueue); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Enqueue(ctx, payload(), enqueue.Options{Queue: "q1", TaskID: "again"}); err != nil {
		t.Fatal(err)
	}
	if by, _ := cancelmark.Get(ctx, rdb, "q1", "again"); by != "" {
		t.Errorf("the old cancel mark %q survived the new task", by)
	}
}

// TestWorkers counts the live servers of a queue.
func TestWorkers(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	c := newClient(t, r)
	ctx := context.Background()
	if n, err := c.Workers(ctx, "q1"); n != 0 || err != nil {
		t.Errorf("Workers before any server = %d, %v", n, err)
	}
	testworker.Serve(t, r, &testworker.Agent{}, "q1", "q2")
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := c.Workers(ctx, "q1")
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Workers(q1) = %d, want 1", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n, err := c.Workers(ctx, "critical"); n != 0 || err != nil {
		t.Errorf("Workers(critical) = %d, %v; want 0", n, err)
	}
}
