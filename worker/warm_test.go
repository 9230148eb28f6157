package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bot-bottle/bottleq/egress"
	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

const testOwner = "0wner0f7h15pr0c"

// startPool runs h's warm pool, with short waits, until the test ends or
// the returned func is called; either way Run must return nil.
func startPool(t *testing.T, h *Handler) (stop func()) {
	t.Helper()
	p := h.Warm()
	if p == nil {
		t.Fatal("no warm pool")
	}
	p.tick, p.backoff = 5*time.Millisecond, 5*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, testOwner) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("WarmPool.Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// readyNames lists the ready pool VMs of image, oldest first.
func (p *WarmPool) readyNames(image string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, vm := range p.ready[image] {
		out = append(out, vm.name)
	}
	return out
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitPool waits until image has n ready VMs and returns their names.
func waitPool(t *testing.T, h *Handler, image string, n int) []string {
	t.Helper()
	var names []string
	waitFor(t, fmt.Sprintf("%d ready VMs of %s", n, image), func() bool {
		names = h.Warm().readyNames(image)
		return len(names) >= n
	})
	return names
}

// opsOn returns the fake's calls about vm, as their ops.
func opsOn(f *fakeSmolvm, vm string) []string {
	var out []string
	for _, c := range f.ops() {
		if op, name, _ := strings.Cut(c, " "); name == vm {
			out = append(out, op)
		}
	}
	return out
}

func TestParseWarm(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want map[string]int
		err  string
	}{
		{"", nil, ""},
		{" ", nil, ""},
		{"alpine:3=2", map[string]int{"alpine:3": 2}, ""},
		{"alpine:3=2, ghcr.io/o/agent@sha256:abc=1", map[string]int{"alpine:3": 2, "ghcr.io/o/agent@sha256:abc": 1}, ""},
		{"localhost:5000/a:1=3", map[string]int{"localhost:5000/a:1": 3}, ""},
		{"alpine:3", nil, "IMAGE=N"},
		{"=2", nil, "IMAGE=N"},
		{"alpine:3=0", nil, "at least 1"},
		{"alpine:3=-1", nil, "at least 1"},
		{"alpine:3=two", nil, "at least 1"},
		{"alpine:3=1,alpine:3=2", nil, "listed twice"},
		{"alpine:3=1,", nil, "IMAGE=N"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseWarm(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseWarm(%q) = %v, %v; want an error about %s", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || len(got) != len(tt.want) {
				t.Fatalf("ParseWarm(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("ParseWarm(%q)[%q] = %d, want %d", tt.in, k, got[k], v)
				}
			}
		})
	}
}

// TestWarmConfigRefused: NewHandler refuses a pool it could not keep,
// naming the field.
func TestWarmConfigRefused(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		warm  WarmConfig
		field string
		want  string
	}{
		{"registry not allowed", WarmConfig{Images: map[string]int{"example.com/agent:1": 1}}, "Warm", "registry example.com"},
		{"bad image", WarmConfig{Images: map[string]int{"-x": 1}}, "Warm", "must not start with '-'"},
		{"zero VMs", WarmConfig{Images: map[string]int{"alpine:3": 0}}, "Warm", "at least 1"},
		{"negative max", WarmConfig{Images: map[string]int{"alpine:3": 1}, Max: -1}, "Warm.Max", "negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewHandler(Config{Smolvm: newFake(), DataDir: t.TempDir(), Warm: tt.warm})
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tt.field || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want Config.%s: …%s…", err, tt.field, tt.want)
			}
		})
	}
	h, err := NewHandler(Config{Smolvm: newFake(), DataDir: t.TempDir()})
	if err != nil || h.Warm() != nil {
		t.Errorf("no images: pool %v, err %v; want no pool", h.Warm(), err)
	}
}

