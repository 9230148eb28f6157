package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

// TestUserCancelIsFinal: a running task cancelled by `enqueue cancel`, or
// by asynq's CancelProcessing alone as the dashboard's cancel button does,
// ends for good: its VM deleted, archived without a retry, its result and
// status saying cancelled, and its command never run again. (A worker's
// SIGTERM still requeues: TestSIGTERMRequeues.)
func TestUserCancelIsFinal(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ how, redis string }{
		{"enqueue cancel", "redis-server"},
		{"enqueue cancel", "miniredis"},
		{"dashboard", "redis-server"},
		{"dashboard", "miniredis"},
	} {
		t.Run(tt.how+"/"+tt.redis, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, tt.redis, "1.9.3")
			c, insp := s.client()
			w := s.worker()
			marks := t.TempDir()
			info := s.submit(c, tasks.AgentRun{Image: "alpine:3", Command: resumable(marks)}, asynq.MaxRetry(3))
			waitFile(t, filepath.Join(marks, "started"))

			var by string
			switch tt.how {
			case "enqueue cancel":
				start := time.Now()
				stdout, stderr, code := s.enqueue("cancel", info.ID)
				if code != 0 || stdout != fmt.Sprintf("task %s cancelled (cancelled by enqueue cancel)\n", info.ID) {
					t.Fatalf("enqueue cancel: exit %d, stdout %q, stderr %q\n%s", code, stdout, stderr, w.logs)
				}
				t.Logf("enqueue cancel returned after %v", time.Since(start).Round(time.Millisecond))
				by = "enqueue cancel"
			case "dashboard":
				// asynq's pub/sub: the worker must be subscribed first, which
				// it is by the time it runs a task.
				if err := insp.CancelProcessing(info.ID); err != nil {
					t.Fatal(err)
				}
				by = "asynq CancelProcessing (such as the dashboard's cancel)"
			}
			got := waitState(t, insp, info.Queue, info.ID, asynq.TaskStateArchived)
			if r := result(t, got); r.State != tasks.StateCancelled || r.Error != "cancelled by "+by || r.Phase != tasks.PhaseExec {
				t.Errorf("result %s, want cancelled by %s in phase exec", got.Result, by)
			}
			if got.Retried != 0 {
				t.Errorf("retried %d, want 0", got.Retried)
			}
			if ms := s.machines(); len(ms) != 0 {
				t.Errorf("machines left after the cancel: %q", ms)
			}

			stdout, _, code := s.enqueue("status", "--json", info.ID)
			var st struct{ State string }
			if err := json.Unmarshal([]byte(stdout), &st); code != 0 || err != nil || st.State != "cancelled" {
				t.Errorf("status --json: exit %d, %q (%v)", code, stdout, err)
			}
			_, stderr, code := s.enqueue("wait", info.ID)
			if code != 1 || !strings.Contains(stderr, "was cancelled") {
				t.Errorf("wait: exit %d, stderr %q", code, stderr)
			}

			// A retry would run within the worker's retry delay (50-200ms);
			// the task must stay archived, its command run once.
			time.Sleep(time.Second)
			if again, err := insp.GetTaskInfo(info.Queue, info.ID); err != nil || again.State != asynq.TaskStateArchived {
				t.Errorf("a second later the task is %+v (%v)", again, err)
			}
			if n := len(s.calls(func(c call) bool { return c.Op == "machine create" })); n != 1 {
				t.Errorf("%d machine creates, want 1: the task ran again", n)
			}
			if !strings.Contains(w.logs.String(), "task cancelled by a user: VM deleted, archived without retry") {
				t.Errorf("the worker did not log the cancel:\n%s", w.logs)
			}
		})
	}
}

// TestVersionFlags: -version prints the command's name and version.
func TestVersionFlags(t *testing.T) {
	t.Parallel()
	s := newStack(t, "miniredis", "1.9.3")
	stdout, stderr, code := s.enqueue("-version")
	if code != 0 || !strings.HasPrefix(stdout, "enqueue ") || stderr != "" {
		t.Errorf("enqueue -version: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
