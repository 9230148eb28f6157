package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// logLine is one JSON line of the worker's log, with the fields the
// message tests read.
type logLine struct {
	Level   string `json:"level"`
	Message string `json:"message"`
	TaskID  string `json:"task_id"`
	Attempt int    `json:"attempt"`
	Error   string `json:"error"`
}

func logLines(t *testing.T, logs string) []logLine {
	t.Helper()
	var out []logLine
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l logLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// TestServeMessagesTellWhatHappens: under a real asynq server, a task whose
// `machine start` always fails, with --max-retry 2, logs "will retry" on
// its first two attempts only and "archived" on its third, with attempt
// numbers; an invalid payload logs one line, not asynq's "Retry
// exhausted" too; and neither archived task's LastErr carries asynq's
// ": skip retry for the task".
func TestServeMessagesTellWhatHappens(t *testing.T) {
	t.Parallel()
	f := newFake()
	doomed := map[string]bool{}
	for a := 1; a <= 5; a++ {
		doomed[VMName(DefaultDeployment, "doomed", a)] = true
	}
	f.start = func(_ context.Context, name string) error {
		if doomed[name] {
			return &smolvm.Error{Op: "machine start", Machine: name, ExitCode: 1, Message: "kvm not available"}
		}
		return nil
	}
	h, logs := newHandler(t, f, nil)
	opt := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, h, ServerConfig{Redis: opt, Logger: h.log, PollInterval: 5 * time.Millisecond,
			RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond})
	}()
	client := asynq.NewClient(opt)
	defer client.Close()
	insp := asynq.NewInspector(opt)
	defer insp.Close()
	for id, p := range map[string][]byte{"doomed": payload(t, basic), "bad": []byte(`{"image":"alpine:3","command":[]}`)} {
		if _, err := client.Enqueue(asynq.NewTask(tasks.TypeAgentRun, p), asynq.TaskID(id), asynq.MaxRetry(2)); err != nil {
			t.Fatal(err)
		}
	}
	archived := map[string]*asynq.TaskInfo{}
	for _, id := range []string{"doomed", "bad"} {
		archived[id] = awaitState(t, insp, id, asynq.TaskStateArchived)
	}
	stop()
	if err := <-served; err != nil {
		t.Fatal(err)
	}

	for id, want := range map[string]string{"doomed": "smolvm machine start bq-", "bad": "command: must not be empty"} {
		if got := archived[id].LastErr; !strings.HasPrefix(got, want) || strings.Contains(got, "skip retry") {
			t.Errorf("task %s's LastErr %q, want it to start %q, without asynq's text", id, got, want)
		}
	}
	if got := archived["bad"].Retried; got != 0 {
		t.Errorf("the invalid payload was retried %d times", got)
	}

	lines := logLines(t, logs.String())
	var failed, invalid []string
	archivedBy := map[string]int{}
	for _, l := range lines {
		switch {
		case strings.Contains(l.Message, "Retry exhausted"):
			t.Errorf("asynq's archive line was not translated: %+v", l)
		case l.Message == "asynq archived the task":
			if l.Level != "debug" {
				t.Errorf("asynq's archive line at %s, want debug", l.Level)
			}
			archivedBy[l.TaskID]++
		case l.TaskID == "doomed" && strings.HasPrefix(l.Message, "task failed"):
			failed = append(failed, fmt.Sprintf("%s %d %s", l.Level, l.Attempt, l.Message))
		case l.TaskID == "bad" && (l.Level == "warn" || l.Level == "error"):
			invalid = append(invalid, fmt.Sprintf("%s %s: %s", l.Level, l.Message, l.Error))
		}
	}
	wantFailed := []string{
		"warn 1 task failed; asynq will retry it (attempt 1 of 3)",
		"warn 2 task failed; asynq will retry it (attempt 2 of 3)",
		"error 3 task failed on its last attempt (3 of 3); archived",
	}
	if strings.Join(failed, "\n") != strings.Join(wantFailed, "\n") {
		t.Errorf("the failing task logged\n%s\nwant\n%s", strings.Join(failed, "\n"), strings.Join(wantFailed, "\n"))
	}
	if want := "warn invalid input; archived without retry: command: must not be empty"; len(invalid) != 1 || invalid[0] != want {
		t.Errorf("the invalid payload logged %q, want one line %q", invalid, want)
	}
	if archivedBy["doomed"] != 1 || archivedBy["bad"] != 1 {
		t.Errorf("asynq's archive lines at debug by task: %v, want one each", archivedBy)
	}
}