// TestWarmClaimSkipsBoot: a task of a pooled image takes a ready VM and
// skips create, start and ready; it runs with its own env and proxy
// credentials, which the pool VM was created without; its VM is deleted,
// never returned, and the pool makes another.
func TestWarmClaimSkipsBoot(t *testing.T) {
	t.Parallel()
	f := newFake()
	proxy := egress.New(egress.Config{})
	var claims []bool
	var mu sync.Mutex
	h, _ := newHandler(t, f, func(c *Config) {
		c.BundledProxy, c.ProxyURL = proxy, "http://10.0.2.2:3128"
		c.Warm = WarmConfig{Images: map[string]int{"alpine:3": 1}, Hooks: WarmHooks{Claim: func(_ string, hit bool, _ time.Duration) {
			mu.Lock()
			claims = append(claims, hit)
			mu.Unlock()
		}}}
	})
	startPool(t, h)
	pooled := waitPool(t, h, "alpine:3", 1)[0]
	if !strings.HasPrefix(pooled, "bq-default-warm_"+testOwner+"_") || smolvm.ValidateName(pooled) != nil {
		t.Fatalf("pool VM name %q", pooled)
	}
	if !h.activeVMs()[pooled] {
		t.Error("a ready pool VM is not registered as in use: the reaper would take it")
	}
	before := opsOn(f, pooled)
	if want := []string{"create", "status", "start", "ready"}; !slices.Equal(before, want) {
		t.Errorf("pool VM calls before the task = %q, want %q", before, want)
	}

	var w results
	if err := h.Run(context.Background(), Meta{ID: "t1"}, payload(t, basic), &w); err != nil {
		t.Fatal(err)
	}
	res := w.result(t)
	if !res.Warm || res.VM != pooled || !slices.Equal(res.SkippedPhases, []string{"create", "start", "ready"}) {
		t.Errorf("result warm %v vm %q skipped %q; want warm in %s, create/start/ready skipped", res.Warm, res.VM, res.SkippedPhases, pooled)
	}
	var phases []string
	for _, p := range res.Phases {
		phases = append(phases, p.Name)
	}
	if want := []string{"pack", "exec", "stop", "commit", "delete"}; !slices.Equal(phases, want) {
		t.Errorf("phases = %q, want %q", phases, want)
	}
	if got, want := opsOn(f, pooled), append(before, "exec", "stop", "pack-vm", "delete"); !slices.Equal(got, want) {
		t.Errorf("pool VM calls = %q, want %q", got, want)
	}
	if n := len(opsOn(f, VMName(DefaultDeployment, "t1", 1))); n != 0 {
		t.Errorf("%d calls on the attempt's own VM name, want none", n)
	}
	got := f.lastExec.Env["HTTPS_PROXY"]
	if !strings.HasPrefix(got, "http://task:") || f.lastExec.Env["TOKEN"] != "sekret-value-42" || f.lastExec.Workdir != "/work" {
		t.Errorf("exec env/workdir = %v %q: want the task's env, workdir and proxy credentials", f.lastExec.Env, f.lastExec.Workdir)
	}
	f.mu.Lock()
	creates := slices.Clone(f.creates)
	f.mu.Unlock()
	for _, c := range creates {
		if c.Env["HTTPS_PROXY"] != "http://10.0.2.2:3128" || c.Env["TOKEN"] != "" || c.CPUs != DefaultVMCPUs || c.MemoryMiB != DefaultVMMemMiB {
			t.Errorf("a pool VM was created with %+v: want the proxy without credentials, no task env, the worker's resources", c)
		}
	}
	if res.Egress == nil {
		t.Error("no egress record: the task's proxy registration was lost")
	}
	if slices.Contains(f.left(), pooled) || h.activeVMs()[pooled] {
		t.Error("the claimed VM outlived its task")
	}
	next := waitPool(t, h, "alpine:3", 1)[0]
	if next == pooled {
		t.Fatal("the pool handed back the claimed VM")
	}
	mu.Lock()
	if !slices.Equal(claims, []bool{true}) {
		t.Errorf("claims = %v, want one hit", claims)
	}
	mu.Unlock()
}

