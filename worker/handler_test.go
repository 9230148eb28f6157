package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/egress"
	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// results collects what the handler writes with the ResultWriter.
type results struct {
	mu   sync.Mutex
	last []byte
	n    int
}

func (r *results) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = bytes.Clone(p)
	r.n++
	return len(p), nil
}

func (r *results) result(t *testing.T) tasks.Result {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var res tasks.Result
	if err := json.Unmarshal(r.last, &res); err != nil {
		t.Fatalf("result %q: %v", r.last, err)
	}
	return res
}

func newHandler(t *testing.T, f *fakeSmolvm, mod func(*Config)) (*Handler, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	cfg := Config{Smolvm: f, DataDir: t.TempDir(), Host: "host-a", Logger: zerolog.New(&syncWriter{w: &logs}).Level(zerolog.DebugLevel)}
	if mod != nil {
		mod(&cfg)
	}
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h, &logs
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func payload(t *testing.T, p tasks.AgentRun) []byte {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var basic = tasks.AgentRun{Image: "alpine:3", Command: []string{"echo", "hi"}, Env: map[string]string{"TOKEN": "sekret-value-42"}, Workdir: "/work"}

func TestHandlerHappyPath(t *testing.T) {
	t.Parallel()
	f := newFake()
	h, logs := newHandler(t, f, nil)
	var w results
	if err := h.Run(context.Background(), Meta{ID: "task-1"}, payload(t, basic), &w); err != nil {
		t.Fatal(err)
	}
	vm := VMName(DefaultDeployment, "task-1", 1)
	want := []string{"pack-image alpine:3", "create " + vm, "status " + vm, "start " + vm, "ready " + vm, "exec " + vm, "stop " + vm, "pack-vm " + vm, "delete " + vm}
	if got := f.ops(); !slices.Equal(got, want) {
		t.Errorf("calls:\n got %q\nwant %q", got, want)
	}
	res := w.result(t)
	if res.State != tasks.StateDone || res.ExitCode != 0 || res.Stdout != "ran echo\n" || res.VM != vm || res.Host != "host-a" || res.Attempt != 1 || res.SmolvmVersion != "1.9.3" {
		t.Errorf("result = %+v", res)
	}
	if _, err := os.Stat(res.Commit); err != nil || !strings.HasSuffix(res.Commit, ".smolmachine") {
		t.Errorf("commit %q: %v", res.Commit, err)
	}
	obj, err := h.cfg.Store.Stat(context.Background(), res.CommitKey)
	if err != nil || res.CommitKey != commitKey(tasks.DefaultTenant, "task-1") {
		t.Errorf("commit key %q: %v", res.CommitKey, err)
	} else if res.CommitExpires == nil || !res.CommitExpires.Equal(obj.Modified.Add(DefaultRetention)) {
		t.Errorf("commit expires %v, want %v", res.CommitExpires, obj.Modified.Add(DefaultRetention))
	}
	if res.PackSource != tasks.PackSourcePacked || res.PackCached {
		t.Errorf("pack source %q, cached %v; want packed here", res.PackSource, res.PackCached)
	}
	var names []string
	for _, p := range res.Phases {
		names = append(names, p.Name)
	}
	if want := []string{"pack", "create", "start", "ready", "exec", "stop", "commit", "delete"}; !slices.Equal(names, want) {
		t.Errorf("phases = %q, want %q", names, want)
	}
	if w.n < 7 {
		t.Errorf("%d result writes, want progress at every phase", w.n)
	}
	if f.lastExec.Timeout != tasks.DefaultTimeout || !f.lastExec.Stream || f.lastExec.Workdir != "/work" || f.lastExec.Env["TOKEN"] != "sekret-value-42" {
		t.Errorf("exec options = %+v", f.lastExec)
	}
	if len(f.lastCreate.AllowCIDRs) != 0 || len(f.lastCreate.Env) != 0 {
		t.Errorf("no proxy, yet create got %+v", f.lastCreate)
	}
	if strings.Contains(logs.String(), "sekret-value-42") || strings.Contains(string(w.last), "sekret-value-42") {
		t.Error("an env value reached the logs or the result")
	}
	for _, field := range []string{`"task_id":"task-1"`, `"vm":"` + vm + `"`, `"phase":"exec"`} {
		if !strings.Contains(logs.String(), field) {
			t.Errorf("logs lack %s", field)
		}
	}
	if left := f.left(); len(left) != 0 {
		t.Errorf("machines left: %q", left)
	}
	if entries, _ := os.ReadDir(h.cache.tmpDir()); len(entries) != 0 {
		t.Errorf("temporaries left: %v", entries)
	}
}

// TestHandlerPhaseFailures: whichever phase fails, a smolvm failure is
// retried, and the VM is deleted whenever one was created.
func TestHandlerPhaseFailures(t *testing.T) {
	t.Parallel()
	boom := func(op string) error {
		return &smolvm.Error{Op: op, ExitCode: 1, Message: "agent operation failed: injected"}
	}
	tests := []struct {
		name       string
		inject     func(f *fakeSmolvm)
		wantDelete bool
	}{
		{"pack", func(f *fakeSmolvm) {
			f.packImage = func(context.Context, string, string) (smolvm.Pack, error) { return smolvm.Pack{}, boom("pack create") }
		}, false},
		{"create", func(f *fakeSmolvm) {
			f.create = func(context.Context, string, smolvm.CreateOptions) error { return boom("machine create") }
		}, true},
		{"start", func(f *fakeSmolvm) { f.start = func(context.Context, string) error { return boom("machine start") } }, true},
		{"ready", func(f *fakeSmolvm) {
			f.ready = func(context.Context, string) error {
				return &smolvm.Error{Op: "wait ready", ExitCode: -1, Message: "not ready", Err: smolvm.ErrNotReady}
			}
		}, true},
		{"exec tool error", func(f *fakeSmolvm) {
			f.exec = func(_ context.Context, vm string, _ []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
				f.setState(vm, smolvm.StateFailed) // the VM died under the command
				return smolvm.ExecResult{ExitCode: 1}, boom("machine exec")
			}
		}, true},
		{"stop", func(f *fakeSmolvm) { f.stop = func(context.Context, string) error { return boom("machine stop") } }, true},
		{"commit", func(f *fakeSmolvm) {
			f.packVM = func(context.Context, string, string) (smolvm.Pack, error) { return smolvm.Pack{}, boom("pack create") }
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake()
			tt.inject(f)
			h, _ := newHandler(t, f, nil)
			var w results
			err := h.Run(context.Background(), Meta{ID: "t-" + tt.name}, payload(t, basic), &w)
			var se *smolvm.Error
			if !errors.As(err, &se) || errors.Is(err, asynq.SkipRetry) {
				t.Fatalf("err = %v, want a retryable *smolvm.Error", err)
			}
			if got := f.count("delete") > 0; got != tt.wantDelete {
				t.Errorf("delete called = %v, want %v (calls %q)", got, tt.wantDelete, f.ops())
			}
			if left := f.left(); len(left) != 0 {
				t.Errorf("machines left: %q", left)
			}
			if res := w.result(t); res.Error == "" || res.State != tasks.StateRunning {
				t.Errorf("last report = %+v, want the error", res)
			}
			if keys := storeKeys(t, h.cfg.Store, "commits/"); len(keys) != 0 {
				t.Errorf("the store holds %q after a failure", keys)
			}
			if entries, _ := os.ReadDir(h.cache.tmpDir()); len(entries) != 0 {
				t.Errorf("temporaries left: %v", entries)
			}
		})
	}
}

func TestHandlerGuestExitIsAResult(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.exec = func(context.Context, string, []string, smolvm.ExecOptions) (smolvm.ExecResult, error) {
		return smolvm.ExecResult{ExitCode: 3, Stderr: []byte("bad\n")}, nil
	}
	h, _ := newHandler(t, f, nil)
	var w results
	if err := h.Run(context.Background(), Meta{ID: "x"}, payload(t, basic), &w); err != nil {
		t.Fatalf("err = %v, want nil: a guest's exit code is its result", err)
	}
	if res := w.result(t); res.ExitCode != 3 || res.Stderr != "bad\n" || res.State != tasks.StateDone {
		t.Errorf("result = %+v", res)
	}
}

func TestHandlerInvalidPayloadCallsNothing(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{`{}`, `not json`, `{"image":"a","command":[]}`, `{"image":"-a","command":["x"]}`, `{"image":"a","command":["x"],"env":{"A=B":"c"}}`} {
		f := newFake()
		h, _ := newHandler(t, f, nil)
		err := h.Run(context.Background(), Meta{ID: "bad"}, []byte(raw), nil)
		var ve *tasks.ValidationError
		if !errors.Is(err, asynq.SkipRetry) || !errors.As(err, &ve) {
			t.Errorf("%s: err = %v, want a SkipRetry validation error", raw, err)
		}
		if n := len(f.ops()); n != 0 {
			t.Errorf("%s: %d smolvm calls, want 0", raw, n)
		}
	}
}

// TestHandlerCancelledMidExec: the VM is deleted with a live context even
// though the task's context is gone.
func TestHandlerCancelledMidExec(t *testing.T) {
	t.Parallel()
	f := newFake()
	ctx, cancel := context.WithCancel(context.Background())
	f.exec = func(ctx context.Context, _ string, _ []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
		cancel()
		<-ctx.Done()
		return smolvm.ExecResult{ExitCode: -1}, &smolvm.Error{Op: "machine exec", ExitCode: -1, Err: ctx.Err()}
	}
	var deleteCtxErr error = errors.New("delete not called")
	f.delete = func(ctx context.Context, _ string) error { deleteCtxErr = ctx.Err(); return nil }
	h, _ := newHandler(t, f, nil)
	err := h.Run(ctx, Meta{ID: "c"}, payload(t, basic), nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if deleteCtxErr != nil {
		t.Errorf("delete ran with a dead context or not at all: %v", deleteCtxErr)
	}
	if left := f.left(); len(left) != 0 {
		t.Errorf("machines left: %q", left)
	}
}

func TestHandlerDeleteRetried(t *testing.T) {
	t.Parallel()
	f := newFake()
	fails := 2
	f.delete = func(context.Context, string) error {
		if fails > 0 {
			fails--
			return &smolvm.Error{Op: "machine delete", ExitCode: 1, Message: "injected"}
		}
		return nil
	}
	h, logs := newHandler(t, f, nil)
	if err := h.Run(context.Background(), Meta{ID: "d"}, payload(t, basic), nil); err != nil {
		t.Fatal(err)
	}
	if n := f.count("delete"); n != 3 {
		t.Errorf("delete called %d times, want 3", n)
	}
	if left := f.left(); len(left) != 0 {
		t.Errorf("machines left: %q", left)
	}
	if strings.Count(logs.String(), "delete failed") != 2 {
		t.Errorf("each failed delete must be logged:\n%s", logs)
	}
}

func TestHandlerLeftoverMachineIsReplaced(t *testing.T) {
	t.Parallel()
	f := newFake()
	h, _ := newHandler(t, f, nil)
	vm := VMName(DefaultDeployment, "again", 1)
	leftover := filepath.Join(t.TempDir(), "x")
	writePack(leftover)
	if err := f.Create(context.Background(), vm, smolvm.CreateOptions{From: leftover + ".smolmachine"}); err != nil {
		t.Fatal(err)
	}
	if err := h.Run(context.Background(), Meta{ID: "again"}, payload(t, basic), nil); err != nil {
		t.Fatal(err)
	}
	if n := f.count("delete " + vm); n != 2 {
		t.Errorf("delete called %d times, want 2 (leftover, then teardown)", n)
	}
}

func TestHandlerNoCommit(t *testing.T) {
	t.Parallel()
	f := newFake()
	h, _ := newHandler(t, f, nil)
	p := basic
	p.Commit = tasks.Bool(false)
	var w results
	if err := h.Run(context.Background(), Meta{ID: "nc"}, payload(t, p), &w); err != nil {
		t.Fatal(err)
	}
	if f.count("stop") != 0 || f.count("pack-vm") != 0 || w.result(t).Commit != "" {
		t.Errorf("no-commit run stopped or packed: %q", f.ops())
	}
}

func TestHandlerProxy(t *testing.T) {
	t.Parallel()
	f := newFake()
	h, _ := newHandler(t, f, func(c *Config) { c.ProxyURL = "http://10.0.2.2:3128" })
	if err := h.Run(context.Background(), Meta{ID: "p"}, payload(t, basic), nil); err != nil {
		t.Fatal(err)
	}
	if got := f.lastCreate.AllowCIDRs; len(got) != 1 || got[0].String() != "10.0.2.2/32" {
		t.Errorf("allow-cidr = %v", got)
	}
	if f.lastCreate.Env["HTTPS_PROXY"] != "http://10.0.2.2:3128" || f.lastCreate.Env["NO_PROXY"] == "" {
		t.Errorf("proxy env = %v", f.lastCreate.Env)
	}
}

// TestEgressFailClosed: a proxy on a smolvm that would ignore it is
// refused, unless the operator opts out.
func TestEgressFailClosed(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		v      smolvm.Version
		optOut bool
		ok     bool
	}{
		{smolvm.Version{Major: 1, Minor: 7, Patch: 9}, false, false},
		{smolvm.Version{Minor: 8}, false, false},
		{smolvm.Version{Minor: 8}, true, true},
		{smolvm.Version{Major: 1, Minor: 8}, false, true},
	} {
		f := newFake()
		f.version = tt.v
		_, err := NewHandler(Config{Smolvm: f, DataDir: t.TempDir(), ProxyURL: "http://10.0.2.2:3128", AllowUnenforcedEgress: tt.optOut})
		if (err == nil) != tt.ok {
			t.Errorf("smolvm %s opt-out %v: err = %v, want ok=%v", tt.v, tt.optOut, err, tt.ok)
		}
	}
}

// TestPackOnceUnderConcurrency: 20 tasks of one image pack it once.
func TestPackOnceUnderConcurrency(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.packImage = func(_ context.Context, _, out string) (smolvm.Pack, error) {
		time.Sleep(20 * time.Millisecond) // let the others pile up on it
		return writePack(out)
	}
	h, _ := newHandler(t, f, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- h.Run(context.Background(), Meta{ID: fmt.Sprint("t", i)}, payload(t, basic), nil)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := f.count("pack-image"); n != 1 {
		t.Errorf("packed %d times, want 1", n)
	}
}

func TestHandlerFromCommit(t *testing.T) {
	t.Parallel()
	f := newFake()
	h, _ := newHandler(t, f, func(c *Config) {
		c.HostOfTask = func(_ context.Context, id string) (EarlierTask, error) {
			if id == "elsewhere" {
				return EarlierTask{Tenant: tasks.DefaultTenant, Host: "host-b", State: "completed", Committed: true}, nil
			}
			return EarlierTask{}, ErrNoSuchTask
		}
	})
	if err := h.Run(context.Background(), Meta{ID: "first"}, payload(t, basic), nil); err != nil {
		t.Fatal(err)
	}
	next := tasks.AgentRun{From: "task:first", Command: []string{"cat", "/state"}}
	var w results
	if err := h.Run(context.Background(), Meta{ID: "second"}, payload(t, next), &w); err != nil {
		t.Fatal(err)
	}
	if f.lastCreate.From != h.cache.path(commitKey(tasks.DefaultTenant, "first")) || w.result(t).PackSource != tasks.PackSourceCommit {
		t.Errorf("second task created from %q (pack source %q), want the first one's commit", f.lastCreate.From, w.result(t).PackSource)
	}
	for id, want := range map[string]string{
		"elsewhere": "from: task elsewhere committed, but its commit is no longer in the store (its retention ended, or it was deleted)",
		"missing":   "from: tenant default has no commit of task missing",
	} {
		p := tasks.AgentRun{From: "task:" + id, Command: []string{"x"}}
		err := h.Run(context.Background(), Meta{ID: "n-" + id}, payload(t, p), nil)
		if !errors.Is(err, asynq.SkipRetry) || !strings.Contains(err.Error(), want) {
			t.Errorf("from task:%s: err = %v, want SkipRetry naming %q", id, err, want)
		}
	}
}

func TestVMName(t *testing.T) {
	t.Parallel()
	ids := []string{"", "a", "0f8fad5b-d9cb-469f-a165-70867728950e", "--weird//id..", strings.Repeat("é", 200), "x y", "A_B"}
	seen := map[string]bool{}
	for _, id := range ids {
		for attempt := 1; attempt <= 2; attempt++ {
			n := VMName(DefaultDeployment, id, attempt)
			if err := smolvm.ValidateName(n); err != nil || !strings.HasPrefix(n, namePrefix) {
				t.Errorf("VMName(%q, %d) = %q: %v", id, attempt, n, err)
			}
			if seen[n] {
				t.Errorf("VMName(%q, %d) = %q collides", id, attempt, n)
			}
			seen[n] = true
		}
	}
	if VMName(DefaultDeployment, "a-b", 1) == VMName(DefaultDeployment, "a_b", 1) {
		t.Error("IDs with the same slug must get different names")
	}
}

// TestHandlerDuplicateDelivery: at-least-once delivery can run one attempt
// twice. While the first delivery is live — in this process, or in another
// one on the host — the second must not touch its VM; run after it, the
// second replaces the commit atomically.
func TestHandlerDuplicateDelivery(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		busy func(context.Context, string) (bool, error) // the second handler's
		same bool                                        // both deliveries in one handler
	}{
		{"same process", nil, true},
		{"another process", func(context.Context, string) (bool, error) { return true, nil }, false},
		{"owner unknown", func(context.Context, string) (bool, error) { return false, errors.New("redis down") }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake()
			h1, _ := newHandler(t, f, nil)
			h2 := h1
			if !tt.same {
				h2, _ = newHandler(t, f, func(c *Config) { c.Busy = tt.busy; c.DataDir = h1.cfg.DataDir })
			}
			vm := VMName(DefaultDeployment, "dup", 1)
			inExec := make(chan struct{})
			release := make(chan struct{})
			f.exec = func(_ context.Context, _ string, cmd []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
				if cmd[0] == "first" {
					close(inExec)
					<-release
				}
				return smolvm.ExecResult{Stdout: []byte(cmd[0])}, nil
			}
			first, second := basic, basic
			first.Command, second.Command = []string{"first"}, []string{"second"}
			done := make(chan error, 1)
			go func() { done <- h1.Run(context.Background(), Meta{ID: "dup"}, payload(t, first), nil) }()
			<-inExec
			err := h2.Run(context.Background(), Meta{ID: "dup"}, payload(t, second), nil)
			if err == nil || errors.Is(err, asynq.SkipRetry) {
				t.Fatalf("duplicate delivery: err = %v, want a retryable error", err)
			}
			if n := f.count("delete " + vm); n != 0 {
				t.Fatalf("the duplicate deleted the live delivery's VM (%d deletes)", n)
			}
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if left := f.left(); len(left) != 0 {
				t.Errorf("machines left: %q", left)
			}
		})
	}
}

// TestHandlerRunTwiceKeepsFirstCommit: the same attempt run again after the
// first finished (asynq's at-least-once) finds its commit key taken, with an
// owner record of the same task: the first commit stands, untouched, and
// the second run's result names it. Nothing is left half-written.
func TestHandlerRunTwiceKeepsFirstCommit(t *testing.T) {
	t.Parallel()
	f := newFake()
	h, _ := newHandler(t, f, nil)
	var firstObj os.FileInfo
	for i := range 2 {
		var w results
		if err := h.Run(context.Background(), Meta{ID: "twice"}, payload(t, basic), &w); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		res := w.result(t)
		if b, err := os.ReadFile(res.Commit); err != nil || len(b) == 0 || res.CommitKey != commitKey(tasks.DefaultTenant, "twice") {
			t.Fatalf("run %d: commit %q (key %q) unreadable: %v", i, res.Commit, res.CommitKey, err)
		}
		info, err := os.Stat(filepath.Join(h.cfg.DataDir, "store", filepath.FromSlash(res.CommitKey)))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			firstObj = info
		} else if !os.SameFile(info, firstObj) || !info.ModTime().Equal(firstObj.ModTime()) {
			t.Error("the second run replaced the stored commit")
		}
	}
	if f.count("pack-vm") != 2 {
		t.Errorf("%d commits made, want one per run", f.count("pack-vm"))
	}
	want := []string{commitKey(tasks.DefaultTenant, "twice"), ownerKey(tasks.DefaultTenant, "twice")}
	slices.Sort(want)
	if keys := storeKeys(t, h.cfg.Store, "commits/"); !slices.Equal(keys, want) {
		t.Errorf("store holds %q, want %q", keys, want)
	}
	if entries, _ := os.ReadDir(h.cache.tmpDir()); len(entries) != 0 {
		t.Errorf("temporaries left: %v", entries)
	}
}

