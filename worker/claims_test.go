package worker

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// TestSimDuplicateRunKeepsFirstCommit: through the real client and
// simulator, the same attempt run twice after one another, as asynq's
// at-least-once delivery may, leaves one commit, the first run's: the store
// is create-only, so the second run finds the key taken by its own task and
// keeps what is there. A task from it reads what the first run wrote.
func TestSimDuplicateRunKeepsFirstCommit(t *testing.T) {
	t.Parallel()
	h, _, _ := simHandler(t, nil)
	var keys []string
	for _, word := range []string{"first", "second"} {
		p := tasks.AgentRun{Image: "alpine:3", Workdir: "/work", Command: []string{"sh", "-c", "echo " + word + " > run.txt"}}
		var w results
		if err := h.Run(context.Background(), Meta{ID: "twice"}, payload(t, p), &w); err != nil {
			t.Fatalf("%s run: %v", word, err)
		}
		keys = append(keys, w.result(t).CommitKey)
	}
	if keys[0] == "" || keys[0] != keys[1] {
		t.Fatalf("commit keys %q: want both runs to name one", keys)
	}
	var w results
	p := tasks.AgentRun{From: "task:twice", Workdir: "/work", Commit: tasks.Bool(false), Command: []string{"cat", "run.txt"}}
	if err := h.Run(context.Background(), Meta{ID: "reader"}, payload(t, p), &w); err != nil {
		t.Fatal(err)
	}
	if got := w.result(t).Stdout; got != "first\n" {
		t.Errorf("a task from the commit read %q, want the first run's %q", got, "first\n")
	}
}

// TestWarmDeleteFailureCounted: a pool VM no task got, whose delete fails
// every try when the pool shuts down, is logged at each try and once more
// as left to the reaper, and counted through Hooks.DeleteFailed (behind
// bottleq_vm_delete_failures_total).
func TestWarmDeleteFailureCounted(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.delete = func(_ context.Context, name string) error {
		return &smolvm.Error{Op: "machine delete", Machine: name, ExitCode: 1, Message: "injected"}
	}
	var mu sync.Mutex
	var counted []string
	h, logs := newHandler(t, f, func(c *Config) {
		c.Warm = WarmConfig{Images: map[string]int{"alpine:3": 1}}
		c.Hooks.DeleteFailed = func(vm string) {
			mu.Lock()
			defer mu.Unlock()
			counted = append(counted, vm)
		}
	})
	stop := startPool(t, h)
	vm := waitPool(t, h, "alpine:3", 1)[0]
	stop()
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(counted, []string{vm}) {
		t.Errorf("counted %q as failed deletes, want %q", counted, vm)
	}
	if n := f.count("delete " + vm); n != 3 {
		t.Errorf("%d deletes of %s, want 3 tries", n, vm)
	}
	if n := strings.Count(logs.String(), `"message":"delete failed"`); n != 3 {
		t.Errorf("%d failed deletes logged, want 3:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "pool VM left behind; the reaper will delete it") {
		t.Errorf("the VM left behind was not logged:\n%s", logs)
	}
}

// TestRetryDelay: a failed attempt waits longer the more it has failed,
// base doubling up to the cap, with jitter between half and all of it;
// zero settings take the defaults.
func TestRetryDelay(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		base, max time.Duration
		n         int
		lo, hi    time.Duration
	}{
		{"first retry", time.Second, time.Minute, 0, 500 * time.Millisecond, time.Second},
		{"second", time.Second, time.Minute, 1, time.Second, 2 * time.Second},
		{"fourth", time.Second, time.Minute, 3, 4 * time.Second, 8 * time.Second},
		{"at the cap", time.Second, time.Minute, 6, 30 * time.Second, time.Minute},
		{"far past the cap", time.Second, time.Minute, 200, 30 * time.Second, time.Minute},
		{"defaults", 0, 0, 0, DefaultRetryBase / 2, DefaultRetryBase},
		{"defaults at the cap", 0, 0, 200, DefaultRetryMax / 2, DefaultRetryMax},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			delay := retryDelay(tt.base, tt.max)
			seen := map[time.Duration]bool{}
			for range 200 {
				d := delay(tt.n, errors.New("smolvm failed"), nil)
				if d < tt.lo || d > tt.hi {
					t.Fatalf("retry %d waits %v, want %v to %v", tt.n, d, tt.lo, tt.hi)
				}
				seen[d] = true
			}
			if len(seen) < 2 {
				t.Errorf("retry %d always waits %v: no jitter", tt.n, slices.Collect(maps.Keys(seen)))
			}
		})
	}
}
