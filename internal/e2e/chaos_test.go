package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/redisurl"
	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/tasks"
)

// resumable is an agent command for crash tests. The simulator gives no
// isolation, so the "guest" can leave marks in a host directory: the first
// run marks itself (then says it started) and hangs; a later run finishes
// at once.
func resumable(dir string) []string {
	return []string{"sh", "-c", fmt.Sprintf(
		`if [ -f %[1]s/again ]; then echo second-run; else touch %[1]s/again && touch %[1]s/started && exec sleep 120; fi`, dir)}
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *stack) client() (*asynq.Client, *asynq.Inspector) {
	s.t.Helper()
	opt, err := redisurl.Parse(s.redisURL())
	if err == nil {
		opt, err = redisurl.WithCA(opt, s.caFile)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	c, insp := asynq.NewClient(opt), asynq.NewInspector(opt)
	s.t.Cleanup(func() { c.Close(); insp.Close() })
	return c, insp
}

func (s *stack) submit(c *asynq.Client, p tasks.AgentRun, opts ...asynq.Option) *asynq.TaskInfo {
	s.t.Helper()
	task, err := tasks.NewAgentRun(p, opts...)
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := c.Enqueue(task)
	if err != nil {
		s.t.Fatal(err)
	}
	return info
}

func result(t *testing.T, info *asynq.TaskInfo) tasks.Result {
	t.Helper()
	var r tasks.Result
	if err := json.Unmarshal(info.Result, &r); err != nil {
		t.Fatalf("result %q: %v", info.Result, err)
	}
	return r
}

// TestSIGTERMRequeues: SIGTERM mid-task deletes the VM before the worker
// exits 0, puts the task back without burning a retry, and another worker
// completes it.
func TestSIGTERMRequeues(t *testing.T) {
	t.Parallel()
	s := newStack(t, "redis-server", "1.9.3")
	c, insp := s.client()
	marks := t.TempDir()
	w1 := s.worker("BOTTLEQ_SHUTDOWN_TIMEOUT=300ms")
	info := s.submit(c, tasks.AgentRun{Image: "alpine:3", Command: resumable(marks)})
	waitFile(t, filepath.Join(marks, "started"))
	start := time.Now()
	if err := w1.stop(); err != nil {
		t.Fatalf("worker exit after SIGTERM: %v\n%s", err, w1.logs)
	}
	t.Logf("worker exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	if ms := s.machines(); len(ms) != 0 {
		t.Fatalf("VM still there after the worker exited: %q", ms)
	}
	got, err := insp.GetTaskInfo(info.Queue, info.ID)
	if err != nil || got.State != asynq.TaskStatePending || got.Retried != 0 {
		t.Fatalf("after SIGTERM the task is %+v (%v), want pending with no retry burned", got, err)
	}
	s.worker()
	done := waitState(t, insp, info.Queue, info.ID, asynq.TaskStateCompleted)
	if r := result(t, done); r.Stdout != "second-run\n" || done.Retried != 0 {
		t.Errorf("completed with %q after %d retries", r.Stdout, done.Retried)
	}
}

// TestKill9RecoversAndReaps: a worker killed with SIGKILL leaves its VM;
// a new worker, with the default reaper flags, deletes that VM within 45 s
// of its start, and runs the task again once asynq recovers it, 54 s to 2
// minutes after the kill (README: a crash costs time, not tasks). Slow:
// asynq's lease is 30 s, it recovers a task 30 s after its lease expired,
// and its recoverer runs every minute.
func TestKill9RecoversAndReaps(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: asynq needs up to 2 minutes to recover a crashed worker's task")
	}
	t.Parallel()
	s := newStack(t, "redis-server", "1.9.3")
	c, insp := s.client()
	marks := t.TempDir()
	w1 := s.worker()
	info := s.submit(c, tasks.AgentRun{Image: "alpine:3", Command: resumable(marks)})
	waitFile(t, filepath.Join(marks, "started"))
	killed := time.Now()
	if err := w1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-w1.done
	w1.done <- nil
	left := s.machines()
	if len(left) != 1 {
		t.Fatalf("after kill -9 the simulator holds %q, want the dead worker's VM", left)
	}
	started := time.Now()
	w2 := s.worker()
	// Recovered: asynq's recoverer counts a retry (the second run comes
	// after it). Reaped: the dead worker's VM is gone.
	var recovered, reaped time.Duration
	for deadline := killed.Add(3 * time.Minute); recovered == 0 || reaped == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("3 minutes after the kill: recovered after %v, reaped after %v (0: not yet)\n%s", recovered, reaped, w2.logs)
		}
		if got, err := insp.GetTaskInfo(info.Queue, info.ID); recovered == 0 && err == nil && got.Retried > 0 {
			recovered = time.Since(killed)
		}
		if reaped == 0 && !slices.Contains(s.machines(), left[0]) {
			reaped = time.Since(started)
		}
	}
	t.Logf("task recovered %v after the kill; orphan reaped %v after the next worker started", recovered.Round(time.Millisecond), reaped.Round(time.Millisecond))
	// asynq keeps a lease's expiry in whole seconds, and renews it every
	// 5 s: it expires 25 to 30 s after the kill, give or take a second.
	if recovered < 54*time.Second || recovered > 2*time.Minute {
		t.Errorf("task recovered %v after the kill, want 54 s to 2 minutes", recovered)
	}
	// 45 s is the reaper's schedule (worker.TestReaperRunSchedule); its
	// sweeps (listing VMs, asking Redis) take their own time on top.
	if reaped > 46*time.Second {
		t.Errorf("orphan reaped %v after the next worker started, want within 45 s", reaped)
	}
	done := waitStateWithin(t, insp, info.Queue, info.ID, asynq.TaskStateCompleted, time.Minute)
	if r := result(t, done); r.Stdout != "second-run\n" || done.Retried != 1 {
		t.Errorf("completed with %q after %d retries", r.Stdout, done.Retried)
	}
	if !strings.Contains(w2.logs.String(), "reaped orphan VM") || !strings.Contains(w2.logs.String(), left[0]) {
		t.Errorf("the reap of %s was not logged:\n%s", left[0], w2.logs)
	}
	if !strings.Contains(w2.metrics(t), "bottleq_reaped_vms_total 1") {
		t.Error("bottleq_reaped_vms_total is not 1")
	}
}

