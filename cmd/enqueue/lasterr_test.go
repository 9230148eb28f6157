package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/internal/testworker"
	"github.com/bot-bottle/bottleq/tasks"
)

// TestShownErr: asynq's SkipRetry text, which older workers left at the
// end of an archived task's error, is cut off; nothing else is.
func TestShownErr(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, want string }{
		{"image: registry evil.example is not allowed: skip retry for the task", "image: registry evil.example is not allowed"},
		{fmt.Errorf("from: no commit: %w", asynq.SkipRetry).Error(), "from: no commit"},
		{"image: registry evil.example is not allowed", "image: registry evil.example is not allowed"},
		{"skip retry for the task: smolvm machine start: exit 1", "skip retry for the task: smolvm machine start: exit 1"},
		{"skip retry for the task", "skip retry for the task"},
		{"", ""},
	} {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			if got := shownErr(tt.in); got != tt.want {
				t.Errorf("shownErr(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestOlderWorkersArchivedError: a task an older worker archived, its
// LastErr ending in asynq's ": skip retry for the task", reads as the
// user's message alone in --wait's last line, status and status --json.
func TestOlderWorkersArchivedError(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	testworker.Serve(t, r, &testworker.Agent{Run: func(context.Context, tasks.AgentRun, int) (tasks.Result, error) {
		return tasks.Result{}, fmt.Errorf("from: no commit for task x: %w", asynq.SkipRetry) // as older workers wrapped it
	}})
	e := env(r)
	const msg = "from: no commit for task x"

	_, stderr := must(t, e, exitFail, "--task-id", "old1", "--wait", "--image", "alpine", "--", "agent")
	if want := "enqueue: task old1 failed: " + msg + "\n"; !strings.HasSuffix(stderr, want) {
		t.Errorf("--wait's stderr %q, want it to end %q", stderr, want)
	}
	stdout, _ := must(t, e, exitOK, "status", "old1")
	if want := "error      " + msg + "\n"; !strings.Contains(stdout, want) || strings.Contains(stdout, "skip retry") {
		t.Errorf("status printed\n%s\nwant a line %q", stdout, want)
	}
	stdout, _ = must(t, e, exitOK, "status", "--json", "old1")
	var j struct {
		LastError string `json:"last_error"`
	}
	if err := json.Unmarshal([]byte(stdout), &j); err != nil || j.LastError != msg {
		t.Errorf("status --json printed %q (%v), want last_error %q", stdout, err, msg)
	}
}