// awaitState polls task id of the default queue until it is in state want.
func awaitState(t *testing.T, insp *asynq.Inspector, id string, want asynq.TaskState) *asynq.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := insp.GetTaskInfo(tasks.DefaultQueue, id)
		if err == nil && info.State == want {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s never %v: %+v, %v", id, want, info, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNoRetry: noRetry's error is archived by asynq without a retry
// (asynq tests errors.Is(err, asynq.SkipRetry)), still is what it wraps,
// and reads as that alone.
func TestNoRetry(t *testing.T) {
	t.Parallel()
	ve := &tasks.ValidationError{Field: "command", Reason: "must not be empty"}
	err := noRetry(fmt.Errorf("decode: %w", ve))
	var got *tasks.ValidationError
	if !errors.Is(err, asynq.SkipRetry) || !errors.As(err, &got) || got != ve {
		t.Errorf("noRetry(%v) matches SkipRetry %v, the validation error %v", err, errors.Is(err, asynq.SkipRetry), got == ve)
	}
	if err.Error() != "decode: command: must not be empty" {
		t.Errorf("Error() = %q", err.Error())
	}
	if errors.Is(noRetry(errors.New("x")), asynq.RevokeTask) {
		t.Error("noRetry's error matches RevokeTask: asynq would drop the task instead of archiving it")
	}
}

// TestArchivedTaskID: asynq's archive warning, in the words of its
// processor, is recognised; other warnings are not.
func TestArchivedTaskID(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		msg, id string
		ok      bool
	}{
		{fmt.Sprintf("Retry exhausted for task id=%s", "7c1f-ab"), "7c1f-ab", true},
		{"Retry exhausted for task id=", "", false},
		{"Retry exhausted for task id=a b", "", false},
		{"Quitting worker. task id=7c1f-ab", "", false},
		{`Could not move task id=7c1f-ab from "a" to "b"; Will retry syncing`, "", false},
		{"retry exhausted for task id=7c1f-ab", "", false},
	} {
		t.Run(tt.msg, func(t *testing.T) {
			t.Parallel()
			if id, ok := archivedTaskID(tt.msg); ok != tt.ok || (ok && id != tt.id) {
				t.Errorf("archivedTaskID(%q) = %q, %v; want %q, %v", tt.msg, id, ok, tt.id, tt.ok)
			}
		})
	}
}

// TestFailedMsg: each way an attempt fails reads as what becomes of the
// task, with the attempt and the attempts asynq allows in all.
func TestFailedMsg(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		o    string
		m    Meta
		want string
	}{
		{OutcomeRetried, Meta{MaxRetry: 5}, "task failed; asynq will retry it (attempt 1 of 6)"},
		{OutcomeFailed, Meta{Retried: 5, MaxRetry: 5}, "task failed on its last attempt (6 of 6); archived"},
		{OutcomeFailed, Meta{}, "task failed on its last attempt (1 of 1); archived"},
		{OutcomeInvalid, Meta{Retried: 1, MaxRetry: 5}, "invalid input; archived without retry"},
		{OutcomeRequeued, Meta{MaxRetry: 5}, "task interrupted: a user's cancel, the worker's shutdown or a lost lease"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			if got := failedMsg(tt.o, tt.m); got != tt.want {
				t.Errorf("failedMsg(%s, %+v) = %q, want %q", tt.o, tt.m, got, tt.want)
			}
		})
	}
}