// TestWarmClaimsAreExclusive: tasks racing for a small pool never share a
// VM, each VM runs at most one task, and nothing is left when the pool
// stops.
func TestWarmClaimsAreExclusive(t *testing.T) {
	t.Parallel()
	f := newFake()
	h, _ := newHandler(t, f, func(c *Config) { c.Warm = WarmConfig{Images: map[string]int{"alpine:3": 3}} })
	stop := startPool(t, h)
	waitPool(t, h, "alpine:3", 3)
	const n = 60
	var wg sync.WaitGroup
	vms := make([]string, n)
	warm := make([]bool, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var w results
			if err := h.Run(context.Background(), Meta{ID: fmt.Sprintf("race-%d", i)}, payload(t, basic), &w); err != nil {
				t.Error(err)
				return
			}
			res := w.result(t)
			vms[i], warm[i] = res.VM, res.Warm
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	hits := 0
	for i, vm := range vms {
		if prev, dup := seen[vm]; dup {
			t.Errorf("tasks %d and %d both ran in %s", prev, i, vm)
		}
		seen[vm] = i
		if warm[i] {
			hits++
		}
	}
	if hits < 3 {
		t.Errorf("%d warm tasks, want at least the 3 ready before", hits)
	}
	execs := map[string]int{}
	for _, c := range f.ops() {
		if vm, ok := strings.CutPrefix(c, "exec "); ok {
			execs[vm]++
		}
	}
	for vm, k := range execs {
		if k > 1 {
			t.Errorf("%s ran %d task commands", vm, k)
		}
	}
	stop()
	if left := f.left(); len(left) != 0 {
		t.Errorf("left after the pool stopped: %q", left)
	}
	if a := h.activeVMs(); len(a) != 0 {
		t.Errorf("still registered: %v", a)
	}
}

// TestWarmStartFailureNeverClaimed: a pool VM whose start fails is deleted
// and never handed out; the pool tries again.
func TestWarmStartFailureNeverClaimed(t *testing.T) {
	t.Parallel()
	f := newFake()
	var failed atomic.Value
	f.start = func(_ context.Context, name string) error {
		if failed.CompareAndSwap(nil, name) {
			return &smolvm.Error{Op: "machine start", Machine: name, ExitCode: 1, Message: "injected"}
		}
		return nil
	}
	var refillErrs atomic.Int32
	h, _ := newHandler(t, f, func(c *Config) {
		c.Warm = WarmConfig{Images: map[string]int{"alpine:3": 1}, Hooks: WarmHooks{Refill: func(_ string, _ time.Duration, err error) {
			if err != nil {
				refillErrs.Add(1)
			}
		}}}
	})
	startPool(t, h)
	ready := waitPool(t, h, "alpine:3", 1)[0]
	bad, _ := failed.Load().(string)
	if bad == "" || bad == ready {
		t.Fatalf("failed start on %q, ready %q", bad, ready)
	}
	for i := range 3 {
		waitPool(t, h, "alpine:3", 1)
		var w results
		if err := h.Run(context.Background(), Meta{ID: fmt.Sprintf("s%d", i)}, payload(t, basic), &w); err != nil {
			t.Fatal(err)
		}
		if res := w.result(t); !res.Warm || res.VM == bad {
			t.Errorf("task %d ran in %q (warm %v); the failed VM is %q", i, res.VM, res.Warm, bad)
		}
	}
	if got, want := opsOn(f, bad), []string{"create", "status", "start", "delete"}; !slices.Equal(got, want) {
		t.Errorf("calls on the VM whose start failed = %q, want %q", got, want)
	}
	if refillErrs.Load() != 1 {
		t.Errorf("%d refill errors reported, want 1", refillErrs.Load())
	}
}

// TestWarmColdPaths: a task the pool's VMs do not fit (other resources, a
// from, another image) takes the cold path and leaves the pool alone.
func TestWarmColdPaths(t *testing.T) {
	t.Parallel()
	f := newFake()
	var misses atomic.Int32
	h, _ := newHandler(t, f, func(c *Config) {
		c.Warm = WarmConfig{Images: map[string]int{"alpine:3": 1}, Hooks: WarmHooks{Claim: func(_ string, hit bool, _ time.Duration) {
			if !hit {
				misses.Add(1)
			}
		}}}
	})
	startPool(t, h)
	waitPool(t, h, "alpine:3", 1)
	var w results
	if err := h.Run(context.Background(), Meta{ID: "earlier"}, payload(t, basic), &w); err != nil || !w.result(t).Warm {
		t.Fatalf("the first task: err %v, warm %v", err, w.result(t).Warm)
	}
	pooled := waitPool(t, h, "alpine:3", 1)[0]
	fewer, more := basic, basic
	fewer.CPUs = 1
	more.MemMiB = 1024
	fromTask := basic
	fromTask.Image, fromTask.From = "", "task:earlier"
	other := basic
	other.Image = "busybox:1"
	for name, p := range map[string]tasks.AgentRun{"cpus": fewer, "mem": more, "from": fromTask, "image": other} {
		var w results
		id := "cold-" + name
		if err := h.Run(context.Background(), Meta{ID: id}, payload(t, p), &w); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if res := w.result(t); res.Warm || res.VM != VMName(DefaultDeployment, id, 1) || len(res.SkippedPhases) != 0 {
			t.Errorf("%s: warm %v in %q, skipped %q; want the cold path", name, res.Warm, res.VM, res.SkippedPhases)
		}
	}
	if got := h.Warm().readyNames("alpine:3"); !slices.Equal(got, []string{pooled}) {
		t.Errorf("pool = %q, want %q untouched", got, pooled)
	}
	if misses.Load() != 0 {
		t.Errorf("%d misses counted for tasks the pool cannot serve", misses.Load())
	}
}

// TestWarmExpiry: a VM older than MaxAge is deleted unclaimed and
// replaced.
func TestWarmExpiry(t *testing.T) {
	t.Parallel()
	f := newFake()
	h, _ := newHandler(t, f, func(c *Config) {
		c.Warm = WarmConfig{Images: map[string]int{"alpine:3": 1}, MaxAge: 20 * time.Millisecond}
	})
	startPool(t, h)
	first := waitPool(t, h, "alpine:3", 1)[0]
	waitFor(t, "the first VM deleted", func() bool { return slices.Contains(opsOn(f, first), "delete") })
	if got := opsOn(f, first); slices.Contains(got, "exec") {
		t.Errorf("the expired VM ran a command: %q", got)
	}
	waitFor(t, "a replacement", func() bool {
		names := h.Warm().readyNames("alpine:3")
		return len(names) == 1 && names[0] != first
	})
}

// TestWarmPackRefresh: when an image's pack is made again after its TTL,
// the VMs of the old pack are drained unclaimed and replaced by VMs of the
// new one.
func TestWarmPackRefresh(t *testing.T) {
	t.Parallel()
	f := newFake()
	h, _ := newHandler(t, f, func(c *Config) {
		c.PackTTL = time.Hour
		c.Warm = WarmConfig{Images: map[string]int{"alpine:3": 2}}
	})
	startPool(t, h)
	old := waitPool(t, h, "alpine:3", 2)
	if n := f.count("pack-image"); n != 1 {
		t.Fatalf("%d packs before the refresh, want 1", n)
	}
	pack := h.Warm().template["alpine:3"].From
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(pack, past, past); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the old pack's VMs deleted", func() bool {
		return slices.Contains(opsOn(f, old[0]), "delete") && slices.Contains(opsOn(f, old[1]), "delete")
	})
	if n := f.count("pack-image"); n != 2 {
		t.Errorf("%d packs, want 2", n)
	}
	fresh := waitPool(t, h, "alpine:3", 2)
	if slices.Contains(fresh, old[0]) || slices.Contains(fresh, old[1]) {
		t.Errorf("pool %q still holds a VM of the old pack %q", fresh, old)
	}
	for _, vm := range old {
		if slices.Contains(opsOn(f, vm), "exec") {
			t.Errorf("%s, of the old pack, ran a command", vm)
		}
	}
	// The new VMs were created after the second pack.
	ops := f.ops()
	second := slices.IndexFunc(ops, func(c string) bool { return strings.HasPrefix(c, "pack-image") })
	second += 1 + slices.IndexFunc(ops[second+1:], func(c string) bool { return strings.HasPrefix(c, "pack-image") })
	for _, vm := range fresh {
		if i := slices.Index(ops, "create "+vm); i < second {
			t.Errorf("%s was created (call %d) before the new pack (call %d)", vm, i, second)
		}
	}
}

