package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/internal/livelog"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// bulkVariant is one case of the Redis-per-task scenario.
type bulkVariant struct {
	label string
	store bool // the worker has -store and the producer Options.Store
	loud  bool // the agent prints 40 KB to each stream; else a 700 KB input
	// What one variant measured.
	srv                      *redisServer
	rdb                      *redis.Client
	base, after, steady      int64 // used_memory
	primingLive              int64 // MEMORY USAGE of the priming task's live output keys, at base
	n                        int
	taskHash, live, zsetEach int64 // MEMORY USAGE of one task's keys
	msgLen, resultLen        int
	storeBytes               int64
	ids                      []string
	queue                    string
}

// Sizes of the scenario's bulk.
const (
	loudBytes  = 40 << 10
	inputBytes = 700_000
)

// loudCommand prints loudBytes of text lines to stdout and to stderr.
var loudCommand = []string{"sh", "-c",
	"yes 'a line of the agent talking to itself, 48 bytes' | head -c " + strconv.Itoa(loudBytes) +
		"; yes 'a line of the agent warning about something, 52 b' | head -c " + strconv.Itoa(loudBytes) + " >&2"}

func redisPerTask(ctx context.Context, b *bench) (section, error) {
	s := section{method: `How much Redis memory a finished task leaves behind, without a store (the worker, with
-output-in-result, keeps its output's head and tail in the result, the producer puts its files in the payload:
today's behaviour) and with one (-store file://DIR on the worker, enqueue.Options.Store on the producer: the bulk
goes to the store). Four variants, each on a fresh
redis-server of its own so that INFO memory's **used_memory** is the task's alone: an agent printing 40 KiB to each of
stdout and stderr (text lines), and a task carrying a 700 KB input file (command "true"), each without and with the
store. Per variant: one worker (concurrency 4), one priming task of the same kind (it makes the queue's keys, loads
the Lua scripts), the worker stopped, used_memory read (**base**); the worker started again, N tasks enqueued through
the enqueue library, all completed, the worker stopped, used_memory read again (**after**). **Per task = (after −
base) ÷ N**, asynq's task hash (payload and result), its entry in the completed set, the live output stream and its
counter, and whatever else a task leaves. A completed task's live output stream lingers a minute after its final
result (for followers still reading it), then expires: the **steady** figure is read once every stream is gone,
which is what a task costs Redis for the rest of its retention (7 days without a store, 24 hours with one); the
priming task's own stream, gone by then too, is taken off base. The breakdown is MEMORY USAGE of one task's keys.`}
	n := b.n(50, 4)
	variants := []*bulkVariant{
		{label: "agent printing 40 KiB to stdout and stderr, no store", loud: true},
		{label: "agent printing 40 KiB to stdout and stderr, store", loud: true, store: true},
		{label: "700 KB input file, no store"},
		{label: "700 KB input file, store", store: true},
	}
	defer func() {
		for _, v := range variants {
			if v.rdb != nil {
				v.rdb.Close()
			}
			v.srv.stop()
		}
	}()
	for _, v := range variants {
		if err := b.runBulkVariant(ctx, v, n); err != nil {
			return s, fmt.Errorf("%s: %w", v.label, err)
		}
	}
	// Wait for the completed tasks' live output to expire, on every
	// server at once.
	b.logf("  waiting for the finished tasks' live output to expire")
	deadline := time.Now().Add(3 * time.Minute)
	for _, v := range variants {
		for {
			left := 0
			for _, id := range v.ids {
				left += int(v.rdb.Exists(ctx, livelog.Key(v.queue, id), livelog.SizeKey(v.queue, id)).Val())
			}
			if left == 0 {
				break
			}
			if time.Now().After(deadline) {
				return s, fmt.Errorf("%s: %d live output keys still there after 3 minutes", v.label, left)
			}
			select {
			case <-ctx.Done():
				return s, ctx.Err()
			case <-time.After(time.Second):
			}
		}
		m, err := usedMemory(ctx, v.rdb)
		if err != nil {
			return s, err
		}
		v.steady = m
	}

	kb := func(x float64) string { return fmt.Sprintf("%.1f KB", x/1000) }
	per := func(v *bulkVariant, m int64) float64 { return float64(m-v.base) / float64(v.n) }
	perSteady := func(v *bulkVariant) float64 { return float64(v.steady-(v.base-v.primingLive)) / float64(v.n) }
	for i := 0; i < len(variants); i += 2 {
		today, st := variants[i], variants[i+1]
		what := "agent printing 40 KiB to each stream"
		if !today.loud {
			what = "task with a 700 KB input file"
		}
		s.add(what+", no store (today)", fmt.Sprintf("%s per task once finished; %s once its live output expired", kb(per(today, today.after)), kb(perSteady(today))))
		s.goal(what+", store", fmt.Sprintf("%s per task once its live output expired (%s in its first minute); ratio to today %.3f",
			kb(perSteady(st)), kb(per(st, st.after)), perSteady(st)/per(today, today.after)), "≤ 4 KB", perSteady(st) <= 4000)
	}
	s.detail("| variant (N=%d) | used_memory per task, finished | after its live output expired | task hash (payload %s, result %s) | live output keys | completed-set entry | in the store per task |", n, "bytes", "bytes")
	s.detail("|---|---|---|---|---|---|---|")
	for _, v := range variants {
		s.detail("| %s | %s | %s | %d B (%d, %d) | %d B | %d B | %s |", v.label, kb(per(v, v.after)), kb(perSteady(v)),
			v.taskHash, v.msgLen, v.resultLen, v.live, v.zsetEach, kb(float64(v.storeBytes)/float64(v.n+1)))
	}
	s.detail("")
	s.detail("The store is a file:// directory here; \"in the store per task\" is its size over all the variant's tasks (the priming one included) ÷ their count: the bulk moved out of Redis, not away. At 10 finished tasks/s, the 7-day retention without a store keeps 6.05 M tasks: ×%s = %.0f GB of Redis for the loud agent; with the store, its 24-hour retention keeps 0.86 M: ×%s = %.1f GB.",
		kb(per(variants[0], variants[0].after)), per(variants[0], variants[0].after)*6.048e6/1e9,
		kb(perSteady(variants[1])), perSteady(variants[1])*0.864e6/1e9)
	return s, nil
}

