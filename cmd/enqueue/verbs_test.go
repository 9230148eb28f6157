package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/cliflag"
	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/internal/testworker"
	"github.com/bot-bottle/bottleq/tasks"
)

// must runs the command and fails the test unless it exits code.
func must(t *testing.T, getenv func(string) string, code int, args ...string) (stdout, stderr string) {
	t.Helper()
	var e bytes.Buffer
	got, out := run(t, getenv, &e, args...)
	if got != code {
		t.Fatalf("enqueue %q: exit %d, want %d\nstdout %q\nstderr %q", args, got, code, out, e.String())
	}
	return out, e.String()
}

// refused checks a refusal: nothing on stdout, one line on stderr that
// contains want and no secret, and nothing enqueued on r.
func refused(t *testing.T, r asynq.RedisClientOpt, stdout, stderr, want string) {
	t.Helper()
	if !strings.HasPrefix(stderr, "enqueue: ") || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, want) {
		t.Errorf("stderr = %q, want one line containing %q", stderr, want)
	}
	if stdout != "" || strings.Contains(stderr, "pw-SECRET") {
		t.Errorf("stdout %q, stderr %q", stdout, stderr)
	}
	if qs := queues(t, r); len(qs) != 0 {
		t.Errorf("queues = %q, want none: it enqueued before refusing", qs)
	}
}

func TestVerbUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		wantText string
	}{
		{"status without an ID", []string{"status"}, "status: no task ID"},
		{"two IDs", []string{"status", "a", "--json", "b"}, `status: one task ID, not 2 (["a" "b"])`},
		{"blank ID", []string{"wait", " x"}, "wait: task ID: must not be blank"},
		{"control character in the ID", []string{"cancel", "a\nb"}, `cancel: task ID: "a\nb" holds a control character`},
		{"bad --queue", []string{"status", "--queue", "a b", "x"}, `--queue: "a b" may hold only letters, digits and _ . : -`},
		{"empty --queue", []string{"cancel", "--queue", "", "x"}, "--queue: must not be empty"},
		{"negative --wait-timeout", []string{"wait", "--wait-timeout", "-1s", "x"}, "--wait-timeout: must not be negative"},
		{"--json is status's", []string{"wait", "--json", "x"}, "flag provided but not defined: -json (see enqueue wait -h)"},
		{"--wait-timeout is not status's", []string{"status", "--wait-timeout", "1s", "x"}, "-wait-timeout"},
		{"bad --redis", []string{"status", "--redis", "http://:pw-SECRET@h:1", "x"}, "--redis: redis URL scheme"},
		{"negative --redis-wait before the verb", []string{"--redis-wait", "-1s", "status", "x"}, "--redis-wait: -1s must not be negative"},
		{"enqueue: bad --queue", []string{"--queue", "q{1}", "--image", "alpine", "--", "true"}, `--queue: "q{1}" may hold only`},
		{"enqueue: 65-character --queue", []string{"--queue", strings.Repeat("q", 65), "--image", "alpine", "--", "true"}, "--queue: is 65 bytes, more than 64"},
		{"enqueue: --wait-timeout without --wait", []string{"--wait-timeout", "1m", "--image", "alpine", "--", "true"}, "--wait-timeout: only with --wait"},
		{"enqueue: negative --wait-timeout", []string{"--wait", "--wait-timeout", "-1m", "--image", "alpine", "--", "true"}, "--wait-timeout: must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
			stdout, stderr := must(t, env(r), exitUsage, tt.args...)
			refused(t, r, stdout, stderr, tt.wantText)
		})
	}
}

func TestVersionAndVerbHelp(t *testing.T) {
	t.Parallel()
	getenv := func(string) string { return "" }
	for _, flag := range []string{"-version", "--version"} {
		if stdout, stderr := must(t, getenv, exitOK, flag); stdout != cliflag.VersionLine("enqueue")+"\n" || stderr != "" {
			t.Errorf("%s: stdout %q, stderr %q", flag, stdout, stderr)
		}
	}
	for name := range verbs {
		stdout, _ := must(t, getenv, exitOK, name, "-h")
		if !strings.HasPrefix(stdout, "Usage: enqueue "+name+" ") || !strings.Contains(stdout, "-queue queue") || !strings.Contains(stdout, "Exits") {
			t.Errorf("%s -h:\n%s", name, stdout)
		}
	}
	stdout, _ := must(t, getenv, exitOK, "-h")
	for _, want := range []string{"enqueue status [--queue Q] [--json] ID", "enqueue cancel", "Exit codes:", "-wait-timeout duration", "-version"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("-h does not mention %q", want)
		}
	}
}