// TestWarmShutdownDeletesAll: when Run's context ends, every pool VM is
// deleted, those still starting too, before Run returns.
func TestWarmShutdownDeletesAll(t *testing.T) {
	t.Parallel()
	f := newFake()
	starting := make(chan string, 1)
	f.start = func(ctx context.Context, name string) error {
		if strings.Contains(name, "warm_") && f.count("start") > 3 {
			select {
			case starting <- name:
			default:
			}
			<-ctx.Done()
			return &smolvm.Error{Op: "machine start", Machine: name, ExitCode: -1, Err: ctx.Err()}
		}
		return nil
	}
	h, _ := newHandler(t, f, func(c *Config) {
		c.Warm = WarmConfig{Images: map[string]int{"alpine:3": 2, "busybox:1": 2}}
	})
	stop := startPool(t, h)
	waitFor(t, "3 ready VMs and one starting", func() bool {
		return len(h.Warm().readyNames("alpine:3"))+len(h.Warm().readyNames("busybox:1")) == 3 && len(starting) == 1
	})
	stop()
	if left := f.left(); len(left) != 0 {
		t.Errorf("left after shutdown: %q", left)
	}
	if a := h.activeVMs(); len(a) != 0 {
		t.Errorf("still registered after shutdown: %v", a)
	}
	if stuck := <-starting; !slices.Contains(opsOn(f, stuck), "delete") {
		t.Errorf("the VM that was starting, %s, was not deleted", stuck)
	}
	var w results
	if err := h.Run(context.Background(), Meta{ID: "after"}, payload(t, basic), &w); err != nil || w.result(t).Warm {
		t.Errorf("a task after shutdown: err %v, warm %v; want the cold path", err, w.result(t).Warm)
	}
}

