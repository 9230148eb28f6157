package enqueue_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/internal/testworker"
	"github.com/bot-bottle/bottleq/tasks"
)

// summary sums up events: "phase:exec", "output:stdout:hi\n", "end:done".
func summary(es []enqueue.Event) []string {
	var out []string
	for _, e := range es {
		s := e.Type
		switch e.Type {
		case enqueue.EventAttempt:
			s += fmt.Sprint(":", e.Attempt)
		case enqueue.EventPhase:
			s += ":" + e.Phase
		case enqueue.EventOutput:
			s += ":" + e.Stream + ":" + string(e.Data)
		case enqueue.EventEnd:
			s += ":" + e.Outcome
		}
		out = append(out, s)
	}
	return out
}

// TestFollow: Follow passes on each event while the task runs (the stand-in
// worker moves on from a phase only once Follow has passed it on), goes on
// through a retry, and returns once the task completed; resumed after an
// event's ID, it passes on only the events after it.
func TestFollow(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	c := newClient(t, r)
	seen := make(chan string, 16)
	phases := []string{tasks.PhasePack, tasks.PhaseExec}
	testworker.Serve(t, r, &testworker.Agent{
		Phases: phases,
		Step: func(ctx context.Context, phase string) error {
			for {
				select {
				case got := <-seen:
					if got == phase {
						return nil
					}
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		},
		Run: func(_ context.Context, _ tasks.AgentRun, attempt int) (tasks.Result, error) {
			if attempt == 1 {
				return tasks.Result{}, errors.New("kvm not available")
			}
			return tasks.Result{Stdout: "hi\n", Stderr: "warn\n", ExitCode: 3}, nil
		},
	})
	ctx := context.Background()
	info, err := c.Enqueue(ctx, payload(), enqueue.Options{})
	if err != nil {
		t.Fatal(err)
	}

	var all []enqueue.Event
	err = c.Follow(ctx, info.Queue, info.ID, func(e enqueue.Event) error {
		all = append(all, e)
		if e.Type == enqueue.EventPhase {
			seen <- e.Phase
		}
		return nil
	}, "")
	if err != nil {
		t.Fatalf("Follow: %v", err)
	}
	want := []string{
		"attempt:1", "phase:pack", "phase:exec", "end:failed",
		"attempt:2", "phase:pack", "phase:exec", "output:stdout:hi\n", "output:stderr:warn\n", "end:done",
	}
	if got := summary(all); !reflect.DeepEqual(got, want) {
		t.Fatalf("Follow passed on %q, want %q", got, want)
	}
	if out, err := c.Status(ctx, info.Queue, info.ID); err != nil || out.State != asynq.TaskStateCompleted {
		t.Errorf("Follow returned with the task %v (%v)", out.State, err)
	}
	if e := all[3]; e.Error != "kvm not available" || e.Attempt != 1 {
		t.Errorf("attempt 1 ended %+v", e)
	}
	if e := all[9]; e.ExitCode != 3 || e.Attempt != 2 {
		t.Errorf("attempt 2 ended %+v", e)
	}

	for _, k := range []int{0, 4, 8, 9} {
		var later []enqueue.Event
		if err := c.Follow(ctx, info.Queue, info.ID, func(e enqueue.Event) error { later = append(later, e); return nil }, all[k].ID); err != nil {
			t.Fatalf("Follow from %s: %v", all[k].ID, err)
		}
		if len(later) != len(all[k+1:]) || (len(later) > 0 && !reflect.DeepEqual(later, all[k+1:])) {
			t.Errorf("Follow from event %d passed on %q, want %q", k, summary(later), summary(all[k+1:]))
		}
	}
}

// TestFollowErrors: fn's error ends Follow as it is; an unknown task, a
// from that is no event ID and an ended ctx are errors of their own.
func TestFollowErrors(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	c := newClient(t, r)
	testworker.Serve(t, r, &testworker.Agent{Phases: []string{tasks.PhasePack}})
	ctx := context.Background()
	info, err := c.Enqueue(ctx, payload(), enqueue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("enough")
	n := 0
	err = c.Follow(ctx, info.Queue, info.ID, func(enqueue.Event) error { n++; return stop }, "")
	if err != stop || n != 1 {
		t.Errorf("Follow with fn failing = %v after %d events, want fn's error after one", err, n)
	}
	nop := func(enqueue.Event) error { return nil }
	if err := c.Follow(ctx, "", "nope", nop, ""); !errors.Is(err, enqueue.ErrNotFound) {
		t.Errorf("unknown task: %v, want ErrNotFound", err)
	}
	for _, from := range []string{"$", "abc", "1-", "-1", "1-2-3"} {
		if err := c.Follow(ctx, info.Queue, info.ID, nop, from); !errors.Is(err, enqueue.ErrInvalidEventID) {
			t.Errorf("from %q: %v, want ErrInvalidEventID", from, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Follow(cctx, info.Queue, info.ID, nop, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("ended ctx: %v", err)
	}
}

// TestFollowWithoutLiveOutput: a task with no live output (expired, or run
// by an older worker) has no events, and Follow returns once it ended.
func TestFollowWithoutLiveOutput(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	c := newClient(t, r)
	testworker.Serve(t, r, &testworker.Agent{NoLiveOutput: true, Phases: []string{tasks.PhasePack},
		Run: func(context.Context, tasks.AgentRun, int) (tasks.Result, error) {
			return tasks.Result{Stdout: "x"}, nil
		}})
	ctx := context.Background()
	info, err := c.Enqueue(ctx, payload(), enqueue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := c.Follow(ctx, info.Queue, info.ID, func(e enqueue.Event) error { got = append(got, e.Type); return nil }, ""); err != nil || len(got) != 0 {
		t.Errorf("Follow = %v with events %q", err, got)
	}
	if out, _ := c.Status(ctx, info.Queue, info.ID); out.State != asynq.TaskStateCompleted || !strings.Contains(out.Result.Stdout, "x") {
		t.Errorf("task %v, result %+v", out.State, out.Result)
	}
}
