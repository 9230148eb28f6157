package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

// timedCall is one line of the simulator's calls log, with when the call
// ended.
type timedCall struct {
	Time  time.Time `json:"time"`
	Op    string    `json:"op"`
	Name  string    `json:"name"`
	Image string    `json:"image"`
	Exit  int       `json:"exit"`
	Fault bool      `json:"fault"`
}

func (s *stack) timedCalls() []timedCall {
	s.t.Helper()
	f, err := os.Open(filepath.Join(s.simState, "calls.jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	var out []timedCall
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var c timedCall
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			s.t.Fatalf("calls log: %v", err)
		}
		out = append(out, c)
	}
	return out
}

// logLines returns the worker's JSON log lines with message msg.
func (p *proc) logLines(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(p.logs.String(), "\n") {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) == nil && l["message"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// poolReady waits until the worker has logged n pool VMs ready since it
// started, and returns their names in order.
func (p *proc) poolReady(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var names []string
		for _, l := range p.logLines("pool VM ready") {
			names = append(names, fmt.Sprint(l["vm"]))
		}
		if len(names) >= n {
			return names
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pool VMs ready after a minute, want %d\n%s", len(names), n, lastBytes(p.logs.String(), 20000))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func isWarm(vm string) bool { return strings.Contains(vm, "-warm_") }

// TestWarmClaim: with a warm pool, a task runs in a VM created and started
// before it was enqueued, with its own env and its own proxy credentials
// (the VM itself was created with the proxy's address only); the VM is
// deleted after the task and the pool makes another.
func TestWarmClaim(t *testing.T) {
	t.Parallel()
	s := newStack(t, "redis-server", "1.9.3")
	w := s.worker("BOTTLEQ_WARM=alpine:3=2", "SMOLVM_SIM_DELAY=create=30ms,start=100ms",
		"BOTTLEQ_EGRESS_LISTEN=127.0.0.1:0", "BOTTLEQ_METRICS_ADDR=off")
	pooled := w.poolReady(t, 2)
	for _, vm := range pooled {
		env := readFile(t, filepath.Join(s.simState, "machines", vm+".json"))
		if !strings.Contains(env, "HTTPS_PROXY=http://127.0.0.1:") || strings.Contains(env, "task:") || strings.Contains(env, "MARK") {
			t.Errorf("pool VM %s was created with %s: want the proxy's address, no credentials, no task env", vm, env)
		}
	}
	c, insp := s.client()
	enqueued := time.Now()
	var infos []*asynq.TaskInfo
	for _, mark := range []string{"mark-one-1234", "mark-two-5678"} {
		infos = append(infos, s.submit(c, tasks.AgentRun{Image: "alpine:3", Env: map[string]string{"MARK": mark}, Commit: tasks.Bool(false),
			Command: []string{"sh", "-c", `echo "$MARK $HTTPS_PROXY"`}}))
	}
	var creds []string
	var used []string
	for i, info := range infos {
		r := result(t, waitState(t, insp, info.Queue, info.ID, asynq.TaskStateCompleted))
		if !r.Warm || !slices.Contains(pooled, r.VM) || !slices.Equal(r.SkippedPhases, []string{"create", "start", "ready"}) {
			t.Fatalf("task %d: warm %v in %s, skipped %q; want one of the pool's %q", i, r.Warm, r.VM, r.SkippedPhases, pooled)
		}
		mark, proxy, _ := strings.Cut(strings.TrimSpace(r.Stdout), " ")
		if mark != []string{"mark-one-1234", "mark-two-5678"}[i] || !strings.HasPrefix(proxy, "http://task:") {
			t.Errorf("task %d saw MARK=%q HTTPS_PROXY=%q: want its own env and credentials", i, mark, proxy)
		}
		creds = append(creds, proxy)
		used = append(used, r.VM)
		for _, call := range s.timedCalls() {
			if call.Name != r.VM {
				continue
			}
			switch {
			case (call.Op == "machine create" || call.Op == "machine start") && call.Time.After(enqueued):
				t.Errorf("task %d: %s of its VM after the task was enqueued", i, call.Op)
			case call.Op == "machine exec" && call.Time.After(enqueued) && call.Exit != 0:
				t.Errorf("task %d: a failed exec in its VM after it was claimed", i)
			}
		}
	}
	if creds[0] == creds[1] || used[0] == used[1] {
		t.Errorf("two tasks shared credentials %q or a VM %q", creds, used)
	}
	w.poolReady(t, 4)
	for _, vm := range used {
		if slices.Contains(s.machines(), vm) {
			t.Errorf("%s outlived its task", vm)
		}
	}
}

// TestWarmRace: 100 tasks race for a pool of 3 at concurrency 8; by the
// simulator's calls log, no VM ran more than one task's command (the only
// exec that exits 42), and every task ran once.
func TestWarmRace(t *testing.T) {
	t.Parallel()
	s := newStack(t, "redis-server", "1.9.3")
	w := s.worker("BOTTLEQ_WARM=alpine:3=3", "BOTTLEQ_CONCURRENCY=8", "SMOLVM_SIM_DELAY=start=30ms")
	w.poolReady(t, 3)
	c, insp := s.client()
	var infos []*asynq.TaskInfo
	for range 100 {
		infos = append(infos, s.submit(c, tasks.AgentRun{Image: "alpine:3", Commit: tasks.Bool(false), Command: []string{"sh", "-c", "exit 42"}}))
	}
	warm := 0
	for _, info := range infos {
		r := result(t, waitStateWithin(t, insp, info.Queue, info.ID, asynq.TaskStateCompleted, 3*time.Minute))
		if r.ExitCode != 42 {
			t.Fatalf("task %s: exit code %d", info.ID, r.ExitCode)
		}
		if r.Warm {
			warm++
		}
	}
	perVM := map[string]int{}
	total := 0
	for _, call := range s.timedCalls() {
		if call.Op == "machine exec" && call.Exit == 42 {
			perVM[call.Name]++
			total++
		}
	}
	warmVMs := 0
	for vm, n := range perVM {
		if n > 1 {
			t.Errorf("%s ran %d tasks' commands", vm, n)
		}
		if isWarm(vm) {
			warmVMs++
		}
	}
	if total != 100 || warmVMs != warm || warm < 3 {
		t.Errorf("%d task commands ran, %d in pool VMs; results say %d warm: want 100, the same, at least 3", total, warmVMs, warm)
	}
	t.Logf("%d of 100 tasks warm", warm)
}

// TestWarmStartFailure: a pool VM whose start fails is deleted and never
// handed to a task; the pool makes another.
func TestWarmStartFailure(t *testing.T) {
	t.Parallel()
	s := newStack(t, "miniredis", "1.9.3")
	w := s.worker("BOTTLEQ_WARM=alpine:3=1", "SMOLVM_SIM_FAULTS=start:1:1")
	w.poolReady(t, 1)
	var bad string
	for _, call := range s.timedCalls() {
		if call.Op == "machine start" && call.Fault {
			bad = call.Name
		}
	}
	if !isWarm(bad) {
		t.Fatalf("the failed start was of %q, want a pool VM", bad)
	}
	c, insp := s.client()
	for i := range 3 {
		w.poolReady(t, i+1)
		info := s.submit(c, tasks.AgentRun{Image: "alpine:3", Commit: tasks.Bool(false), Command: []string{"true"}})
		r := result(t, waitState(t, insp, info.Queue, info.ID, asynq.TaskStateCompleted))
		if r.VM == bad || !r.Warm {
			t.Errorf("task %d ran in %s (warm %v); the failed VM is %s", i, r.VM, r.Warm, bad)
		}
	}
	var ops []string
	for _, call := range s.timedCalls() {
		if call.Name == bad {
			ops = append(ops, call.Op)
		}
	}
	if want := []string{"machine create", "machine status", "machine start", "machine delete"}; !slices.Equal(ops, want) {
		t.Errorf("calls on the VM whose start failed: %q, want %q", ops, want)
	}
}

// TestWarmSIGTERM: SIGTERM with a full pool and a task running in a warm
// VM deletes every VM before the worker exits 0.
func TestWarmSIGTERM(t *testing.T) {
	t.Parallel()
	s := newStack(t, "redis-server", "1.9.3")
	marks := t.TempDir()
	w := s.worker("BOTTLEQ_WARM=alpine:3=3", "BOTTLEQ_SHUTDOWN_TIMEOUT=300ms")
	w.poolReady(t, 3)
	c, _ := s.client()
	s.submit(c, tasks.AgentRun{Image: "alpine:3", Command: resumable(marks)})
	waitFile(t, filepath.Join(marks, "started"))
	w.poolReady(t, 4) // refilled
	if n := len(s.machines()); n != 4 {
		t.Fatalf("%d machines before SIGTERM, want 3 in the pool and the task's", n)
	}
	if err := w.stop(); err != nil {
		t.Fatalf("worker exit after SIGTERM: %v\n%s", err, w.logs)
	}
	if ms := s.machines(); len(ms) != 0 {
		t.Errorf("left after SIGTERM: %q", ms)
	}
}

// TestWarmKill9: pool VMs of a worker killed with SIGKILL are reaped by
// the next worker once the dead one's heartbeat expires, and that worker's
// own live pool VM is spared. Slow: asynq's heartbeat expires after 10 s
// and the reaper confirms an orphan for 15 s.
func TestWarmKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: reaping a dead worker's pool VMs takes ~30 s")
	}
	t.Parallel()
	s := newStack(t, "redis-server", "1.9.3")
	w1 := s.worker("BOTTLEQ_WARM=alpine:3=2")
	dead := w1.poolReady(t, 2)
	if err := w1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-w1.done
	w1.done <- nil
	w2 := s.worker("BOTTLEQ_WARM=alpine:3=1", "BOTTLEQ_REAP_INTERVAL=500ms", "BOTTLEQ_REAP_MIN_AGE=1s")
	mine := w2.poolReady(t, 1)[0]
	deadline := time.Now().Add(90 * time.Second)
	for {
		ms := s.machines()
		if slices.Equal(ms, []string{mine}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("machines %q, want only the live worker's %s\n%s", ms, mine, w2.logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, vm := range dead {
		if !strings.Contains(w2.logs.String(), vm) {
			t.Errorf("the reap of %s was not logged", vm)
		}
	}
}

// TestWarmPackRefresh: when the image's pack is made again (-pack-ttl),
// the pool's VMs of the old pack are deleted unclaimed and replaced by VMs
// created from the new pack.
func TestWarmPackRefresh(t *testing.T) {
	t.Parallel()
	s := newStack(t, "miniredis", "1.9.3")
	w := s.worker("BOTTLEQ_WARM=alpine:3=2", "BOTTLEQ_PACK_TTL=3s")
	old := w.poolReady(t, 2)
	w.poolReady(t, 4)
	calls := s.timedCalls()
	var packs []time.Time
	for _, c := range calls {
		if c.Op == "pack create" && c.Image != "" {
			packs = append(packs, c.Time)
		}
	}
	if len(packs) < 2 {
		t.Fatalf("%d image packs, want the first and a refresh", len(packs))
	}
	for _, vm := range old {
		deleted := false
		for _, c := range calls {
			if c.Name != vm {
				continue
			}
			if c.Op == "machine exec" && c.Time.After(packs[1]) {
				t.Errorf("%s, of the old pack, ran a command after the refresh", vm)
			}
			if c.Op == "machine delete" {
				deleted = true
				if c.Time.Before(packs[1]) {
					t.Errorf("%s deleted before the pack was refreshed", vm)
				}
			}
		}
		if !deleted {
			t.Errorf("%s, of the old pack, was not deleted", vm)
		}
	}
	fresh := 0
	for _, c := range calls {
		if c.Op == "machine create" && isWarm(c.Name) && c.Time.After(packs[1]) {
			fresh++
		}
	}
	if fresh < 2 {
		t.Errorf("%d pool VMs created from the new pack, want 2", fresh)
	}
}

// TestWarmColdPaths: a task that asks for other resources, boots from an
// earlier task's commit, or names another image takes the cold path; the
// pool's VM stays waiting.
func TestWarmColdPaths(t *testing.T) {
	t.Parallel()
	s := newStack(t, "miniredis", "1.9.3")
	w := s.worker("BOTTLEQ_WARM=alpine:3=1")
	w.poolReady(t, 1)
	c, insp := s.client()
	first := s.submit(c, tasks.AgentRun{Image: "alpine:3", Command: []string{"true"}})
	if r := result(t, waitState(t, insp, first.Queue, first.ID, asynq.TaskStateCompleted)); !r.Warm || r.Commit == "" {
		t.Fatalf("the first task: warm %v, commit %q; want warm and committed", r.Warm, r.Commit)
	}
	waiting := w.poolReady(t, 2)[1]
	for name, p := range map[string]tasks.AgentRun{
		"cpus":  {Image: "alpine:3", CPUs: 1},
		"mem":   {Image: "alpine:3", MemMiB: 512},
		"from":  {From: tasks.FromTaskPrefix + first.ID},
		"image": {Image: "busybox:1"},
	} {
		p.Command, p.Commit = []string{"true"}, tasks.Bool(false)
		info := s.submit(c, p)
		r := result(t, waitState(t, insp, info.Queue, info.ID, asynq.TaskStateCompleted))
		if r.Warm || isWarm(r.VM) || len(r.SkippedPhases) != 0 {
			t.Errorf("%s: warm %v in %s; want the cold path", name, r.Warm, r.VM)
		}
	}
	if ms := s.machines(); !slices.Equal(ms, []string{waiting}) {
		t.Errorf("machines %q, want the pool's %s waiting", ms, waiting)
	}
}
