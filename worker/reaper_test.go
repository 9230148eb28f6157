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
	first, err := r.Sweep(context.Background())
	if err != nil || len(first) != 0 {
		t.Fatalf("the first sweep reaped %q, %v: an orphan must be confirmed on a later sweep", first, err)
	}
	clock.advance(DefaultReapConfirm)
	reaped, err := r.Sweep(context.Background())
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
	if again, err := r.Sweep(context.Background()); err != nil || len(again) != 0 {
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
	r.Sweep(ctx) // heartbeat missing: a suspect
	clock.advance(DefaultReapConfirm)
	insp.servers = []*asynq.ServerInfo{server("host-a", "flaky")}
	if got, _ := r.Sweep(ctx); len(got) != 0 {
		t.Fatalf("reaped %q although its worker is back", got)
	}
	insp.servers = nil
	if got, _ := r.Sweep(ctx); len(got) != 0 {
		t.Fatalf("reaped %q without a fresh confirmation", got)
	}
	clock.advance(DefaultReapConfirm)
	if got, _ := r.Sweep(ctx); len(got) != 1 {
		t.Fatalf("reaped %q, want the VM once it stayed an orphan", got)
	}
}

// fakeClock is a Reaper's time: it stands still until advanced.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

// newFakeClock makes r run on a fake clock that starts now, on a whole
// second as smolvm's creation times are.
func newFakeClock(r *Reaper) *fakeClock {
	c := &fakeClock{t: time.Unix(time.Now().Unix(), 0)}
	r.now = c.now
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
			got, err := r.Sweep(context.Background())
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
	if _, err := r.Sweep(context.Background()); err == nil || !strings.Contains(err.Error(), "Deployment") {
		t.Errorf("Sweep with deployment prod-eu = %v, want an error naming Deployment", err)
	}
}