// runBulkVariant measures one variant on a redis-server of its own.
func (b *bench) runBulkVariant(ctx context.Context, v *bulkVariant, n int) error {
	var err error
	name := b.uniq("bulk")
	if v.srv, err = startRedis(ctx, b.mkdir(name+"-redis")); err != nil {
		return err
	}
	v.rdb = redis.NewClient(&redis.Options{Addr: v.srv.addr})
	v.queue, v.n = name, n
	o := workerOpts{queue: v.queue, concurrency: 4, dataDir: b.dataDir(), simState: b.mkdir(name + "-sim"), redis: v.srv.addr}
	opts := enqueue.Options{Queue: v.queue}
	var storeDir string
	if !v.store {
		// Today's behaviour, whether or not the worker has a store of
		// its own: the output stays in the result.
		o.args = []string{"-output-in-result"}
	}
	if v.store {
		storeDir = b.mkdir(name + "-store")
		o.args = []string{"-store", "file://" + storeDir}
		if opts.Store, err = store.Open(ctx, "file://"+storeDir); err != nil {
			return err
		}
	}
	p := payload(image)
	if v.loud {
		p.Command = loudCommand
	} else {
		p.Files = []tasks.File{{Path: "/workspace/in/input.bin", Content: bytes.Repeat([]byte("0123456789abcde\n"), inputBytes/16)}}
	}
	client := enqueue.NewFromRedisClient(v.rdb)
	defer client.Close()
	b.logf("  %s: priming task", v.label)
	if _, err := b.startWorker(ctx, o); err != nil {
		return err
	}
	first, err := client.Enqueue(ctx, p, opts)
	if err != nil {
		return err
	}
	if err := waitQueue(ctx, v.rdb, v.queue, 1, 2*time.Minute); err != nil {
		return err
	}
	b.stopAll()
	for _, k := range []string{livelog.Key(v.queue, first.ID), livelog.SizeKey(v.queue, first.ID)} {
		v.primingLive += memoryUsage(ctx, v.rdb, k)
	}
	if v.base, err = usedMemory(ctx, v.rdb); err != nil {
		return err
	}

	b.logf("  %s: %d tasks", v.label, n)
	if _, err := b.startWorker(ctx, o); err != nil {
		return err
	}
	for range n {
		info, err := client.Enqueue(ctx, p, opts)
		if err != nil {
			return err
		}
		v.ids = append(v.ids, info.ID)
	}
	if err := waitQueue(ctx, v.rdb, v.queue, n+1, 5*time.Minute); err != nil {
		return err
	}
	b.stopAll()
	if v.after, err = usedMemory(ctx, v.rdb); err != nil {
		return err
	}
	last := v.ids[len(v.ids)-1]
	hash := "asynq:{" + v.queue + "}:t:" + last
	v.taskHash = memoryUsage(ctx, v.rdb, hash)
	v.msgLen = len(v.rdb.HGet(ctx, hash, "msg").Val())
	v.resultLen = len(v.rdb.HGet(ctx, hash, "result").Val())
	v.live = memoryUsage(ctx, v.rdb, livelog.Key(v.queue, last)) + memoryUsage(ctx, v.rdb, livelog.SizeKey(v.queue, last))
	completed := "asynq:{" + v.queue + "}:completed"
	if c := v.rdb.ZCard(ctx, completed).Val(); c > 0 {
		v.zsetEach = memoryUsage(ctx, v.rdb, completed) / c
	}
	if storeDir != "" {
		_ = filepath.WalkDir(storeDir, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if info, err := d.Info(); err == nil {
					v.storeBytes += info.Size()
				}
			}
			return nil
		})
	}
	// Each task's result must be what the variant says it is.
	res, ok, err := resultOn(ctx, v.rdb, v.queue, last)
	switch {
	case err != nil || !ok || res.State != tasks.StateDone || res.ExitCode != 0:
		return fmt.Errorf("task %s: not done with exit 0 (%v, %+v)", last, err, res.Error)
	case v.loud && v.store && (res.StdoutKey == "" || res.StderrKey == ""):
		return fmt.Errorf("task %s: a worker with a store kept no output in it", last)
	case v.loud && !v.store && res.StdoutOmitted+int64(len(res.Stdout)) < loudBytes:
		return fmt.Errorf("task %s: the result holds %d bytes of stdout, want %d", last, len(res.Stdout), loudBytes)
	}
	return nil
}

// waitQueue polls the queue's completed set until it holds n tasks; an
// archived or retried task is an error.
func waitQueue(ctx context.Context, rdb *redis.Client, queue string, n int, timeout time.Duration) error {
	prefix := "asynq:{" + queue + "}:"
	deadline := time.Now().Add(timeout)
	for {
		if done := rdb.ZCard(ctx, prefix+"completed").Val(); done >= int64(n) {
			return nil
		}
		if bad := rdb.ZCard(ctx, prefix+"archived").Val() + rdb.ZCard(ctx, prefix+"retry").Val(); bad > 0 {
			return fmt.Errorf("queue %s: %d tasks archived or retrying", queue, bad)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("queue %s: not %d tasks completed in %s", queue, n, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// usedMemory reads INFO memory's used_memory.
func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(infoField(info, "used_memory"), 10, 64)
}

// memoryUsage is MEMORY USAGE of key with every element sampled; 0 for a
// missing key.
func memoryUsage(ctx context.Context, rdb *redis.Client, key string) int64 {
	n, _ := rdb.MemoryUsage(ctx, key, 0).Result()
	return n
}
