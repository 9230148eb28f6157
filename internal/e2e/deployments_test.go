package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

// TestDeploymentsShareSmolvm: two deployments share one smolvm: one on Redis
// database 1 and one on database 2, or two workers each with an embedded
// Redis on a port of its own. Each reaper sweeps often and sees the other
// deployment's VM, whose task its own Redis does not know, for longer than
// it takes to confirm an orphan; neither touches it, and both tasks
// complete on their first attempt.
func TestDeploymentsShareSmolvm(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: an orphan is confirmed after 15 s")
	}
	t.Parallel()
	reap := []string{"BOTTLEQ_REAP_INTERVAL=200ms", "BOTTLEQ_REAP_MIN_AGE=1s"}
	for _, tt := range []struct {
		name  string
		start func(t *testing.T) (one, two *stack, workers []*proc)
	}{
		{"Redis databases 1 and 2", func(t *testing.T) (*stack, *stack, []*proc) {
			one := newStack(t, "redis-server", "1.9.3")
			two := &stack{t: t, redis: one.redis, version: one.version, simState: one.simState, dataDir: t.TempDir()}
			one.url, two.url = one.redis.URL()+"/1", one.redis.URL()+"/2"
			return one, two, []*proc{one.worker(reap...), two.worker(reap...)}
		}},
		{"embedded Redis on port 0", func(t *testing.T) (*stack, *stack, []*proc) {
			one := &stack{t: t, version: "1.9.3", simState: t.TempDir(), dataDir: t.TempDir()}
			two := &stack{t: t, version: one.version, simState: one.simState, dataDir: t.TempDir()}
			return one, two, []*proc{one.embeddedWorker(reap...), two.embeddedWorker(reap...)}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			one, two, workers := tt.start(t)
			var infos []*asynq.TaskInfo
			var insps []*asynq.Inspector
			for _, s := range []*stack{one, two} {
				c, insp := s.client()
				// Longer than MinAge and the reaper's 15 s confirmation together.
				infos = append(infos, s.submit(c, tasks.AgentRun{Image: "alpine:3", Command: []string{"sh", "-c", "sleep 20; echo done"}, Commit: tasks.Bool(false)}, asynq.MaxRetry(0)))
				insps = append(insps, insp)
			}
			var vms []string
			for i, info := range infos {
				got := waitEnd(t, insps[i], info.Queue, info.ID, 2*time.Minute)
				if got.State != asynq.TaskStateCompleted || result(t, got).Stdout != "done\n" {
					t.Errorf("deployment %d: task ended %v, %q: %s\n%s", i+1, got.State, got.LastErr, got.Result, workers[i].logs)
					continue
				}
				vms = append(vms, result(t, got).VM)
			}
			if len(vms) == 2 && strings.SplitN(vms[0], "-", 3)[1] == strings.SplitN(vms[1], "-", 3)[1] {
				t.Errorf("both deployments name their VMs %q and %q: one deployment ID", vms[0], vms[1])
			}
			for i, w := range workers {
				if strings.Contains(w.logs.String(), "reaped orphan VM") {
					t.Errorf("deployment %d's worker reaped a VM:\n%s", i+1, w.logs)
				}
			}
			if ms := one.machines(); len(ms) != 0 {
				t.Errorf("machines left: %q", ms)
			}
		})
	}
}

// embeddedWorker starts cmd/worker with an embedded Redis on a free port,
// with env added, and points the stack at that Redis.
func (s *stack) embeddedWorker(env ...string) *proc {
	s.t.Helper()
	cmd := exec.Command(bins.worker, "-embedded-redis", "127.0.0.1:0", "-log-format", "json")
	cmd.Env = append(os.Environ(), s.simEnv()...)
	cmd.Env = append(cmd.Env, "REDIS_URL=", "SMOLVM_BIN="+bins.sim, "BOTTLEQ_DATA_DIR="+s.dataDir, "BOTTLEQ_POLL_INTERVAL=20ms", "BOTTLEQ_METRICS_ADDR=off")
	cmd.Env = append(cmd.Env, env...)
	p := s.startProc(cmd)
	for _, line := range strings.Split(p.logs.String(), "\n") {
		var l struct{ Addr, Message string }
		if json.Unmarshal([]byte(line), &l) == nil && strings.Contains(l.Message, "embedded in-memory Redis") {
			s.url = "redis://" + l.Addr
		}
	}
	if s.url == "" {
		s.t.Fatalf("no embedded Redis address in the worker's log:\n%s", p.logs)
	}
	return p
}

// waitEnd waits until a task is completed or archived, within d.
func waitEnd(t *testing.T, insp *asynq.Inspector, queue, id string, d time.Duration) *asynq.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		info, err := insp.GetTaskInfo(queue, id)
		if err == nil && (info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived) {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s did not end within %v (last: %+v, %v)", id, d, info, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
