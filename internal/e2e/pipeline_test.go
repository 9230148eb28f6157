package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

// TestRunAgent: a task runs through the worker and enqueue --wait prints
// the agent's output and exits with its code, in both dialects, on both
// Redis kinds.
func TestRunAgent(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, s *stack) {
		w := s.worker()
		stdout, stderr, code := s.enqueue("--image", "alpine:3", "--env", "GREETING=hello-from-env", "--workdir", "/workspace", "--wait",
			"--", "sh", "-c", `echo "$GREETING in $(pwd)"; echo to-stderr >&2`)
		if code != 0 || !strings.HasPrefix(stdout, "hello-from-env in ") || !strings.Contains(stderr, "to-stderr") {
			t.Fatalf("exit %d\nstdout %q\nstderr %q\nworker:\n%s", code, stdout, stderr, w.logs)
		}
		if strings.Contains(w.logs.String(), "hello-from-env") {
			t.Error("the worker logged an env value")
		}
		_, _, code = s.enqueue("--image", "alpine:3", "--no-commit", "--wait", "--", "sh", "-c", "exit 7")
		if code != 7 {
			t.Errorf("agent exit 7 came back as %d", code)
		}
		metrics := w.metrics(t)
		for _, want := range []string{
			`bottleq_tasks_total{outcome="completed"} 2`,
			`bottleq_phase_duration_seconds_count{phase="exec"} 2`,
			`bottleq_pack_cache_total{result="hit"} 1`,
			`bottleq_vms_in_flight 0`,
			`bottleq_smolvm_calls_total{op="machine create",result="ok"} 2`,
		} {
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}

// TestFaultAtStartIsRetried: smolvm failing the first `machine start`
// fails the attempt; asynq retries it and the task completes.
func TestFaultAtStartIsRetried(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, s *stack) {
		w := s.worker("SMOLVM_SIM_FAULTS=start:1:1:agent operation failed: start machine: kvm not available: injected")
		stdout, stderr, code := s.enqueue("--image", "alpine:3", "--wait", "--", "echo", "survived")
		if code != 0 || stdout != "survived\n" {
			t.Fatalf("exit %d stdout %q stderr %q\n%s", code, stdout, stderr, w.logs)
		}
		if n := len(s.calls(func(c call) bool { return c.Op == "machine start" })); n != 2 {
			t.Errorf("%d starts, want 2 (fault, retry)", n)
		}
		if n := len(s.calls(func(c call) bool { return c.Op == "machine delete" })); n < 2 {
			t.Errorf("%d deletes, want one per attempt", n)
		}
	})
}

// TestInvalidPayloadIsArchived: a payload that can never run is archived on
// first delivery, without any smolvm call.
func TestInvalidPayloadIsArchived(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, s *stack) {
		s.worker()
		client := asynq.NewClient(asynq.RedisClientOpt{Addr: s.redis.Addr})
		defer client.Close()
		info, err := client.Enqueue(asynq.NewTask(tasks.TypeAgentRun, []byte(`{"image":"alpine","command":[]}`)), asynq.MaxRetry(5))
		if err != nil {
			t.Fatal(err)
		}
		insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: s.redis.Addr})
		defer insp.Close()
		got := waitState(t, insp, info.Queue, info.ID, asynq.TaskStateArchived)
		if !strings.Contains(got.LastErr, "command: must not be empty") || got.Retried != 0 {
			t.Errorf("archived with %q after %d retries", got.LastErr, got.Retried)
		}
		if c := s.calls(vmCalls); len(c) != 0 {
			t.Errorf("smolvm was called: %+v", c)
		}
	})
}

// TestPackOnce: 20 tasks of one image at concurrency 4 pack it once.
func TestPackOnce(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, s *stack) {
		s.worker("BOTTLEQ_CONCURRENCY=4", "SMOLVM_SIM_DELAY=pack=200ms")
		var wg sync.WaitGroup
		errs := make(chan string, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				stdout, stderr, code := s.enqueue("--image", "busybox:1", "--no-commit", "--wait", "--", "echo", fmt.Sprint(i))
				if code != 0 || stdout != fmt.Sprintf("%d\n", i) {
					errs <- fmt.Sprintf("task %d: exit %d %q %q", i, code, stdout, stderr)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
		if n := len(s.calls(imagePacks)); n != 1 {
			t.Errorf("%d image packs, want 1", n)
		}
	})
}

func waitState(t *testing.T, insp *asynq.Inspector, queue, id string, want asynq.TaskState) *asynq.TaskInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		info, err := insp.GetTaskInfo(queue, id)
		if err == nil && info.State == want {
			return info
		}
		select {
		case <-ctx.Done():
			t.Fatalf("task %s never reached %v (last: %+v, %v)", id, want, info, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