func TestHandlerBundledEgress(t *testing.T) {
	t.Parallel()
	p := basic
	p.AllowHosts = []string{"api.example.com:443"}

	f := newFake()
	h, _ := newHandler(t, f, nil)
	err := h.Run(context.Background(), Meta{ID: "no-proxy"}, payload(t, p), nil)
	if !errors.Is(err, asynq.SkipRetry) || !strings.Contains(err.Error(), "allow_hosts") || len(f.ops()) != 0 {
		t.Fatalf("allow_hosts without a bundled proxy: err = %v, calls %q; want archived, no smolvm call", err, f.ops())
	}

	f = newFake()
	proxy := egress.New(egress.Config{})
	h, logs := newHandler(t, f, func(c *Config) { c.BundledProxy = proxy; c.ProxyURL = "http://10.0.2.2:3128" })
	var w results
	if err := h.Run(context.Background(), Meta{ID: "with-proxy"}, payload(t, p), &w); err != nil {
		t.Fatal(err)
	}
	got := f.lastExec.Env["HTTPS_PROXY"]
	if !strings.HasPrefix(got, "http://task:") || !strings.HasSuffix(got, "@10.0.2.2:3128") {
		t.Errorf("exec HTTPS_PROXY = %q, want the task's credentials on the proxy", got)
	}
	if f.lastExec.Env["TOKEN"] != "sekret-value-42" {
		t.Error("the payload's env was lost")
	}
	if f.lastCreate.Env["HTTPS_PROXY"] != "http://10.0.2.2:3128" {
		t.Errorf("create env = %v: the VM's own env must carry no credentials", f.lastCreate.Env)
	}
	if res := w.result(t); res.Egress == nil {
		t.Error("no egress record in the result")
	}
	token := strings.TrimSuffix(strings.TrimPrefix(got, "http://task:"), "@10.0.2.2:3128")
	if strings.Contains(logs.String(), token) || strings.Contains(string(w.last), token) {
		t.Error("the proxy token leaked into the logs or the result")
	}
}
