package cancelmark

import (
	"context"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/testredis"
)

// each runs f against miniredis and a real redis-server.
func each(t *testing.T, f func(t *testing.T, r asynq.RedisConnOpt)) {
	for _, kind := range []string{"miniredis", "redis-server"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			var s *testredis.Server
			if kind == "miniredis" {
				s = testredis.Mini(t)
			} else {
				s = testredis.Real(t)
			}
			f(t, asynq.RedisClientOpt{Addr: s.Addr})
		})
	}
}

// TestMark: a mark is absent until set, keeps its first setter, expires
// and can be cleared.
func TestMark(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, r asynq.RedisConnOpt) {
		ctx := context.Background()
		rdb, err := Client(r)
		if err != nil {
			t.Fatal(err)
		}
		defer rdb.Close()
		if by, err := Get(ctx, rdb, "default", "t1"); by != "" || err != nil {
			t.Fatalf("before Set: %q, %v", by, err)
		}
		if err := Set(ctx, rdb, "default", "t1", ByEnqueue); err != nil {
			t.Fatal(err)
		}
		if err := Set(ctx, rdb, "default", "t1", ByAsynq); err != nil {
			t.Fatal(err)
		}
		if by, err := Get(ctx, rdb, "default", "t1"); by != ByEnqueue || err != nil {
			t.Errorf("after two Sets: %q, %v; want the first setter", by, err)
		}
		if by, _ := Get(ctx, rdb, "other", "t1"); by != "" {
			t.Errorf("the mark leaked to another queue: %q", by)
		}
		if left := rdb.TTL(ctx, key("default", "t1")).Val(); left <= 0 || left > ttl {
			t.Errorf("TTL = %v, want up to %v", left, ttl)
		}
		if err := Clear(ctx, rdb, "default", "t1"); err != nil {
			t.Fatal(err)
		}
		if by, _ := Get(ctx, rdb, "default", "t1"); by != "" {
			t.Errorf("after Clear: %q", by)
		}
	})
}

// TestWriteResult: the result lands where asynq's Inspector reads it, and
// a task that does not exist is not created.
func TestWriteResult(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, r asynq.RedisConnOpt) {
		ctx := context.Background()
		rdb, err := Client(r)
		if err != nil {
			t.Fatal(err)
		}
		defer rdb.Close()
		c := asynq.NewClientFromRedisClient(rdb)
		insp := asynq.NewInspectorFromRedisClient(rdb)
		info, err := c.Enqueue(asynq.NewTask("agent:run", []byte(`{}`)), asynq.Queue("q1"), asynq.TaskID("t1"))
		if err != nil {
			t.Fatal(err)
		}
		ok, err := WriteResult(ctx, rdb, info.Queue, info.ID, []byte(`{"state":"cancelled"}`))
		if !ok || err != nil {
			t.Fatalf("WriteResult = %v, %v", ok, err)
		}
		got, err := insp.GetTaskInfo(info.Queue, info.ID)
		if err != nil || string(got.Result) != `{"state":"cancelled"}` || got.State != asynq.TaskStatePending {
			t.Errorf("asynq reads result %q in state %v (%v)", got.Result, got.State, err)
		}
		ok, err = WriteResult(ctx, rdb, "q1", "gone", []byte(`{}`))
		if ok || err != nil {
			t.Errorf("WriteResult of a missing task = %v, %v; want false", ok, err)
		}
		if _, err := insp.GetTaskInfo("q1", "gone"); err == nil {
			t.Error("WriteResult created a task")
		}
	})
}