// TestFaultAtEachPhase: a smolvm failure at each phase in turn is retried
// per policy and the task ends completed, or archived with its cause; no
// VM is left either way. An exec that fails while its VM still runs cannot
// be told from an agent that prints smolvm's line and exits 1: it is the
// agent's exit, completed at once with its exit code.
func TestFaultAtEachPhase(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     []string
		retries int    // asynq retries the task needed
		cause   string // archived with this in its error; "" means completed
		exit    int    // the completed task's exit code
	}{
		{"create", []string{"SMOLVM_SIM_FAULTS=create:1:1"}, 1, "", 0},
		{"start", []string{"SMOLVM_SIM_FAULTS=start:1:1"}, 1, "", 0},
		{"readiness probe", []string{"SMOLVM_SIM_FAULTS=exec:1:1"}, 0, "", 0}, // WaitReady probes again
		{"exec tool error, VM running", []string{"SMOLVM_SIM_FAULTS=exec:2:1:agent operation failed: vm exec: injected"}, 0, "", 1},
		{"stop", []string{"SMOLVM_SIM_FAULTS=stop:1:1"}, 1, "", 0},
		{"pack --from-vm", []string{"SMOLVM_SIM_FAULTS=pack-vm:1:1"}, 1, "", 0},
		{"delete", []string{"SMOLVM_SIM_FAULTS=delete:1:1"}, 0, "", 0}, // teardown retries the delete
		{"pack --image", []string{"SMOLVM_SIM_FAULTS=pack-image:1:1"}, 1, "", 0},
		{"never ready", []string{"SMOLVM_SIM_NOT_READY=1m", "BOTTLEQ_READY_TIMEOUT=300ms"}, 1, "not ready", 0},
		{"start always fails", []string{"SMOLVM_SIM_FAULTS=start:1+:1:agent operation failed: start machine: kvm not available"}, 1, "kvm not available", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, "miniredis", "1.9.3")
			c, insp := s.client()
			w := s.worker(tt.env...)
			info := s.submit(c, tasks.AgentRun{Image: "alpine:3", Command: []string{"echo", "ok"}}, asynq.MaxRetry(1))
			want := asynq.TaskStateCompleted
			if tt.cause != "" {
				want = asynq.TaskStateArchived
			}
			got := waitState(t, insp, info.Queue, info.ID, want)
			if got.Retried != tt.retries {
				t.Errorf("retried %d times, want %d", got.Retried, tt.retries)
			}
			if tt.cause != "" && !strings.Contains(got.LastErr, tt.cause) {
				t.Errorf("archived with %q, want the cause %q", got.LastErr, tt.cause)
			}
			if r := result(t, got); tt.cause == "" && (r.ExitCode != tt.exit || (tt.exit == 0) != (r.Stdout == "ok\n")) {
				t.Errorf("result %s, want exit code %d", got.Result, tt.exit)
			}
			if tt.name == "delete" && !strings.Contains(w.logs.String(), "delete failed") {
				t.Error("the failed delete was not logged")
			}
		})
	}
}

