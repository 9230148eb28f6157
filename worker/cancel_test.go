package worker

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/internal/cancelmark"
	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// served is a Handler under Serve on a Redis of its own.
type served struct {
	t      *testing.T
	f      *fakeSmolvm
	client *asynq.Client
	insp   *asynq.Inspector
	rdb    redis.UniversalClient
	stop   func() // ends Serve and waits for it
	// execs receives the VM's name each time a command starts; the command
	// then runs until its context ends.
	execs chan string
}

// serveBlocking runs Serve with a fake smolvm whose commands run until
// cancelled, on miniredis or a real redis-server; mod, if any, changes the
// handler's Config.
func serveBlocking(t *testing.T, kind string, mod ...func(*Config)) *served {
	t.Helper()
	var s *testredis.Server
	if kind == "miniredis" {
		s = testredis.Mini(t)
	} else {
		s = testredis.Real(t)
	}
	r := asynq.RedisClientOpt{Addr: s.Addr}
	sv := &served{t: t, f: newFake(), execs: make(chan string, 4)}
	sv.f.exec = func(ctx context.Context, name string, _ []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
		sv.execs <- name
		<-ctx.Done()
		return smolvm.ExecResult{ExitCode: -1}, &smolvm.Error{Op: "machine exec", ExitCode: -1, Err: ctx.Err()}
	}
	h, _ := newHandler(t, sv.f, func(c *Config) {
		for _, f := range mod {
			f(c)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, h, ServerConfig{Redis: r, PollInterval: 5 * time.Millisecond, ShutdownTimeout: 200 * time.Millisecond,
			RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond})
	}()
	var stopped bool
	sv.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Serve did not return within 30s of its context's end")
		}
	}
	t.Cleanup(sv.stop)
	sv.client, sv.insp = asynq.NewClient(r), asynq.NewInspector(r)
	var err error
	if sv.rdb, err = cancelmark.Client(r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sv.client.Close(); sv.insp.Close(); sv.rdb.Close() })
	return sv
}

func (sv *served) enqueue(opts ...asynq.Option) *asynq.TaskInfo {
	sv.t.Helper()
	task, err := tasks.NewAgentRun(tasks.AgentRun{Image: "alpine:3", Command: []string{"sleep", "600"}}, opts...)
	if err != nil {
		sv.t.Fatal(err)
	}
	info, err := sv.client.Enqueue(task)
	if err != nil {
		sv.t.Fatal(err)
	}
	return info
}

func (sv *served) waitExec() string {
	sv.t.Helper()
	select {
	case vm := <-sv.execs:
		return vm
	case <-time.After(30 * time.Second):
		sv.t.Fatal("the command never started")
		return ""
	}
}

