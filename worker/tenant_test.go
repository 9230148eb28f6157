package worker

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// fakeQueue is a HostOfTask over tasks the test says the queue holds.
type fakeQueue struct {
	mu    sync.Mutex
	tasks map[string]EarlierTask
}

func (q *fakeQueue) set(id string, t EarlierTask) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.tasks == nil {
		q.tasks = map[string]EarlierTask{}
	}
	q.tasks[id] = t
}

func (q *fakeQueue) hostOf(_ context.Context, id string) (EarlierTask, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t, ok := q.tasks[id]; ok {
		return t, nil
	}
	return EarlierTask{}, ErrNoSuchTask
}

// fromErr runs a task of tenant from task:id on h and returns its error,
// which must be a from error that is not retried and came before any VM.
func fromErr(t *testing.T, h *Handler, f *fakeSmolvm, tenant, id string) string {
	t.Helper()
	before := f.count("create")
	p := tasks.AgentRun{Tenant: tenant, From: "task:" + id, Command: []string{"cat", "/root/creds.txt"}}
	err := h.Run(context.Background(), Meta{ID: "reader-" + tenant + "-" + id}, payload(t, p), nil)
	var ce *CommitError
	if !errors.As(err, &ce) || !errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("tenant %s from task:%s: err = %v, want a *CommitError, not retried", tenant, id, err)
	}
	if f.count("create") != before {
		t.Fatalf("tenant %s from task:%s created a VM", tenant, id)
	}
	return err.Error()
}

// TestHandlerTenantsApart: tenant globex cannot start from acme's commit,
// on the host that made it or on another host of the pool (sharing its
// store) that asks the queue, and the refusal is byte for byte the one for
// a task that does not exist. acme itself starts from it on either host,
// and hears what became of a commit it has not got.
func TestHandlerTenantsApart(t *testing.T) {
	t.Parallel()
	q := &fakeQueue{}
	f := newFake()
	h, _ := newHandler(t, f, func(c *Config) { c.HostOfTask = q.hostOf })
	f.exec = func(_ context.Context, vm string, _ []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
		f.put(vm, "/root/creds.txt", []byte("s3cret\n"), 0o600)
		return smolvm.ExecResult{}, nil
	}
	secret := tasks.AgentRun{Tenant: "acme", Image: "alpine:3", Command: []string{"sh", "-c", "echo s3cret > /root/creds.txt"}, Artifacts: []string{"/root/creds.txt"}}
	var w results
	if err := h.Run(context.Background(), Meta{ID: "a-1"}, payload(t, secret), &w); err != nil {
		t.Fatal(err)
	}
	f.exec = nil
	res := w.result(t)
	under := func(p string, dir ...string) bool {
		return strings.HasPrefix(p, filepath.Join(append([]string{h.cfg.DataDir}, dir...)...)+string(filepath.Separator))
	}
	if res.Tenant != "acme" || !under(res.Commit, "cache", "commits", "acme") || !strings.HasPrefix(res.CommitKey, "commits/acme/") ||
		len(res.Artifacts) != 1 || !under(res.Artifacts[0].HostPath, "artifacts", "acme") || !strings.HasPrefix(res.Artifacts[0].Key, "artifacts/acme/") {
		t.Fatalf("result tenant %q, commit %q (%s), artifacts %+v: want acme's, under commits/acme and artifacts/acme", res.Tenant, res.Commit, res.CommitKey, res.Artifacts)
	}
	q.set("a-1", EarlierTask{Tenant: "acme", Host: "host-a", State: "completed", Committed: true})

	// The record beside the commit in the store says whose it is.
	rec := filepath.Join(h.cfg.DataDir, "store", filepath.FromSlash(ownerKey("acme", "a-1")))
	b, err := os.ReadFile(rec)
	var o commitOwner
	if err != nil || json.Unmarshal(b, &o) != nil || o != (commitOwner{TaskID: "a-1", Tenant: "acme", Attempt: 1, Host: "host-a"}) {
		t.Fatalf("owner record %s = %s, %v", rec, b, err)
	}
	if info, err := os.Stat(rec); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("owner record: %v; want 0600", describe(info, err))
	}

	// The same tenant starts from it.
	if err := h.Run(context.Background(), Meta{ID: "a-2"}, payload(t, tasks.AgentRun{Tenant: "acme", From: "task:a-1", Command: []string{"true"}}), nil); err != nil {
		t.Fatal(err)
	}
	if f.lastCreate.From != res.Commit {
		t.Errorf("acme's next task created from %q, want %q", f.lastCreate.From, res.Commit)
	}

	// Another tenant: on this host, on another host of the pool that asks
	// the queue, and on a host that knows nothing of the task, the same
	// words.
	f2, f3 := newFake(), newFake()
	other, _ := newHandler(t, f2, func(c *Config) { c.Host = "host-b"; c.HostOfTask = q.hostOf; c.Store = h.cfg.Store })
	blind, _ := newHandler(t, f3, func(c *Config) { c.HostOfTask = (&fakeQueue{}).hostOf })
	missing := fromErr(t, blind, f3, "globex", "a-1")
	if want := "from: tenant globex has no commit of task a-1"; missing != want {
		t.Errorf("missing: %q, want %q", missing, want)
	}
	for name, got := range map[string]string{
		"this host":    fromErr(t, h, f, "globex", "a-1"),
		"another host": fromErr(t, other, f2, "globex", "a-1"),
	} {
		if got != missing {
			t.Errorf("another tenant's commit, %s: %q; a missing one reads %q", name, got, missing)
		}
	}
	// acme, on the other host, starts from it too.
	var w2 results
	if err := other.Run(context.Background(), Meta{ID: "a-3"}, payload(t, tasks.AgentRun{Tenant: "acme", From: "task:a-1", Command: []string{"true"}}), &w2); err != nil {
		t.Fatal(err)
	}
	if want := other.cache.path(res.CommitKey); f2.lastCreate.From != want || w2.result(t).PackSource != tasks.PackSourceCommit {
		t.Errorf("acme on host-b created from %q, want its copy %q", f2.lastCreate.From, want)
	}
	// Once retention has taken it from the store, acme hears so, even on
	// a host whose cache still has a copy.
	if _, err := h.cfg.Store.Expire(context.Background(), "commits/acme/", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, want := fromErr(t, h, f, "acme", "a-1"), "from: task a-1 committed, but its commit is no longer in the store (its retention ended, or it was deleted)"; got != want {
		t.Errorf("acme after its commit expired: %q, want %q", got, want)
	}

	// A task that ran with commit: false: its tenant hears so; another
	// tenant hears what it hears of a missing task.
	q.set("a-nc", EarlierTask{Tenant: "acme", Host: "host-a", State: "completed", NoCommit: true})
	if got := fromErr(t, h, f, "acme", "a-nc"); got != "from: task a-nc ran without a commit (its payload set commit: false)" {
		t.Errorf("acme from its no-commit task: %q", got)
	}
	if got, want := fromErr(t, h, f, "globex", "a-nc"), fromErr(t, blind, f3, "globex", "a-nc"); got != want {
		t.Errorf("globex from acme's no-commit task: %q; a missing one reads %q", got, want)
	}
}

