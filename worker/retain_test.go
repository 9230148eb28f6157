package worker

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// ageTree makes every file and directory under dir look modified d ago.
func ageTree(t *testing.T, dir string, d time.Duration) {
	t.Helper()
	then := time.Now().Add(-d)
	var all []string
	filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err == nil {
			all = append(all, p)
		}
		return nil
	})
	for _, p := range slices.Backward(all) { // files before their directories
		if err := os.Chtimes(p, then, then); err != nil {
			t.Fatal(err)
		}
	}
}

// retainRun runs a task of id with an artifact and a commit on h.
func retainRun(t *testing.T, h *Handler, f *fakeSmolvm, id string) tasks.Result {
	t.Helper()
	f.exec = func(_ context.Context, vm string, _ []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
		f.put(vm, "/out/report.txt", []byte("report of "+id), 0o644)
		return smolvm.ExecResult{}, nil
	}
	var w results
	p := tasks.AgentRun{Image: "alpine:3", Command: []string{"true"}, Artifacts: []string{"/out/report.txt"}}
	if err := h.Run(context.Background(), Meta{ID: id}, payload(t, p), &w); err != nil {
		t.Fatal(err)
	}
	res := w.result(t)
	if res.CommitKey == "" || len(res.Artifacts) != 1 || res.Artifacts[0].Key == "" {
		t.Fatalf("%s: result %+v, want a commit and an artifact stored", id, res)
	}
	return res
}

// TestRetain: the retention sweep deletes from the store the commits and
// artifacts older than Config.Retention, and this host's copies of such
// artifacts; younger ones, and the pack of the image in use, stay. A from
// "task:ID" of an expired commit then fails, with the reason.
func TestRetain(t *testing.T) {
	t.Parallel()
	f := newFake()
	q := &fakeQueue{}
	h, _ := newHandler(t, f, func(c *Config) { c.Retention = 48 * time.Hour; c.HostOfTask = q.hostOf })
	old := retainRun(t, h, f, "old")
	young := retainRun(t, h, f, "young")
	q.set("old", EarlierTask{Tenant: tasks.DefaultTenant, State: "completed", Committed: true})
	storeDir := filepath.Join(h.cfg.DataDir, "store")
	for _, p := range []string{
		filepath.Join(storeDir, "commits", tasks.DefaultTenant),
		filepath.Join(storeDir, "artifacts", tasks.DefaultTenant, fileKey("old")),
		filepath.Join(h.cfg.DataDir, "artifacts", tasks.DefaultTenant, fileKey("old")),
	} {
		ageTree(t, p, 72*time.Hour)
	}
	for _, key := range []string{young.CommitKey, ownerKey(tasks.DefaultTenant, "young")} {
		now := time.Now()
		os.Chtimes(filepath.Join(storeDir, filepath.FromSlash(key)), now, now)
	}
	// Output streams and input files age out the same way.
	bulk := map[string]time.Duration{
		tasks.OutputKeyPrefix + "default/old/1-a/stdout":   72 * time.Hour,
		tasks.InputKey(tasks.DefaultTenant, "old"):         72 * time.Hour,
		tasks.OutputKeyPrefix + "default/young/1-b/stdout": 0,
		tasks.InputKey(tasks.DefaultTenant, "young"):       0,
	}
	for key, age := range bulk {
		if _, err := h.cfg.Store.Put(context.Background(), key, strings.NewReader(key), store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		then := time.Now().Add(-age)
		os.Chtimes(filepath.Join(storeDir, filepath.FromSlash(key)), then, then)
	}
	if err := h.Retain(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := storeKeys(t, h.cfg.Store, "")
	want := []string{young.CommitKey, ownerKey(tasks.DefaultTenant, "young"), young.Artifacts[0].Key,
		tasks.OutputKeyPrefix + "default/young/1-b/stdout", tasks.InputKey(tasks.DefaultTenant, "young")}
	if keys := storeKeys(t, h.cfg.Store, "packs/"); len(keys) != 1 {
		t.Errorf("store packs %q, want the image's one", keys)
	} else {
		want = append(want, keys[0])
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("store after Retain: %q, want %q", got, want)
	}
	if exists(old.Artifacts[0].HostPath) || exists(filepath.Dir(old.Artifacts[0].HostPath)) || !exists(young.Artifacts[0].HostPath) {
		t.Errorf("local artifacts after Retain: old %v (its dir %v), young %v; want the old one gone",
			exists(old.Artifacts[0].HostPath), exists(filepath.Dir(old.Artifacts[0].HostPath)), exists(young.Artifacts[0].HostPath))
	}
	if got := fromErr(t, h, f, tasks.DefaultTenant, "old"); !strings.Contains(got, "no longer in the store") {
		t.Errorf("from task:old after Retain: %q", got)
	}
}

// TestServeRetains: Serve runs the retention sweep when it starts, not
// NewHandler: an expired commit is in the store until Serve runs.
func TestServeRetains(t *testing.T) {
	t.Parallel()
	f := newFake()
	h, _ := newHandler(t, f, func(c *Config) { c.Retention = time.Hour })
	res := retainRun(t, h, f, "aged")
	ageTree(t, filepath.Join(h.cfg.DataDir, "store", "commits"), 2*time.Hour)
	if keys := storeKeys(t, h.cfg.Store, "commits/"); len(keys) != 2 {
		t.Fatalf("before Serve: %q, want the commit and its record", keys)
	}
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, h, ServerConfig{Redis: r, PollInterval: 5 * time.Millisecond}) }()
	deadline := time.Now().Add(30 * time.Second)
	for len(storeKeys(t, h.cfg.Store, "commits/")) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Serve left %s in the store", res.CommitKey)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
