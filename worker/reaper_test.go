package worker

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

type fakeInspector struct {
	servers []*asynq.ServerInfo
	retried map[string]int // task ID → retries; missing: GetTaskInfo fails
}

func (f *fakeInspector) Servers() ([]*asynq.ServerInfo, error) { return f.servers, nil }

func (f *fakeInspector) GetTaskInfo(_, id string) (*asynq.TaskInfo, error) {
	n, ok := f.retried[id]
	if !ok {
		return nil, errors.New("task not found")
	}
	return &asynq.TaskInfo{ID: id, Retried: n}, nil
}

func server(host string, taskIDs ...string) *asynq.ServerInfo {
	s := &asynq.ServerInfo{Host: host}
	for _, id := range taskIDs {
		s.ActiveWorkers = append(s.ActiveWorkers, &asynq.WorkerInfo{TaskID: id, Queue: "default"})
	}
	return s
}

func TestReaperSweep(t *testing.T) {
	t.Parallel()
	f := newFake()
	old := time.Now().Add(-time.Hour).Unix()
	add := func(name string, created int64) {
		f.machines[name] = "running"
		f.created[name] = created
	}
	orphan := VMName(DefaultDeployment, "dead", 1)
	liveAttempt := VMName(DefaultDeployment, "running", 2)
	staleAttempt := VMName(DefaultDeployment, "running", 1)
	unknownAttempt := VMName(DefaultDeployment, "mystery", 1)
	young := VMName(DefaultDeployment, "young", 1)
	otherHostTask := VMName(DefaultDeployment, "elsewhere", 1)
	mineVM := VMName(DefaultDeployment, "mine", 1)
	add(orphan, old)
	add(liveAttempt, old)
	add(staleAttempt, old)
	add(unknownAttempt, old)
	add(young, time.Now().Unix())
	add(otherHostTask, old)
	add(mineVM, old)
	add("not-ours", old)

	h, _ := newHandler(t, f, nil)
	h.own(mineVM, true)
	var reapedHook []string
	r := &Reaper{
		Smolvm: f, Handler: h, Hostname: "host-a",
		Inspector: &fakeInspector{
			servers: []*asynq.ServerInfo{server("host-a", "running", "mystery"), server("host-b", "elsewhere")},
			retried: map[string]int{"running": 1, "elsewhere": 0},
		},
		Reaped: func(vm string) { reapedHook = append(reapedHook, vm) },
	}
	clock := newFakeClock(r)
	first, err := r.sweepNow(context.Background())
	if err != nil || len(first) != 0 {
		t.Fatalf("the first sweep reaped %q, %v: an orphan must be confirmed on a later sweep", first, err)
	}
	clock.advance(DefaultReapConfirm)
	reaped, err := r.sweepNow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{orphan, staleAttempt, otherHostTask}
	slices.Sort(want)
	slices.Sort(reaped)
	slices.Sort(reapedHook)
	if !slices.Equal(reaped, want) || !slices.Equal(reapedHook, want) {
		t.Errorf("reaped %q (hook %q), want %q", reaped, reapedHook, want)
	}
	left := f.left()
	slices.Sort(left)
	wantLeft := []string{liveAttempt, unknownAttempt, young, mineVM, "not-ours"}
	slices.Sort(wantLeft)
	if !slices.Equal(left, wantLeft) {
		t.Errorf("left %q, want %q", left, wantLeft)
	}
	if again, err := r.sweepNow(context.Background()); err != nil || len(again) != 0 {
		t.Errorf("second sweep reaped %q, %v", again, err)
	}
}