// TestWarmShutdownDuringRefill: a refill that is in flight when the pool
// shuts down neither leaves its VM behind nor its count in the Size hook.
func TestWarmShutdownDuringRefill(t *testing.T) {
	t.Parallel()
	t.Run("ready as shutdown begins", func(t *testing.T) {
		// The refill's VM becomes ready only once the pool's context has
		// ended: it must be deleted, not put in the pool.
		t.Parallel()
		reg := prometheus.NewRegistry()
		m := NewWarmMetrics(reg)
		f := newFake()
		var late atomic.Value // the refill's VM
		armed := make(chan struct{})
		waiting := make(chan struct{})
		var once sync.Once
		f.ready = func(ctx context.Context, name string) error {
			select {
			case <-armed:
				once.Do(func() {
					late.Store(name)
					close(waiting)
				})
				<-ctx.Done()
			default:
			}
			return nil // ready all the same
		}
		h, _ := newHandler(t, f, func(c *Config) { c.Warm = WarmConfig{Images: map[string]int{"alpine:3": 1}, Hooks: m.Hooks()} })
		stop := startPool(t, h)
		waitPool(t, h, "alpine:3", 1)
		close(armed)
		if err := h.Run(context.Background(), Meta{ID: "hit"}, payload(t, basic), nil); err != nil {
			t.Fatal(err)
		}
		<-waiting
		stop()
		if left := f.left(); len(left) != 0 {
			t.Errorf("left after shutdown: %q", left)
		}
		if vm, _ := late.Load().(string); !slices.Contains(opsOn(f, vm), "delete") {
			t.Errorf("the refill's VM %s was not deleted: %q", vm, opsOn(f, vm))
		}
		if n := len(h.Warm().readyNames("alpine:3")); n != 0 {
			t.Errorf("%d VMs in the pool after shutdown", n)
		}
		if got := testutil.ToFloat64(m.size.WithLabelValues("alpine:3")); got != 0 {
			t.Errorf("size after shutdown = %g, want 0", got)
		}
	})
	t.Run("count reported as shutdown begins", func(t *testing.T) {
		// The refill puts its VM in the pool and, before its count of 1
		// reaches the hook, shutdown takes the VM out and reports 0. The
		// hook holds the refill's report until shutdown has reported (or
		// 200 ms, when shutdown's report waits for this one): the last
		// count the gauge gets must still be 0.
		t.Parallel()
		reg := prometheus.NewRegistry()
		m := NewWarmMetrics(reg)
		set := m.Hooks().Size
		var armed atomic.Bool
		var closedZero atomic.Bool // shutdown reported 0
		refilled := make(chan struct{})
		var h *Handler
		closed := func() bool {
			p := h.Warm()
			p.mu.Lock()
			defer p.mu.Unlock()
			return !p.open
		}
		hooks := m.Hooks()
		hooks.Size = func(image string, n int) {
			switch {
			case n == 1 && armed.CompareAndSwap(true, false):
				close(refilled)
				for deadline := time.Now().Add(10 * time.Second); !closed(); time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Error("timed out waiting for shutdown to begin")
						break
					}
				}
				for deadline := time.Now().Add(200 * time.Millisecond); !closedZero.Load() && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
				}
			case n == 0 && closed():
				closedZero.Store(true)
			}
			set(image, n)
		}
		f := newFake()
		h, _ = newHandler(t, f, func(c *Config) { c.Warm = WarmConfig{Images: map[string]int{"alpine:3": 1}, Hooks: hooks} })
		stop := startPool(t, h)
		waitFor(t, "the first VM's count", func() bool { return testutil.ToFloat64(m.size.WithLabelValues("alpine:3")) == 1 })
		armed.Store(true)
		if err := h.Run(context.Background(), Meta{ID: "hit"}, payload(t, basic), nil); err != nil {
			t.Fatal(err)
		}
		<-refilled
		stop()
		if got := testutil.ToFloat64(m.size.WithLabelValues("alpine:3")); got != 0 {
			t.Errorf("size after shutdown = %g, want 0", got)
		}
		if left := f.left(); len(left) != 0 {
			t.Errorf("left after shutdown: %q", left)
		}
	})
}

