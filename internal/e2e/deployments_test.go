package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

// TestDeploymentsShareSmolvm: two deployments, one on Redis database 1 and
// one on database 2, share one smolvm. Each reaper sweeps often and sees
// the other deployment's VM, whose task its own Redis does not know, for
// longer than it takes to confirm an orphan; neither touches it, and both
// tasks complete on their first attempt.
func TestDeploymentsShareSmolvm(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: an orphan is confirmed after 15 s")
	}
	t.Parallel()
	one := newStack(t, "redis-server", "1.9.3")
	two := &stack{t: t, redis: one.redis, version: one.version, simState: one.simState, dataDir: t.TempDir()}
	one.url, two.url = one.redis.URL()+"/1", one.redis.URL()+"/2"
	reap := []string{"BOTTLEQ_REAP_INTERVAL=200ms", "BOTTLEQ_REAP_MIN_AGE=1s"}
	workers := []*proc{one.worker(reap...), two.worker(reap...)}
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