// TestVerbStatusAndWait: status prints a finished task for people and, with
// --json, for scripts; wait hands on its output and exit code; an unknown
// task is exit 1 naming the queue.
func TestVerbStatusAndWait(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	testworker.Serve(t, r, &testworker.Agent{Phases: []string{tasks.PhasePack}, Run: func(context.Context, tasks.AgentRun, int) (tasks.Result, error) {
		return tasks.Result{ExitCode: 3, Stdout: "out\n", Stderr: "err\n", Host: "w1", VM: "bq-s1-a1", Tenant: "acme",
			Commit: "/srv/c/s1.smolmachine", Phases: []tasks.PhaseTime{{Name: "pack", Seconds: 0.25}, {Name: "exec", Seconds: 1.5}}}, nil
	}})
	e := env(r)
	must(t, e, 3, "--task-id", "s1", "--tenant", "acme", "--wait", "--image", "alpine", "--", "agent")

	stdout, _ := must(t, e, exitOK, "status", "s1")
	for _, want := range []string{
		"task       s1\n", "queue      default\n", "state      completed (attempt 1 of 6)\n", "exit code  3\n",
		"output     4 bytes on stdout, 4 on stderr (enqueue wait s1 prints them)\n", "phases     pack 0.250s, exec 1.500s\n",
		"host       w1 (vm bq-s1-a1)\n", "commit     /srv/c/s1.smolmachine (use --from task:s1)\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, stdout)
		}
	}

	// --redis may come before the verb, as in enqueue's own command line.
	noEnv := func(string) string { return "" }
	for _, args := range [][]string{{"--redis", "redis://" + r.Addr, "status", "s1"}, {"--redis=redis://" + r.Addr, "status", "s1"}} {
		if again, _ := must(t, noEnv, exitOK, args...); again != stdout {
			t.Errorf("enqueue %q printed %q, want %q", args, again, stdout)
		}
	}

	stdout, _ = must(t, e, exitOK, "status", "--json", "s1")
	var j struct {
		TaskID   string `json:"task_id"`
		State    string
		Retried  int
		MaxRetry int  `json:"max_retry"`
		ExitCode *int `json:"exit_code"`
		Result   *tasks.Result
	}
	if err := json.Unmarshal([]byte(stdout), &j); err != nil || strings.Count(stdout, "\n") != 1 {
		t.Fatalf("status --json printed %q: %v", stdout, err)
	}
	if j.TaskID != "s1" || j.State != "completed" || j.ExitCode == nil || *j.ExitCode != 3 || j.MaxRetry != tasks.DefaultMaxRetry || j.Result == nil || j.Result.Stdout != "out\n" || len(j.Result.Phases) != 2 {
		t.Errorf("status --json = %s", stdout)
	}

	stdout, stderr := must(t, e, 3, "wait", "s1")
	if stdout != "out\n" || !strings.Contains(stderr, "err\n") || !strings.Contains(stderr, "(use --from task:s1 --tenant acme)") {
		t.Errorf("wait: stdout %q, stderr %q", stdout, stderr)
	}

	_, stderr = must(t, e, exitFail, "status", "nope")
	if stderr != "enqueue: no task nope in queue default (a task on another queue needs --queue)\n" {
		t.Errorf("unknown task: %q", stderr)
	}
	_, stderr = must(t, e, exitFail, "wait", "--queue", "other", "s1")
	if stderr != "enqueue: no task s1 in queue other\n" {
		t.Errorf("task on another queue: %q", stderr)
	}
	_, stderr = must(t, e, exitFail, "cancel", "s1")
	if stderr != "enqueue: task s1 already ended completed: nothing to cancel\n" {
		t.Errorf("cancel of a completed task: %q", stderr)
	}
}

// TestVerbCancelWaiting: cancel ends a task nobody runs yet; status, wait
// and a second cancel then say so.
func TestVerbCancelWaiting(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr} // no worker
	e := env(r)
	must(t, e, exitOK, "--queue", "nobody", "--task-id", "c1", "--image", "alpine", "--", "agent")

	stdout, _ := must(t, e, exitOK, "cancel", "c1", "--queue", "nobody")
	if stdout != "task c1 cancelled (cancelled by enqueue cancel before it ran)\n" {
		t.Errorf("cancel printed %q", stdout)
	}
	stdout, _ = must(t, e, exitOK, "status", "--queue", "nobody", "--json", "c1")
	var j struct{ State string }
	if json.Unmarshal([]byte(stdout), &j); j.State != "cancelled" {
		t.Errorf("status --json after cancel: %s", stdout)
	}
	_, stderr := must(t, e, exitFail, "wait", "--queue", "nobody", "c1")
	if stderr != "enqueue: task c1 was cancelled (cancelled by enqueue cancel before it ran)\n" {
		t.Errorf("wait after cancel: %q", stderr)
	}
	must(t, e, exitOK, "cancel", "--queue", "nobody", "c1")
	i := asynq.NewInspector(r)
	defer i.Close()
	if info, err := i.GetTaskInfo("nobody", "c1"); err != nil || info.State != asynq.TaskStateArchived {
		t.Errorf("task after cancel: %+v, %v", info, err)
	}
}

// TestWaitOnAnUnservedQueue: --wait says when no worker serves the queue,
// and when it gives up it says where the task is and how to cancel it.
func TestWaitOnAnUnservedQueue(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	testworker.Serve(t, r, &testworker.Agent{}) // serves "default" only
	_, stderr := must(t, env(r), exitFail, "--queue", "critical", "--task-id", "w1", "--wait", "--wait-timeout", "4s", "--image", "alpine", "--", "agent")
	for _, want := range []string{
		"bottleq: task w1: enqueued on queue critical\n",
		"bottleq: task w1: still pending: no worker serves queue critical\n",
		"enqueue: gave up waiting after 4s (--wait-timeout): task w1 is still pending; it was not cancelled: run `enqueue cancel --queue critical w1`\n",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

// TestWaitInterrupted: after Ctrl-C (its context cancelled) wait says the
// task's real state.
func TestWaitInterrupted(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	must(t, env(r), exitOK, "--task-id", "i1", "--image", "alpine", "--", "agent")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	code := Run(ctx, []string{"wait", "i1"}, env(r), &stdout, &stderr)
	if want := "enqueue: stopped waiting: task i1 is still pending; it was not cancelled: run `enqueue cancel i1`\n"; code != exitFail || stderr.String() != want {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, stderr.String(), want)
	}
}