// TestWarmMaxAndRefills: Max caps the pool's VMs in total, shared fairly
// between images, and no more than Refills are made at once.
func TestWarmMaxAndRefills(t *testing.T) {
	t.Parallel()
	f := newFake()
	var booting, mostBooting, mostVMs atomic.Int32
	f.create = func(context.Context, string, smolvm.CreateOptions) error {
		if n := booting.Add(1); n > mostBooting.Load() {
			mostBooting.Store(n)
		}
		if n := int32(len(f.left()) + 1); n > mostVMs.Load() {
			mostVMs.Store(n)
		}
		return nil
	}
	f.ready = func(context.Context, string) error {
		time.Sleep(5 * time.Millisecond) // let boots overlap
		booting.Add(-1)
		return nil
	}
	h, _ := newHandler(t, f, func(c *Config) {
		c.Warm = WarmConfig{Images: map[string]int{"alpine:3": 3, "busybox:1": 3}, Max: 4, Refills: 2}
	})
	startPool(t, h)
	a := waitPool(t, h, "alpine:3", 2)
	b := waitPool(t, h, "busybox:1", 2)
	for i := range 4 { // claims free room; each refill stays within Max
		var w results
		p := basic
		if i%2 == 1 {
			p.Image = "busybox:1"
		}
		if err := h.Run(context.Background(), Meta{ID: fmt.Sprintf("m%d", i)}, payload(t, p), &w); err != nil {
			t.Fatal(err)
		}
		waitPool(t, h, p.Image, 2)
	}
	if len(a) != 2 || len(b) != 2 {
		t.Errorf("pool split %d/%d, want 2/2", len(a), len(b))
	}
	if n := mostVMs.Load(); n > 4+1 { // 4 pool VMs and the cold or warm task's own
		t.Errorf("%d VMs at once, want at most Max 4 and one task's", n)
	}
	if n := mostBooting.Load(); n > 2 {
		t.Errorf("%d VMs made at once, want at most Refills 2", n)
	}
}