// TestRedisRestart: Redis stops and starts on the same port mid-run; the
// worker survives and every task completes.
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	s := &stack{t: t, version: "1.9.3", simState: t.TempDir(), dataDir: t.TempDir()}
	s.redis = testredis.Real(t, "--appendonly", "yes", "--appendfsync", "always")
	t.Cleanup(func() {
		if ms := s.machines(); len(ms) != 0 {
			t.Errorf("machines left: %q", ms)
		}
	})
	c, insp := s.client()
	w := s.worker("BOTTLEQ_CONCURRENCY=2")
	var ids []*asynq.TaskInfo
	for i := range 6 {
		ids = append(ids, s.submit(c, tasks.AgentRun{Image: "alpine:3", Command: []string{"sh", "-c", fmt.Sprintf("sleep 0.3; echo %d", i)}}))
	}
	time.Sleep(200 * time.Millisecond)
	s.redis.Restart(t)
	for i, info := range ids {
		got := waitStateWithin(t, insp, info.Queue, info.ID, asynq.TaskStateCompleted, 2*time.Minute)
		if r := result(t, got); r.Stdout != fmt.Sprintf("%d\n", i) {
			t.Errorf("task %d: %q", i, r.Stdout)
		}
	}
	select {
	case err := <-w.done:
		w.done <- err
		t.Fatalf("the worker died with Redis: %v\n%s", err, w.logs)
	default:
	}
}

// TestSoak: 200 tasks at concurrency 8, smolvm failing about 10% of its
// calls at random phases: every task ends completed or archived with its
// cause, and no VM is left.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the soak runs 200 tasks")
	}
	t.Parallel()
	s := newStack(t, "redis-server", "1.9.3")
	c, insp := s.client()
	var rules []string
	for _, op := range []string{"create", "start", "exec", "stop", "pack-vm", "delete", "pack-image"} {
		rules = append(rules, op+":p0.1:1")
	}
	w := s.worker("BOTTLEQ_CONCURRENCY=8", "SMOLVM_SIM_SEED=42", "SMOLVM_SIM_FAULTS="+strings.Join(rules, ";"),
		"BOTTLEQ_REAP_INTERVAL=500ms", "BOTTLEQ_REAP_MIN_AGE=2s")
	const n = 200
	for i := range n {
		s.submit(c, tasks.AgentRun{Image: "alpine:3", Command: []string{"echo", fmt.Sprint(i)}, Commit: tasks.Bool(i%2 == 0)}, asynq.MaxRetry(3))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var q *asynq.QueueInfo
	for {
		var err error
		q, err = insp.GetQueueInfo(tasks.DefaultQueue)
		if err == nil && q.Completed+q.Archived == n {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("soak did not finish: %+v\n", q)
		case <-time.After(100 * time.Millisecond):
		}
	}
	archived, err := insp.ListArchivedTasks(tasks.DefaultQueue, asynq.PageSize(n))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range archived {
		if a.LastErr == "" {
			t.Errorf("task %s archived without a cause", a.ID)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(s.machines()) != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	faults := len(s.calls(func(c call) bool { return c.Fault }))
	calls := len(s.calls(vmCalls))
	t.Logf("soak: %d tasks: %d completed, %d archived; %d smolvm calls, %d injected faults (%.1f%%)",
		n, q.Completed, q.Archived, calls, faults, 100*float64(faults)/float64(calls))
	if faults == 0 || q.Completed < n/2 {
		t.Errorf("the soak did not exercise faults (%d) or completed too few (%d)", faults, q.Completed)
	}
	_ = w
}

func waitStateWithin(t *testing.T, insp *asynq.Inspector, queue, id string, want asynq.TaskState, d time.Duration) *asynq.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		info, err := insp.GetTaskInfo(queue, id)
		if err == nil && info.State == want {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s never reached %v (last: %+v, %v)", id, want, info, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