// await polls the task until it is in state want.
func (sv *served) await(info *asynq.TaskInfo, want asynq.TaskState) *asynq.TaskInfo {
	sv.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := sv.insp.GetTaskInfo(info.Queue, info.ID)
		if err == nil && got.State == want {
			return got
		}
		if time.Now().After(deadline) {
			if got != nil {
				sv.t.Fatalf("task never %v: it is %v after %d retries, last error %q, result %s", want, got.State, got.Retried, got.LastErr, got.Result)
			}
			sv.t.Fatalf("task never %v: %v", want, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func decodeResult(t *testing.T, b []byte) tasks.Result {
	t.Helper()
	var r tasks.Result
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("result %q: %v", b, err)
	}
	return r
}

// cancelProcessing signals a cancel of a running task's delivery as
// asynq's CancelProcessing does, once its pub/sub subscription is up.
func (sv *served) cancelProcessing(id string) {
	sv.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := sv.rdb.PubSubNumSub(context.Background(), "asynq:cancel").Result()
		if err == nil && n["asynq:cancel"] > 0 {
			break
		}
		if time.Now().After(deadline) {
			sv.t.Fatalf("asynq never subscribed to cancels: %v, %v", n, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := sv.insp.CancelProcessing(id); err != nil {
		sv.t.Fatal(err)
	}
}

// TestServeUserCancelIsFinal: a cancel of a running task, by asynq's
// CancelProcessing alone (the dashboard's cancel) or after enqueue's
// cancel mark, deletes the VM and archives the task without a retry, its
// result cancelled, whatever retries it had left.
func TestServeUserCancelIsFinal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		kind     string
		marked   bool // enqueue cancel: the mark comes first
		maxRetry int
		wantBy   string
	}{
		{"dashboard/miniredis", "miniredis", false, 3, cancelmark.ByAsynq},
		{"dashboard/redis-server", "redis-server", false, 3, cancelmark.ByAsynq},
		{"enqueue cancel/redis-server", "redis-server", true, 3, cancelmark.ByEnqueue},
		{"last attempt/miniredis", "miniredis", false, 0, cancelmark.ByAsynq},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sv := serveBlocking(t, tt.kind)
			info := sv.enqueue(asynq.MaxRetry(tt.maxRetry))
			vm := sv.waitExec()
			if tt.marked {
				if err := cancelmark.Set(context.Background(), sv.rdb, info.Queue, info.ID, cancelmark.ByEnqueue); err != nil {
					t.Fatal(err)
				}
			}
			sv.cancelProcessing(info.ID)
			got := sv.await(info, asynq.TaskStateArchived)
			r := decodeResult(t, got.Result)
			if r.State != tasks.StateCancelled || r.Error != "cancelled by "+tt.wantBy || r.VM != vm || r.Phase != tasks.PhaseExec {
				t.Errorf("result %+v, want cancelled by %s in phase exec of %s", r, tt.wantBy, vm)
			}
			if i := slices.IndexFunc(r.Phases, func(p tasks.PhaseTime) bool { return p.Name == tasks.PhaseDelete }); i < 0 {
				t.Errorf("the result's phases %+v lack the delete", r.Phases)
			}
			if got.Retried != 0 {
				t.Errorf("retried %d, want 0", got.Retried)
			}
			if by, _ := cancelmark.Get(context.Background(), sv.rdb, info.Queue, info.ID); by != tt.wantBy {
				t.Errorf("cancel mark %q, want %q", by, tt.wantBy)
			}
			sv.stop() // whatever was to run has run
			if left := sv.f.left(); len(left) != 0 {
				t.Errorf("machines left: %q", left)
			}
			if n := sv.f.count("exec"); n != 1 {
				t.Errorf("the command ran %d times, want once", n)
			}
			if n := sv.f.count("delete " + vm); n != 1 {
				t.Errorf("%s deleted %d times, want once", vm, n)
			}
		})
	}
}

// TestServeMarkedTaskNeverRuns: a delivery of a task whose cancel mark is
// set ends at once, archived with a cancelled result, without a smolvm
// call.
func TestServeMarkedTaskNeverRuns(t *testing.T) {
	t.Parallel()
	sv := serveBlocking(t, "miniredis")
	id := "marked-1"
	if err := cancelmark.Set(context.Background(), sv.rdb, tasks.DefaultQueue, id, cancelmark.ByEnqueue); err != nil {
		t.Fatal(err)
	}
	info := sv.enqueue(asynq.TaskID(id), asynq.MaxRetry(3))
	got := sv.await(info, asynq.TaskStateArchived)
	if r := decodeResult(t, got.Result); r.State != tasks.StateCancelled || r.Error != "cancelled by enqueue cancel before it ran" || r.Host != "host-a" {
		t.Errorf("result %+v", r)
	}
	if got.Retried != 0 || got.LastErr != "task cancelled by enqueue cancel before it ran" {
		t.Errorf("retried %d, last error %q", got.Retried, got.LastErr)
	}
	if ops := sv.f.ops(); len(ops) != 0 {
		t.Errorf("smolvm was called: %q", ops)
	}
}

// TestServeShutdownRequeues: a shutdown's cancel is no user's: the task
// goes back to its queue with no retry burned, no result saying cancelled
// and no cancel mark, its VM deleted.
func TestServeShutdownRequeues(t *testing.T) {
	t.Parallel()
	sv := serveBlocking(t, "redis-server")
	info := sv.enqueue(asynq.MaxRetry(3))
	sv.waitExec()
	sv.stop()
	got, err := sv.insp.GetTaskInfo(info.Queue, info.ID)
	if err != nil || got.State != asynq.TaskStatePending || got.Retried != 0 {
		t.Fatalf("after the shutdown the task is %+v (%v), want pending with no retry burned", got, err)
	}
	if r := decodeResult(t, got.Result); r.State == tasks.StateCancelled {
		t.Errorf("result %+v says cancelled", r)
	}
	if by, _ := cancelmark.Get(context.Background(), sv.rdb, info.Queue, info.ID); by != "" {
		t.Errorf("cancel mark %q set by a shutdown", by)
	}
	if left := sv.f.left(); len(left) != 0 {
		t.Errorf("machines left: %q", left)
	}
}