// TestCommitOwnerRecordChecked: a commit is served only with an owner
// record naming the task and tenant asked for. A pack without one, one
// copied into another tenant's directory, or one whose record names
// another task reads as no commit at all.
func TestCommitOwnerRecordChecked(t *testing.T) {
	t.Parallel()
	f := newFake()
	h, _ := newHandler(t, f, nil)
	var w results
	if err := h.Run(context.Background(), Meta{ID: "a-1"}, payload(t, tasks.AgentRun{Tenant: "acme", Image: "alpine:3", Command: []string{"true"}}), &w); err != nil {
		t.Fatal(err)
	}
	res := w.result(t)
	stored := func(key string) string { return filepath.Join(h.cfg.DataDir, "store", filepath.FromSlash(key)) }
	commit, rec := stored(res.CommitKey), stored(ownerKey("acme", "a-1"))
	missingText := map[string]string{}
	for _, tenant := range []string{"acme", "globex"} {
		blind, _ := newHandler(t, newFake(), nil)
		missingText[tenant] = fromErr(t, blind, newFake(), tenant, "a-1")
	}

	// Planted: acme's pack and record copied into globex's part of the
	// store.
	globex := stored("commits/globex")
	if err := os.MkdirAll(globex, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{commit, rec} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(globex, filepath.Base(p)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := fromErr(t, h, f, "globex", "a-1"); got != missingText["globex"] {
		t.Errorf("a planted copy: %q, want %q", got, missingText["globex"])
	}

	for name, record := range map[string]*commitOwner{
		"no record":           nil,
		"another task's":      {TaskID: "a-1x", Tenant: "acme", Attempt: 1, Host: "host-a"},
		"another tenant's":    {TaskID: "a-1", Tenant: "globex", Attempt: 1, Host: "host-a"},
		"not a record at all": {},
	} {
		os.Remove(rec)
		if record != nil {
			b, _ := json.Marshal(record)
			if name == "not a record at all" {
				b = []byte("{not json")
			}
			if err := os.WriteFile(rec, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if got := fromErr(t, h, f, "acme", "a-1"); got != missingText["acme"] {
			t.Errorf("%s: %q, want %q", name, got, missingText["acme"])
		}
	}
}

// TestEarlierTask: what a HostOfTask over asynq's inspector makes of a
// task's info: its tenant from the payload, its host and commit from the
// result; anything that is no readable agent:run task is ErrNoSuchTask,
// as is an ID in no queue.
func TestEarlierTask(t *testing.T) {
	t.Parallel()
	pl := func(p tasks.AgentRun) []byte { return payload(t, p) }
	result := func(r tasks.Result) []byte {
		b, _ := json.Marshal(r)
		return b
	}
	run := tasks.AgentRun{Tenant: "acme", Image: "alpine:3", Command: []string{"true"}}
	noCommit := run
	noCommit.Commit = tasks.Bool(false)
	for _, tt := range []struct {
		name string
		info asynq.TaskInfo
		want EarlierTask
		err  error
	}{
		{"committed", asynq.TaskInfo{Type: tasks.TypeAgentRun, Payload: pl(run), State: asynq.TaskStateCompleted,
			Result: result(tasks.Result{Host: "h1", Commit: "/d/c.smolmachine"})},
			EarlierTask{Tenant: "acme", Host: "h1", State: "completed", Committed: true}, nil},
		{"no commit", asynq.TaskInfo{Type: tasks.TypeAgentRun, Payload: pl(noCommit), State: asynq.TaskStateCompleted,
			Result: result(tasks.Result{Host: "h1"})},
			EarlierTask{Tenant: "acme", Host: "h1", State: "completed", NoCommit: true}, nil},
		{"default tenant, running", asynq.TaskInfo{Type: tasks.TypeAgentRun, Payload: pl(tasks.AgentRun{Image: "a", Command: []string{"x"}}), State: asynq.TaskStateActive,
			Result: result(tasks.Result{Host: "h2", Commit: "/d/c.smolmachine"})},
			EarlierTask{Tenant: tasks.DefaultTenant, Host: "h2", State: "active"}, nil},
		{"unreadable result", asynq.TaskInfo{Type: tasks.TypeAgentRun, Payload: pl(run), State: asynq.TaskStateCompleted, Result: []byte("{")},
			EarlierTask{Tenant: "acme", State: "completed"}, nil},
		{"another type", asynq.TaskInfo{Type: "email:send", Payload: pl(run), State: asynq.TaskStateCompleted}, EarlierTask{}, ErrNoSuchTask},
		{"bad payload", asynq.TaskInfo{Type: tasks.TypeAgentRun, Payload: []byte(`{"tenant":"acme"}`), State: asynq.TaskStatePending}, EarlierTask{}, ErrNoSuchTask},
	} {
		got, err := earlierTask(&tt.info)
		if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("%s: %+v, %v; want %+v, %v", tt.name, got, err, tt.want, tt.err)
		}
	}

	r := testredis.Mini(t)
	opt := asynq.RedisClientOpt{Addr: r.Addr}
	client := asynq.NewClient(opt)
	defer client.Close()
	insp := asynq.NewInspector(opt)
	defer insp.Close()
	info, err := client.Enqueue(asynq.NewTask(tasks.TypeAgentRun, pl(noCommit)), asynq.Queue("q2"))
	if err != nil {
		t.Fatal(err)
	}
	hostOf := InspectorHostOf(insp)
	if got, err := hostOf(context.Background(), info.ID); err != nil || got != (EarlierTask{Tenant: "acme", State: "pending", NoCommit: true}) {
		t.Errorf("a pending task: %+v, %v", got, err)
	}
	if _, err := hostOf(context.Background(), "nope"); !errors.Is(err, ErrNoSuchTask) {
		t.Errorf("an unknown ID: %v, want ErrNoSuchTask", err)
	}
}
