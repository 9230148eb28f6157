// Package testworker stands in for the bottleq worker in tests of its
// producers (package enqueue, cmd/enqueue, internal/api): an asynq server,
// run in process against a test's Redis (see internal/testredis), whose
// handler writes results and live output as the worker does, so that
// Enqueue, Wait and Follow can be tested end to end without smolvm.
//
// It is for tests only: the stand-in runs no command, and production code
// must not import this package.
package testworker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/internal/livelog"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// Serve runs an asynq server with handler h on r until the test ends. It
// serves the given queues, or tasks.DefaultQueue, polls every few
// milliseconds and retries a failed delivery at once, so that tests are
// quick without depending on timing. An *Agent handler gets r for its
// live output.
func Serve(t testing.TB, r asynq.RedisConnOpt, h asynq.Handler, queues ...string) {
	t.Helper()
	if a, ok := h.(*Agent); ok && !a.NoLiveOutput {
		rdb, ok := r.MakeRedisClient().(redis.UniversalClient)
		if !ok {
			t.Fatalf("testworker: %T makes no go-redis client", r)
		}
		t.Cleanup(func() { rdb.Close() })
		a.rdb = rdb
	}
	if len(queues) == 0 {
		queues = []string{tasks.DefaultQueue}
	}
	qs := make(map[string]int, len(queues))
	for _, q := range queues {
		qs[q] = 1
	}
	log := &testLogger{t: t}
	srv := asynq.NewServer(r, asynq.Config{
		Concurrency:              2,
		Queues:                   qs,
		TaskCheckInterval:        5 * time.Millisecond,
		DelayedTaskCheckInterval: 5 * time.Millisecond,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 0 },
		ShutdownTimeout:          5 * time.Second,
		Logger:                   log,
		LogLevel:                 asynq.ErrorLevel,
	})
	if err := srv.Start(h); err != nil {
		t.Fatalf("start asynq server: %v", err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		log.stop()
	})
}

// Agent is a stand-in for the bottleq worker's handler of agent:run. For
// each delivery it decodes the payload (an invalid one fails without retry,
// as the worker's does), writes a running [tasks.Result] for each of
// Phases, calling Step after each write, and then writes the final result
// Run returns, or fails the delivery with Run's error.
type Agent struct {
	// Phases are reported in order. Default: none.
	Phases []string
	// Step, if set, is called after each progress report; a test that
	// checks progress blocks in it until Wait has seen the phase. An error
	// fails the delivery.
	Step func(ctx context.Context, phase string) error
	// Run makes the final result; attempt counts deliveries from 1.
	// Default: exit code 0 and no output.
	Run func(ctx context.Context, p tasks.AgentRun, attempt int) (tasks.Result, error)
	// NoLiveOutput leaves the task's live output empty, as for a task
	// whose live output expired. Otherwise, under Serve, the Agent writes
	// it as the worker does: the attempt, each phase before its progress
	// report, then the final result's Stdout and Stderr as output, and the
	// attempt's end.
	NoLiveOutput bool

	rdb redis.UniversalClient
}

// live appends entries to the task's live output, if the Agent writes it.
func (a *Agent) live(ctx context.Context, entries ...livelog.Entry) error {
	if a.rdb == nil {
		return nil
	}
	id, _ := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	_, err := livelog.Append(ctx, a.rdb, queue, id, livelog.Limits{MaxBytes: 1 << 20, MaxEntries: 1 << 15}, time.Hour, entries)
	return err
}

// ProcessTask implements asynq.Handler.
func (a *Agent) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.Decode(t.Payload())
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	retried, _ := asynq.GetRetryCount(ctx)
	attempt := retried + 1
	if err := a.live(ctx, livelog.Entry{Kind: livelog.KindAttempt, Attempt: attempt, Host: "testworker"}); err != nil {
		return err
	}
	for _, phase := range a.Phases {
		if err := a.live(ctx, livelog.Entry{Kind: livelog.KindPhase, Attempt: attempt, Phase: phase}); err != nil {
			return err
		}
		r := tasks.Result{State: tasks.StateRunning, Phase: phase, Attempt: attempt}
		if err := Write(t, r); err != nil {
			return err
		}
		if a.Step != nil {
			if err := a.Step(ctx, phase); err != nil {
				return err
			}
		}
	}
	final := tasks.Result{}
	if a.Run != nil {
		final, err = a.Run(ctx, p, attempt)
		if err != nil {
			// The worker's end entry has its error before it is wrapped
			// for asynq.
			msg := strings.TrimSuffix(err.Error(), ": "+asynq.SkipRetry.Error())
			if lerr := a.live(ctx, livelog.Entry{Kind: livelog.KindEnd, Attempt: attempt, Outcome: livelog.OutcomeFailed, Error: msg}); lerr != nil {
				return lerr
			}
			return err
		}
	}
	var out []livelog.Entry
	for _, o := range []struct{ stream, data string }{{livelog.Stdout, final.Stdout}, {livelog.Stderr, final.Stderr}} {
		if o.data != "" {
			out = append(out, livelog.Entry{Kind: livelog.KindOutput, Attempt: attempt, Stream: o.stream, Data: []byte(o.data)})
		}
	}
	out = append(out, livelog.Entry{Kind: livelog.KindEnd, Attempt: attempt, Outcome: livelog.OutcomeDone, ExitCode: final.ExitCode, TimedOut: final.TimedOut})
	if err := a.live(ctx, out...); err != nil {
		return err
	}
	final.State, final.Attempt = tasks.StateDone, attempt
	return Write(t, final)
}

// Write writes r as t's result, as the worker does with asynq's
// ResultWriter.
func Write(t *asynq.Task, r tasks.Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = t.ResultWriter().Write(b)
	return err
}

// testLogger sends asynq's errors to the test log until the test ends.
type testLogger struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (l *testLogger) log(level string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Logf("asynq %s: %s", level, fmt.Sprint(args...))
	}
}

func (l *testLogger) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
}

func (l *testLogger) Debug(args ...any) { l.log("debug", args...) }
func (l *testLogger) Info(args ...any)  { l.log("info", args...) }
func (l *testLogger) Warn(args ...any)  { l.log("warn", args...) }
func (l *testLogger) Error(args ...any) { l.log("error", args...) }
func (l *testLogger) Fatal(args ...any) { l.log("fatal", args...) }

// ArtifactKey is the store key a worker gives artifact i of task taskID
// of tenant: artifacts/TENANT/TASKKEY/I, TASKKEY derived from the ID so
// that any ID makes a valid key.
func ArtifactKey(tenant, taskID string, i int) string {
	sum := sha256.Sum256([]byte(taskID))
	return fmt.Sprintf("artifacts/%s/%s/%d", tenant, hex.EncodeToString(sum[:16]), i)
}

// PutArtifact stores content as a worker stores artifact i of a task —
// store.Put under ArtifactKey, create-only — and returns the result's
// entry for it, with guest as its Path (taken as given: a test may pass
// one no payload would hold).
func PutArtifact(ctx context.Context, st store.Store, tenant, taskID string, i int, guest string, content []byte) (tasks.Artifact, error) {
	obj, err := st.Put(ctx, ArtifactKey(tenant, taskID, i), bytes.NewReader(content), store.PutOptions{})
	if err != nil {
		return tasks.Artifact{}, err
	}
	return tasks.Artifact{Path: guest, Host: "testworker", Key: obj.Key, Size: obj.Size, SHA256: obj.SHA256}, nil
}
