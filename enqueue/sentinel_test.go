package enqueue_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/internal/redisurl"
	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/internal/testworker"
	"github.com/bot-bottle/bottleq/tasks"
)

// TestSentinel: a producer on a redis-sentinel:// URL (asynq's form)
// enqueues and waits for a task that a server on go-redis's form of the
// same Sentinel setup runs: both find the master through the sentinels.
func TestSentinel(t *testing.T) {
	t.Parallel()
	s := testredis.Sentinel(t, testredis.SentinelConfig{Sentinels: 2})
	r, err := redisurl.Parse(s.FailoverURL())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.(asynq.RedisFailoverClientOpt); !ok {
		t.Fatalf("redisurl.Parse(go-redis's form) = %T, want asynq.RedisFailoverClientOpt", r)
	}
	testworker.Serve(t, r, &testworker.Agent{
		Run: func(_ context.Context, p tasks.AgentRun, _ int) (tasks.Result, error) {
			return tasks.Result{Stdout: strings.Join(p.Command, " ")}, nil
		},
	})
	c, err := enqueue.NewFromURL(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	info, err := c.Enqueue(t.Context(), payload(), enqueue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Wait(t.Context(), info.Queue, info.ID, nil)
	if err != nil || out.State != asynq.TaskStateCompleted || out.Result.Stdout != "sh -c echo hi" {
		t.Fatalf("Wait = %+v, %v; want completed with the command's output", out, err)
	}
}

// TestNewFromRedisClient: a Client on the caller's go-redis client uses
// it, and Close leaves it open for the caller.
func TestNewFromRedisClient(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	rc := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rc.Close()
	testworker.Serve(t, r, &testworker.Agent{})
	c := enqueue.NewFromRedisClient(rc)
	info, err := c.Enqueue(t.Context(), payload(), enqueue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := c.Wait(t.Context(), info.Queue, info.ID, nil); err != nil || out.State != asynq.TaskStateCompleted {
		t.Fatalf("Wait = %+v, %v", out, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Ping(t.Context()).Err(); err != nil {
		t.Errorf("Close closed the caller's client: %v", err)
	}
}

// TestClientCloses: a Client made from a URL closes its connections.
func TestClientCloses(t *testing.T) {
	t.Parallel()
	m := miniredis.RunT(t)
	c, err := enqueue.NewFromURL("redis://" + m.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Enqueue(t.Context(), payload(), enqueue.Options{}); err != nil {
		t.Fatal(err)
	}
	if n := m.CurrentConnectionCount(); n == 0 {
		t.Fatal("no connection after an enqueue")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// miniredis sees a closed connection when its reader returns.
	for deadline := time.Now().Add(10 * time.Second); m.CurrentConnectionCount() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open after Close", m.CurrentConnectionCount())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEnqueueReplicas: with Options.Replicas an enqueue returns once that
// many replicas hold the task; asked for more replicas than there are, it
// gives up when ctx ends, with no second task made by its attempts.
func TestEnqueueReplicas(t *testing.T) {
	t.Parallel()
	master := testredis.Real(t, "--repl-diskless-sync-delay", "0") // the replica syncs at once
	replica := testredis.Real(t, "--replicaof", "127.0.0.1", strings.TrimPrefix(master.Addr, "127.0.0.1:"))
	c, err := enqueue.NewFromURL(master.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	onReplica := redis.NewClient(&redis.Options{Addr: replica.Addr})
	defer onReplica.Close()

	info, err := c.Enqueue(t.Context(), payload(), enqueue.Options{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Confirmed means the replica has it now, not eventually.
	if n, err := onReplica.Exists(t.Context(), "asynq:{"+info.Queue+"}:t:"+info.ID).Result(); err != nil || n != 1 {
		t.Errorf("the replica lacks task %s after a confirmed enqueue (%d, %v)", info.ID, n, err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	_, err = c.Enqueue(ctx, payload(), enqueue.Options{Replicas: 2, TaskID: "wants-two"})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not confirmed by 2 replicas") {
		t.Errorf("Enqueue with too few replicas = %v, want a deadline error", err)
	}
	// The attempts found their own task: one task, not a duplicate error.
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: master.Addr})
	defer insp.Close()
	if got, err := insp.GetTaskInfo(info.Queue, "wants-two"); err != nil || got.State != asynq.TaskStatePending {
		t.Errorf("task wants-two: %+v, %v", got, err)
	}
	if _, err := c.Enqueue(t.Context(), payload(), enqueue.Options{Replicas: 1, TaskID: "wants-two"}); !errors.Is(err, enqueue.ErrDuplicate) {
		t.Errorf("enqueueing a taken ID = %v, want ErrDuplicate", err)
	}
	if _, err := c.Enqueue(t.Context(), payload(), enqueue.Options{Replicas: -1}); !errors.Is(err, enqueue.ErrInvalidOptions) {
		t.Errorf("Replicas -1 = %v, want ErrInvalidOptions", err)
	}
}
