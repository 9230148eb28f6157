// Package cancelmark is how a user's cancel of a bottleq task reaches the
// worker and outlives it: a mark in Redis per task, and the cancelled
// result written where asynq keeps the task's result.
//
// asynq's own cancel (Inspector.CancelProcessing, which the dashboard's
// cancel button calls) only cancels the running handler's context, which a
// worker's shutdown does too, and asynq then retries the task. The mark
// says the cancel was a user's: `enqueue cancel` sets it before it cancels,
// and the worker sets it when asynq reports a cancel of a task it runs. A
// delivery that finds the mark ends at once, so a cancel holds even when
// the worker that got it died before it finished.
//
// Both sides of the contract, the producer (package enqueue) and the
// worker, use this package; it must not grow into a client of its own.
package cancelmark

import (
	"context"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// ttl is how long a mark lives: longer than any retry delay a cancelled
// task can be left with, and than a worker takes to tear one down.
const ttl = 24 * time.Hour

// Who set a mark, as its value says.
const (
	// ByEnqueue is `enqueue cancel`, or a program's enqueue.Client.Cancel.
	ByEnqueue = "enqueue cancel"
	// ByAsynq is asynq's Inspector.CancelProcessing alone, such as the
	// dashboard's cancel button: the worker sets the mark.
	ByAsynq = "asynq CancelProcessing (such as the dashboard's cancel)"
)

// key is the Redis key of the mark of task id on queue. The braces put it
// in the queue's Redis Cluster slot, as asynq's own keys are.
func key(queue, id string) string { return "bottleq:cancel:{" + queue + "}:" + id }

// Set marks task id on queue cancelled by by. An existing mark is kept,
// and its by with it.
func Set(ctx context.Context, rdb redis.UniversalClient, queue, id, by string) error {
	if err := rdb.SetNX(ctx, key(queue, id), by, ttl).Err(); err != nil {
		return fmt.Errorf("cancel mark of task %s: %w", id, err)
	}
	return nil
}

// Get returns who marked task id on queue cancelled, or "" when nobody did.
func Get(ctx context.Context, rdb redis.UniversalClient, queue, id string) (string, error) {
	by, err := rdb.Get(ctx, key(queue, id)).Result()
	switch {
	case err == redis.Nil:
		return "", nil
	case err != nil:
		return "", fmt.Errorf("cancel mark of task %s: %w", id, err)
	}
	return by, nil
}

// Clear removes the mark of task id on queue, so that a new task of that
// ID is not taken for the cancelled one.
func Clear(ctx context.Context, rdb redis.UniversalClient, queue, id string) error {
	if err := rdb.Del(ctx, key(queue, id)).Err(); err != nil {
		return fmt.Errorf("cancel mark of task %s: %w", id, err)
	}
	return nil
}

// taskKey is asynq's hash of task id on queue (asynq's base.TaskKey),
// whose "result" field asynq's ResultWriter sets and Inspector.GetTaskInfo
// reads.
func taskKey(queue, id string) string { return "asynq:{" + queue + "}:t:" + id }

// writeResult sets the result field only while the task exists: a task
// deleted meanwhile is not brought back as a stray hash.
var writeResult = redis.NewScript(`
if redis.call("EXISTS", KEYS[1]) == 0 then
	return 0
end
redis.call("HSET", KEYS[1], "result", ARGV[1])
return 1
`)

// WriteResult writes result as the result of task id on queue, as asynq's
// ResultWriter does; it reports false when the task no longer exists. It
// is for a task that is not running: asynq's ResultWriter refuses to write
// once the handler's context is cancelled, which is how asynq cancels.
func WriteResult(ctx context.Context, rdb redis.UniversalClient, queue, id string, result []byte) (bool, error) {
	n, err := writeResult.Run(ctx, rdb, []string{taskKey(queue, id)}, result).Int()
	if err != nil {
		return false, fmt.Errorf("result of task %s: %w", id, err)
	}
	return n == 1, nil
}

// Client returns the go-redis client asynq would use for r; the caller
// closes it.
func Client(r asynq.RedisConnOpt) (redis.UniversalClient, error) {
	c, ok := r.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("asynq.RedisConnOpt %T does not make a go-redis v9 client", r)
	}
	return c, nil
}