// TestReaperForgetsWhatCameBack: a VM that looked orphaned (its worker's
// heartbeat missed) but shows up live on the next sweep is spared, and its
// confirmation starts over.
func TestReaperForgetsWhatCameBack(t *testing.T) {
	t.Parallel()
	f := newFake()
	vm := VMName(DefaultDeployment, "flaky", 1)
	f.machines[vm] = "running"
	f.created[vm] = time.Now().Add(-time.Hour).Unix()
	insp := &fakeInspector{retried: map[string]int{"flaky": 0}}
	r := &Reaper{Smolvm: f, Inspector: insp, Hostname: "host-a"}
	clock := newFakeClock(r)
	ctx := context.Background()
	r.sweepNow(ctx) // heartbeat missing: a suspect
	clock.advance(DefaultReapConfirm)
	insp.servers = []*asynq.ServerInfo{server("host-a", "flaky")}
	if got, _ := r.sweepNow(ctx); len(got) != 0 {
		t.Fatalf("reaped %q although its worker is back", got)
	}
	insp.servers = nil
	if got, _ := r.sweepNow(ctx); len(got) != 0 {
		t.Fatalf("reaped %q without a fresh confirmation", got)
	}
	clock.advance(DefaultReapConfirm)
	if got, _ := r.sweepNow(ctx); len(got) != 1 {
		t.Fatalf("reaped %q, want the VM once it stayed an orphan", got)
	}
}

// fakeClock is a Reaper's time: now stands still until advanced, and Run's
// waits return at once, moving it on and recording how long each was.
// After stopAfter waits it cancels Run's context and never returns.
type fakeClock struct {
	mu        sync.Mutex
	t         time.Time
	waits     []time.Duration
	stopAfter int
	cancel    func()
}

// newFakeClock makes r run on a fake clock that starts now, on a whole
// second as smolvm's creation times are.
func newFakeClock(r *Reaper) *fakeClock {
	c := &fakeClock{t: time.Unix(time.Now().Unix(), 0)}
	r.now, r.after = c.now, c.after
	return c
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *fakeClock) after(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	if len(c.waits) >= c.stopAfter {
		c.cancel()
		return nil
	}
	c.t = c.t.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.t
	return ch
}

// dyingInspector is asynq's view of a worker on host-a that died at the
// start of the test while running task "dead": its heartbeat lists the task
// until it expires, 10 s later.
type dyingInspector struct {
	clock   *fakeClock
	expires time.Time
}

func (d *dyingInspector) Servers() ([]*asynq.ServerInfo, error) {
	if d.clock.now().Before(d.expires) {
		return []*asynq.ServerInfo{server("host-a", "dead")}, nil
	}
	return nil, nil
}

func (d *dyingInspector) GetTaskInfo(_, id string) (*asynq.TaskInfo, error) {
	return &asynq.TaskInfo{ID: id}, nil
}

// TestReaperRunSchedule: after a restart, Run sweeps again as soon as an
// orphan can have become one (its dead worker's heartbeat expired, its
// MinAge passed) and once its confirmation time has passed, not a whole
// Interval later; so the orphan a crashed worker left is gone within
// MinAge + Confirm (45 s) of its successor's start. With nothing to wait
// for, it sweeps every Interval.
func TestReaperRunSchedule(t *testing.T) {
	t.Parallel()
	s := time.Second
	for _, tt := range []struct {
		name      string
		age       time.Duration // of the orphan when the reaper starts; 0: no orphan
		heartbeat bool          // the dead worker's heartbeat has not expired yet
		waits     []time.Duration
		reapedAt  time.Duration
	}{
		{"old orphan, heartbeat expired", time.Hour, false, []time.Duration{15 * s, 60 * s}, 15 * s},
		{"old orphan, heartbeat alive", time.Hour, true, []time.Duration{15 * s, 15 * s, 60 * s}, 30 * s},
		{"young orphan, heartbeat alive", 25 * s, true, []time.Duration{5 * s, 10 * s, 15 * s, 60 * s}, 30 * s},
		{"new orphan", 1 * s, false, []time.Duration{15 * s, 14 * s, 15 * s, 60 * s}, 44 * s},
		{"nothing to reap", 0, false, []time.Duration{15 * s, 60 * s, 60 * s}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake()
			r := &Reaper{Smolvm: f, Hostname: "host-a"}
			clock := newFakeClock(r)
			start := clock.now()
			insp := &dyingInspector{clock: clock, expires: start}
			if tt.heartbeat {
				insp.expires = start.Add(10 * s)
			}
			r.Inspector = insp
			vm := VMName(DefaultDeployment, "dead", 1)
			if tt.age > 0 {
				f.machines[vm] = "running"
				f.created[vm] = start.Add(-tt.age).Unix()
			}
			var reapedAt time.Duration
			r.Reaped = func(string) { reapedAt = clock.now().Sub(start) }
			ctx, cancel := context.WithCancel(context.Background())
			clock.cancel, clock.stopAfter = cancel, len(tt.waits)
			r.Run(ctx)
			if !slices.Equal(clock.waits, tt.waits) {
				t.Errorf("Run waited %v between sweeps, want %v", clock.waits, tt.waits)
			}
			if reapedAt != tt.reapedAt || len(f.left()) != 0 {
				t.Errorf("reaped %v after the start (left %q), want %v", reapedAt, f.left(), tt.reapedAt)
			}
		})
	}
}