// TestWarmReaper: a reaper spares its own process's pool VMs while they are
// in use and other live processes' pool VMs, and reaps those of a server
// that is gone and its own that no one uses.
func TestWarmReaper(t *testing.T) {
	t.Parallel()
	f := newFake()
	h, _ := newHandler(t, f, func(c *Config) { c.Warm = WarmConfig{Images: map[string]int{"alpine:3": 1}} })
	h.warm.owner = ownerToken("a1b2c3d4-0000-4000-8000-000000000001")
	old := time.Now().Add(-time.Hour).Unix()
	mine := warmName(DefaultDeployment, h.warm.owner)
	mineLeft := warmName(DefaultDeployment, h.warm.owner)
	live := warmName(DefaultDeployment, ownerToken("b1b2c3d4-0000-4000-8000-000000000002"))
	dead := warmName(DefaultDeployment, ownerToken("c1b2c3d4-0000-4000-8000-000000000003"))
	otherDeployment := warmName("other", ownerToken("c1b2c3d4-0000-4000-8000-000000000003"))
	for _, vm := range []string{mine, mineLeft, live, dead, otherDeployment} {
		f.machines[vm] = smolvm.StateRunning
		f.created[vm] = old
	}
	h.own(mine, true)
	self := &asynq.ServerInfo{Host: "host-a", ID: "a1b2c3d4-0000-4000-8000-000000000001"}
	other := &asynq.ServerInfo{Host: "host-a", ID: "b1b2c3d4-0000-4000-8000-000000000002"}
	elsewhere := &asynq.ServerInfo{Host: "host-b", ID: "c1b2c3d4-0000-4000-8000-000000000003"}
	r := &Reaper{Smolvm: f, Handler: h, Hostname: "host-a", Inspector: &fakeInspector{servers: []*asynq.ServerInfo{self, other, elsewhere}}}
	clock := newFakeClock(r)
	if _, err := r.sweepNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	clock.advance(DefaultReapConfirm)
	reaped, err := r.sweepNow(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(reaped)
	want := []string{mineLeft, dead}
	slices.Sort(want)
	if !slices.Equal(reaped, want) {
		t.Errorf("reaped %q, want %q", reaped, want)
	}
}

func TestWarmNames(t *testing.T) {
	t.Parallel()
	owner := ownerToken("3F2504E0-4F89-11D3-9A0C-0305E82C3301")
	if owner != "3f2504e04f8911d3" {
		t.Fatalf("ownerToken = %q", owner)
	}
	a, b := warmName("prod1", owner), warmName("prod1", owner)
	if a == b || smolvm.ValidateName(a) != nil || !strings.HasPrefix(a, vmPrefix("prod1")) {
		t.Errorf("warmName = %q, %q: want distinct valid names of the deployment", a, b)
	}
	for _, tt := range []struct {
		vm    string
		owner string
	}{
		{a, owner},
		{"bq-prod1-warm_" + owner + "_0a1b", owner},
		{VMName("prod1", "warm_x_y", 1), ""},
		{VMName("prod1", "warm-123-abc", 1), ""},
		{"bq-prod1-warm__0a1b", ""},
		{"bq-prod1-warm_Owner_0a1b", ""},
		{"bq-prod1-warm_" + owner + "_", ""},
		{"xx-prod1-warm_" + owner + "_0a1b", ""},
	} {
		got, ok := warmOwnerOf(tt.vm)
		if got != tt.owner || ok != (tt.owner != "") {
			t.Errorf("warmOwnerOf(%q) = %q, %v; want %q", tt.vm, got, ok, tt.owner)
		}
	}
}

// TestWarmOwner: the owner token is that of this process's asynq server,
// once asynq lists it.
func TestWarmOwner(t *testing.T) {
	t.Parallel()
	host, _ := os.Hostname()
	insp := &fakeInspector{servers: []*asynq.ServerInfo{
		{Host: host, PID: os.Getpid() + 1, ID: "11111111-0000-4000-8000-000000000000"},
		{Host: host + "x", PID: os.Getpid(), ID: "22222222-0000-4000-8000-000000000000"},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if tok, err := WarmOwner(ctx, insp); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("without this process's server: %q, %v; want to wait until ctx ends", tok, err)
	}
	insp.servers = append(insp.servers, &asynq.ServerInfo{Host: host, PID: os.Getpid(), ID: "3F2504E0-4F89-11D3-9A0C-0305E82C3301"})
	if tok, err := WarmOwner(context.Background(), insp); err != nil || tok != "3f2504e04f8911d3" {
		t.Errorf("WarmOwner = %q, %v", tok, err)
	}
	h, _ := newHandler(t, newFake(), func(c *Config) { c.Warm = WarmConfig{Images: map[string]int{"alpine:3": 1}} })
	for _, bad := range []string{"", "UPPER", "toolongtoolongtoolong", "a_b"} {
		if err := h.Warm().Run(context.Background(), bad); err == nil {
			t.Errorf("Run with owner %q: no error", bad)
		}
	}
}

func TestWarmMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := NewWarmMetrics(reg)
	f := newFake()
	h, _ := newHandler(t, f, func(c *Config) { c.Warm = WarmConfig{Images: map[string]int{"alpine:3": 1}, Hooks: m.Hooks()} })
	stop := startPool(t, h)
	waitPool(t, h, "alpine:3", 1)
	if err := h.Run(context.Background(), Meta{ID: "hit"}, payload(t, basic), nil); err != nil {
		t.Fatal(err)
	}
	stop()
	if err := h.Run(context.Background(), Meta{ID: "miss"}, payload(t, basic), nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"target", testutil.ToFloat64(m.target.WithLabelValues("alpine:3")), 1},
		{"size after shutdown", testutil.ToFloat64(m.size.WithLabelValues("alpine:3")), 0},
		{"hits", testutil.ToFloat64(m.claims.WithLabelValues("alpine:3", "hit")), 1},
		{"misses", testutil.ToFloat64(m.claims.WithLabelValues("alpine:3", "miss")), 1},
	} {
		if c.got != c.want {
			t.Errorf("%s = %g, want %g", c.name, c.got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.age); n != 1 {
		t.Errorf("%d age series, want 1", n)
	}
	if n := testutil.CollectAndCount(m.refill); n < 1 {
		t.Errorf("%d refill series, want at least 1", n)
	}
}
