package worker

import (
	"context"
	"errors"
	"slices"
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
	orphan := VMName("dead", 1)
	liveAttempt := VMName("running", 2)
	staleAttempt := VMName("running", 1)
	unknownAttempt := VMName("mystery", 1)
	young := VMName("young", 1)
	otherHostTask := VMName("elsewhere", 1)
	mineVM := VMName("mine", 1)
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
	r.Confirm = 30 * time.Millisecond
	first, err := r.Sweep(context.Background())
	if err != nil || len(first) != 0 {
		t.Fatalf("the first sweep reaped %q, %v: an orphan must be confirmed on a later sweep", first, err)
	}
	time.Sleep(2 * r.Confirm)
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
	vm := VMName("flaky", 1)
	f.machines[vm] = "running"
	f.created[vm] = time.Now().Add(-time.Hour).Unix()
	insp := &fakeInspector{retried: map[string]int{"flaky": 0}}
	r := &Reaper{Smolvm: f, Inspector: insp, Hostname: "host-a", Confirm: 30 * time.Millisecond}
	ctx := context.Background()
	r.Sweep(ctx) // heartbeat missing: a suspect
	time.Sleep(2 * r.Confirm)
	insp.servers = []*asynq.ServerInfo{server("host-a", "flaky")}
	if got, _ := r.Sweep(ctx); len(got) != 0 {
		t.Fatalf("reaped %q although its worker is back", got)
	}
	insp.servers = nil
	if got, _ := r.Sweep(ctx); len(got) != 0 {
		t.Fatalf("reaped %q without a fresh confirmation", got)
	}
	time.Sleep(2 * r.Confirm)
	if got, _ := r.Sweep(ctx); len(got) != 1 {
		t.Fatalf("reaped %q, want the VM once it stayed an orphan", got)
	}
}