// TestReapersOfTwoDeployments: two deployments share one smolvm, each with
// its own Redis database, so neither's asynq lists the other's tasks. Each
// reaper deletes its own deployment's orphan and leaves every VM of the
// other deployment alone, live or not, and machines bottleq did not name.
func TestReapersOfTwoDeployments(t *testing.T) {
	t.Parallel()
	f := newFake()
	old := time.Now().Add(-time.Hour).Unix()
	depA, depB := DeploymentOf("127.0.0.1:6379", 1), DeploymentOf("127.0.0.1:6379", 2)
	vms := map[string]string{
		"liveA": VMName(depA, "job", 1), "deadA": VMName(depA, "gone", 1),
		"liveB": VMName(depB, "job", 1), "deadB": VMName(depB, "gone", 1),
		"legacy": "bq-job-0123456789-a1", "other": "not-ours",
	}
	for _, vm := range vms {
		f.machines[vm] = "running"
		f.created[vm] = old
	}
	reaper := func(dep string) (*Reaper, *fakeClock) {
		r := &Reaper{Smolvm: f, Deployment: dep, Hostname: "host-a", Inspector: &fakeInspector{
			servers: []*asynq.ServerInfo{server("host-a", "job")},
			retried: map[string]int{"job": 0},
		}}
		return r, newFakeClock(r)
	}
	a, clockA := reaper(depA)
	b, clockB := reaper(depB)
	var reaped []string
	for range 3 {
		for _, r := range []*Reaper{a, b} {
			got, err := r.sweepNow(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			reaped = append(reaped, got...)
		}
		clockA.advance(DefaultReapConfirm)
		clockB.advance(DefaultReapConfirm)
	}
	want := []string{vms["deadA"], vms["deadB"]}
	slices.Sort(reaped)
	slices.Sort(want)
	if !slices.Equal(reaped, want) {
		t.Errorf("reaped %q, want each deployment's own orphan once: %q", reaped, want)
	}
	left := f.left()
	slices.Sort(left)
	wantLeft := []string{vms["liveA"], vms["liveB"], vms["legacy"], vms["other"]}
	slices.Sort(wantLeft)
	if !slices.Equal(left, wantLeft) {
		t.Errorf("left %q, want %q", left, wantLeft)
	}
}

// TestReaperRefusesABadDeployment: a deployment with a '-' would make
// another deployment's names look like its own.
func TestReaperRefusesABadDeployment(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.machines[VMName("prod", "x", 1)] = "stopped"
	r := &Reaper{Smolvm: f, Inspector: &fakeInspector{}, Deployment: "prod-eu"}
	newFakeClock(r)
	if _, err := r.sweepNow(context.Background()); err == nil || !strings.Contains(err.Error(), "Deployment") {
		t.Errorf("Sweep with deployment prod-eu = %v, want an error naming Deployment", err)
	}
}
