package worker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// The warm pool keeps started, exec-ready VMs of some images so that a task
// of one of them skips create, start and ready. A pool VM is made exactly as
// a task's VM of its image would be with the worker's own resources: the
// same pack, --cpus and --mem, allow-list, DNS and proxy variables (which
// hold no task's credentials: those go only into the exec's environment, as
// on the cold path), then started and probed until exec works. A task whose
// first create would have had the same options takes one out of the pool
// under a lock; from then on the VM is that task's alone, and its teardown
// deletes it like any other. A pool VM is never returned, reused or shared,
// and nothing of a task enters it before it is claimed.

// Defaults of [WarmConfig]: a field left zero gets its constant, and
// cmd/worker's flags default to the same constants.
const (
	// DefaultWarmMaxAge is WarmConfig.MaxAge's default.
	DefaultWarmMaxAge = 10 * time.Minute
	// DefaultWarmRefills is WarmConfig.Refills's default.
	DefaultWarmRefills = 2
)

const (
	// warmTick is how often the pool looks for VMs past their age and for
	// packs that were refreshed, besides after each claim.
	warmTick = time.Second
	// warmBackoffMin and warmBackoffMax bound the wait before an image
	// whose pool VM failed is tried again; it doubles per failure in a row.
	warmBackoffMin = 500 * time.Millisecond
	warmBackoffMax = 30 * time.Second
	// warmDrainers is how many pool VMs are deleted at once at shutdown.
	warmDrainers = 8
	// warmMark follows the deployment in a pool VM's name. Its '_' is in
	// no task VM's name, whose slug holds letters, digits and '-' only.
	warmMark = "warm_"
	// maxOwnerLen is the longest owner token in a pool VM's name.
	maxOwnerLen = 16
)

// WarmConfig configures a handler's warm pool ([Config].Warm). The zero
// value has none.
type WarmConfig struct {
	// Images maps an image reference, as payloads name it, to how many
	// started VMs of it to keep waiting, at least 1. Each must be a valid
	// payload image from one of Config.Registries. Empty: no pool.
	Images map[string]int
	// Max caps the pool's VMs in total, those being made or deleted
	// included. They count apart from the server's concurrency: a claimed
	// VM is the task's. Zero: the sum of Images; negative is refused.
	Max int
	// MaxAge is how long a VM may wait unclaimed; an older one is deleted
	// and replaced. Zero or negative: DefaultWarmMaxAge.
	MaxAge time.Duration
	// Refills is how many pool VMs are made at once, so that refilling
	// never takes more of the host than that from running tasks. Zero or
	// negative: DefaultWarmRefills.
	Refills int
	// Hooks observe the pool, for metrics. Default: none.
	Hooks WarmHooks
}

// WarmHooks are called by the warm pool. Any may be nil.
type WarmHooks struct {
	// Target is called once per image when the pool starts, with how many
	// VMs of it the pool keeps.
	Target func(image string, n int)
	// Size is called with the number of ready VMs of an image each time it
	// may have changed. Calls are made one at a time, each with the count
	// at the time it is made, so the last call is never older than the
	// last change: after Run returns, the last call for each image said 0.
	Size func(image string, ready int)
	// Claim is called for each task that the pool could serve (a pooled
	// image, the pool's create options): hit with the age of the VM it
	// got (how long it had been ready), or a miss.
	Claim func(image string, hit bool, age time.Duration)
	// Refill is called after each try to make a pool VM, with how long it
	// took (pack lookup, create, start, ready) and its error.
	Refill func(image string, d time.Duration, err error)
}

// ParseWarm reads the -warm flag: IMAGE=N pairs separated by commas, each N
// at least 1. An empty string is no pool. An image listed twice is refused.
func ParseWarm(s string) (map[string]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		i := strings.LastIndexByte(part, '=')
		if i <= 0 {
			return nil, fmt.Errorf("%q must be IMAGE=N", part)
		}
		image := strings.TrimSpace(part[:i])
		n, err := strconv.Atoi(strings.TrimSpace(part[i+1:]))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q: N must be a whole number of at least 1", part)
		}
		if _, dup := out[image]; dup {
			return nil, fmt.Errorf("%q is listed twice", image)
		}
		out[image] = n
	}
	return out, nil
}

// WarmPool is a handler's warm pool: started, exec-ready VMs per image,
// each handed to one task and never back. [Handler.Warm] returns it and
// [WarmPool.Run] fills it; until Run starts, every task takes the cold path.
type WarmPool struct {
	h        *Handler
	targets  map[string]int
	images   []string                        // sorted: the fill order
	template map[string]smolvm.CreateOptions // image → its VMs' first create
	max      int
	maxAge   time.Duration
	hooks    WarmHooks
	sem      *semaphore.Weighted
	log      zerolog.Logger
	kick     chan struct{}
	wg       sync.WaitGroup // making, draining and refreshing goroutines

	// tick and backoff are warmTick and warmBackoffMin, shorter in tests.
	tick, backoff time.Duration

	// reportMu makes the Size hook's calls one at a time; see report.
	reportMu sync.Mutex

	mu         sync.Mutex
	owner      string
	open       bool                 // Run is filling it: claims may take VMs
	ready      map[string][]*warmVM // oldest first
	making     map[string]int
	draining   int
	failures   map[string]int // failed tries in a row
	retryAt    map[string]time.Time
	refreshing map[string]bool
}

// warmVM is a ready pool VM.
type warmVM struct {
	name  string
	pack  os.FileInfo // the .smolmachine it was created from
	ready time.Time
}

// newWarmPool checks h's WarmConfig and returns its pool, or nil when it
// lists no image. h's proxy, packs and registries must be set.
func newWarmPool(h *Handler) (*WarmPool, error) {
	c := h.cfg.Warm
	if len(c.Images) == 0 {
		return nil, nil
	}
	images := slices.Sorted(maps.Keys(c.Images))
	total := 0
	for _, img := range images {
		n := c.Images[img]
		if n < 1 {
			return nil, configErr("Warm", "%s=%d: keep at least 1 VM of an image, or leave it out", img, n)
		}
		if err := (tasks.AgentRun{Image: img, Command: []string{"true"}}).Validate(); err != nil {
			return nil, &ConfigError{Field: "Warm", Err: err}
		}
		if reason := imageAllowed(img, h.cfg.Registries); reason != "" {
			return nil, configErr("Warm", "%s", reason)
		}
		total += n
	}
	switch {
	case c.Max < 0:
		return nil, configErr("Warm.Max", "%d must not be negative", c.Max)
	case c.Max == 0:
		c.Max = total
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultWarmMaxAge
	}
	if c.Refills <= 0 {
		c.Refills = DefaultWarmRefills
	}
	p := &WarmPool{
		h: h, targets: maps.Clone(c.Images), images: images, template: map[string]smolvm.CreateOptions{},
		max: c.Max, maxAge: c.MaxAge, hooks: c.Hooks, sem: semaphore.NewWeighted(int64(c.Refills)),
		log: h.log.With().Str("component", "warm").Logger(), kick: make(chan struct{}, 1),
		tick: warmTick, backoff: warmBackoffMin,
		ready: map[string][]*warmVM{}, making: map[string]int{}, failures: map[string]int{},
		retryAt: map[string]time.Time{}, refreshing: map[string]bool{},
	}
	for _, img := range images {
		// What a task of img asking for no resources sends first.
		pack := h.packs.path(img)
		p.template[img] = (&run{h: h}).createOptions(pack, h.cfg.VMCPUs, h.cfg.VMMemMiB)
	}
	return p, nil
}

// Warm returns the handler's warm pool, or nil when [Config].Warm lists no
// image.
func (h *Handler) Warm() *WarmPool { return h.warm }

// warmOwner is the owner token in this process's pool VM names, or "".
func (h *Handler) warmOwner() string {
	if h.warm == nil {
		return ""
	}
	h.warm.mu.Lock()
	defer h.warm.mu.Unlock()
	return h.warm.owner
}

// Run fills the pool and keeps it full until ctx ends, then deletes every
// VM still in it (waiting at most Config.TeardownTimeout for each) and
// returns. owner goes into the pool VMs' names: the token [WarmOwner]
// returns, by which the reapers of other workers on this host know that
// this live process owns them; after a crash they reap them as orphans.
// Run may be called once.
func (p *WarmPool) Run(ctx context.Context, owner string) error {
	if err := validOwner(owner); err != nil {
		return err
	}
	p.mu.Lock()
	if p.owner != "" {
		p.mu.Unlock()
		return errors.New("worker: WarmPool.Run called twice")
	}
	p.owner, p.open = owner, true
	p.mu.Unlock()
	for _, img := range p.images {
		if p.hooks.Target != nil {
			p.hooks.Target(img, p.targets[img])
		}
	}
	p.report(p.images...)
	p.log.Info().Str("phase", "warm").Any("images", p.targets).Int("max", p.max).Dur("max_age", p.maxAge).Msg("warm pool filling")
	for {
		wait := p.maintain(ctx)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			p.shutdown(ctx)
			return nil
		case <-p.kick:
			t.Stop()
		case <-t.C:
		}
	}
}

// poke wakes Run's loop.
func (p *WarmPool) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// expired reports whether vm must leave the pool unclaimed: it waited
// MaxAge, or the pack of its image was made again since (cur, when known).
func (p *WarmPool) expired(vm *warmVM, cur os.FileInfo, now time.Time) bool {
	return now.Sub(vm.ready) >= p.maxAge || (cur != nil && !samePack(vm.pack, cur))
}

// samePack reports whether two stats are of the same pack file: a pack
// made again is renamed into place, a new file.
func samePack(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

// maintain drains the VMs that expired, starts making VMs where an image
// has fewer than its target (within Max and each image's backoff), and
// refreshes packs that are due. It returns how long Run may sleep.
func (p *WarmPool) maintain(ctx context.Context) time.Duration {
	now := time.Now()
	cur := map[string]os.FileInfo{}
	var due []string
	for _, img := range p.images {
		if info, err := os.Stat(p.template[img].From); err == nil {
			cur[img] = info
			if !p.h.packs.fresh(img) {
				due = append(due, img)
			}
		}
	}
	next := p.tick
	var stale []*warmVM
	var refresh, changed []string
	p.mu.Lock()
	for _, img := range p.images {
		var kept []*warmVM
		for _, vm := range p.ready[img] {
			if p.expired(vm, cur[img], now) {
				stale = append(stale, vm)
			} else {
				kept = append(kept, vm)
			}
		}
		if len(kept) != len(p.ready[img]) {
			p.ready[img] = kept
			changed = append(changed, img)
		}
	}
	p.draining += len(stale)
	total := p.draining
	for _, img := range p.images {
		total += len(p.ready[img]) + p.making[img]
	}
	for total < p.max {
		img := p.neediest(now)
		if img == "" {
			break
		}
		p.making[img]++
		total++
		p.wg.Add(1)
		go p.make(ctx, img)
	}
	for _, img := range p.images {
		if at := p.retryAt[img]; at.After(now) && p.deficit(img) > 0 {
			next = min(next, at.Sub(now))
		}
	}
	for _, img := range due {
		if !p.refreshing[img] {
			p.refreshing[img] = true
			refresh = append(refresh, img)
		}
	}
	p.mu.Unlock()
	p.report(changed...)
	for _, vm := range stale {
		p.wg.Add(1)
		go p.drain(ctx, vm)
	}
	for _, img := range refresh {
		p.wg.Add(1)
		go p.refresh(ctx, img)
	}
	return next
}

// deficit is how many VMs img lacks, counting those being made. p.mu is
// held.
func (p *WarmPool) deficit(img string) int {
	return p.targets[img] - len(p.ready[img]) - p.making[img]
}

// neediest returns the image furthest below its target that is not backing
// off, the first in order on a tie, or "". p.mu is held.
func (p *WarmPool) neediest(now time.Time) string {
	best, most := "", 0
	for _, img := range p.images {
		if d := p.deficit(img); d > most && !p.retryAt[img].After(now) {
			best, most = img, d
		}
	}
	return best
}

// report tells the Size hook how many VMs of each of images are ready.
// Reports are made one at a time and each reads the count it reports, so
// a report is never overtaken by an older one: a refill that put its VM in
// just before shutdown emptied the pool cannot report its count after
// shutdown reported 0, as it could when the count went with the change.
func (p *WarmPool) report(images ...string) {
	if p.hooks.Size == nil || len(images) == 0 {
		return
	}
	p.reportMu.Lock()
	defer p.reportMu.Unlock()
	for _, img := range images {
		p.mu.Lock()
		n := len(p.ready[img])
		p.mu.Unlock()
		p.hooks.Size(img, n)
	}
}

// make makes one VM of image, with at most Refills at once, and puts it in
// the pool; a VM that failed is deleted and the image backs off.
func (p *WarmPool) make(ctx context.Context, image string) {
	defer p.wg.Done()
	defer p.poke()
	if err := p.sem.Acquire(ctx, 1); err != nil {
		p.mu.Lock()
		p.making[image]--
		p.mu.Unlock()
		return // shutting down
	}
	start := time.Now()
	vm, err := p.boot(ctx, image)
	p.sem.Release(1)
	d := time.Since(start)
	p.mu.Lock()
	p.making[image]--
	keep := err == nil && p.open // closed: shutdown took what was ready
	switch {
	case keep:
		p.ready[image] = append(p.ready[image], vm)
		p.failures[image] = 0
	case err != nil && ctx.Err() == nil:
		p.failures[image]++
		wait := p.backoff << min(p.failures[image]-1, 16)
		p.retryAt[image] = time.Now().Add(min(wait, warmBackoffMax))
	}
	p.mu.Unlock()
	if err != nil && ctx.Err() != nil {
		return // shutting down: not a failure of the image
	}
	if p.hooks.Refill != nil {
		p.hooks.Refill(image, d, err)
	}
	switch {
	case err != nil:
		p.log.Warn().Str("phase", "warm").Str("image", image).Err(err).Msg("pool VM failed; deleted, will try again")
	case keep:
		p.log.Debug().Str("phase", "warm").Str("image", image).Str("vm", vm.name).Float64("duration_ms", ms(d)).Msg("pool VM ready")
		p.report(image)
	default:
		p.destroy(ctx, vm.name, true) // the pool closed meanwhile
	}
}

// boot makes one pool VM of image as a task's VM of it would be made, from
// the pack on disk now, and starts it until exec works. The VM is
// registered as in use from before its create; on failure it is deleted.
func (p *WarmPool) boot(ctx context.Context, image string) (*warmVM, error) {
	h := p.h
	pack, _, hold, err := h.packs.Get(ctx, image)
	if err != nil {
		return nil, err
	}
	// Stat before create: a pack made again in between is newer than
	// this record says, and its VM is drained, never handed out stale.
	info, err := os.Stat(pack.Machine)
	if err != nil {
		hold.Release()
		return nil, err
	}
	o := p.template[image]
	o.From = pack.Machine
	name := warmName(h.cfg.Deployment, p.owner)
	r := &run{h: h, p: tasks.AgentRun{Image: image}, vm: name, log: p.log.With().Str("vm", name).Str("image", image).Logger()}
	ctx = r.log.WithContext(ctx)
	h.own(name, true)
	h.holdWhileOwned(name, hold)
	err = r.createBoxed(ctx, o)
	if err == nil {
		err = h.cfg.Smolvm.Start(ctx, name)
	}
	if err == nil {
		err = h.cfg.Smolvm.WaitReady(ctx, name, h.cfg.ReadyTimeout)
	}
	if err != nil {
		p.destroy(ctx, name, r.created)
		return nil, err
	}
	return &warmVM{name: name, pack: info, ready: time.Now()}, nil
}

// drain deletes a VM that left the pool unclaimed.
func (p *WarmPool) drain(ctx context.Context, vm *warmVM) {
	defer p.wg.Done()
	p.log.Debug().Str("phase", "warm").Str("vm", vm.name).Dur("age", time.Since(vm.ready)).Msg("pool VM expired; deleting it")
	p.destroy(ctx, vm.name, true)
	p.mu.Lock()
	p.draining--
	p.mu.Unlock()
	p.poke()
}

// refresh packs image again: its pack is older than Config.PackTTL. Run's
// next look drains the VMs of the old pack.
func (p *WarmPool) refresh(ctx context.Context, image string) {
	defer p.wg.Done()
	_, _, hold, err := p.h.packs.Get(ctx, image)
	hold.Release()
	if err != nil && ctx.Err() == nil {
		p.log.Warn().Str("phase", "warm").Str("image", image).Err(err).Msg("pack refresh failed; pool VMs of the old pack stay until they expire")
	}
	p.mu.Lock()
	p.refreshing[image] = false
	p.mu.Unlock()
	p.poke()
}

// destroy deletes a pool VM that no task got, under a context that ctx's
// end cannot cut short: retried as a task's teardown is, then left to the
// reaper. created says whether the VM counted in the VMs hook.
func (p *WarmPool) destroy(ctx context.Context, name string, created bool) {
	h := p.h
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.TeardownTimeout)
	defer cancel()
	defer h.own(name, false)
	var err error
	for try := 1; try <= 3; try++ {
		if err = h.cfg.Smolvm.Delete(ctx, name); err == nil || errors.Is(err, smolvm.ErrNotFound) {
			err = nil
			break
		}
		p.log.Warn().Str("phase", tasks.PhaseDelete).Str("vm", name).Int("try", try).Err(err).Msg("delete failed")
		select {
		case <-ctx.Done():
			try = 3
		case <-time.After(time.Duration(try) * 250 * time.Millisecond):
		}
	}
	if created {
		h.vms(-1)
	}
	if err != nil {
		p.log.Error().Str("phase", tasks.PhaseDelete).Str("vm", name).Err(err).Msg("pool VM left behind; the reaper will delete it")
		if h.cfg.Hooks.DeleteFailed != nil {
			h.cfg.Hooks.DeleteFailed(name)
		}
	}
}

// shutdown closes the pool and deletes every VM in it and being made.
func (p *WarmPool) shutdown(ctx context.Context) {
	p.mu.Lock()
	p.open = false
	var all []*warmVM
	for _, img := range p.images {
		all = append(all, p.ready[img]...)
		p.ready[img] = nil
	}
	p.mu.Unlock()
	p.report(p.images...)
	p.log.Info().Str("phase", "warm").Int("vms", len(all)).Msg("warm pool closing: deleting its VMs")
	var g errgroup.Group
	g.SetLimit(warmDrainers)
	for _, vm := range all {
		g.Go(func() error {
			p.destroy(ctx, vm.name, true)
			return nil
		})
	}
	g.Wait()
	p.wg.Wait() // VMs being made see ctx's end and delete themselves
}

// claim takes the oldest ready VM of image out of the pool for a task
// whose first create would have been create, or reports a miss. A task of
// an image the pool does not keep, or with other options, is no claim at
// all: counted reports whether the pool could have served it.
func (p *WarmPool) claim(image string, create smolvm.CreateOptions) (vm *warmVM, counted bool) {
	tmpl, pooled := p.template[image]
	if !pooled || !sameCreateOptions(create, tmpl) {
		return nil, false
	}
	cur, err := os.Stat(tmpl.From)
	now := time.Now()
	p.mu.Lock()
	if p.open && err == nil {
		vms := p.ready[image]
		for i, v := range vms {
			if !p.expired(v, cur, now) {
				vm = v
				p.ready[image] = slices.Delete(vms, i, i+1)
				break
			}
		}
	}
	p.mu.Unlock()
	if p.hooks.Claim != nil {
		var age time.Duration
		if vm != nil {
			age = now.Sub(vm.ready)
		}
		p.hooks.Claim(image, vm != nil, age)
	}
	if vm != nil {
		p.report(image)
	}
	p.poke() // refill, or drain what expired
	return vm, true
}

// sameCreateOptions reports whether two creates make the same VM.
func sameCreateOptions(a, b smolvm.CreateOptions) bool {
	return a.From == b.From && a.CPUs == b.CPUs && a.MemoryMiB == b.MemoryMiB &&
		slices.Equal(a.AllowCIDRs, b.AllowCIDRs) && a.LocalhostOnly == b.LocalhostOnly && a.DNS == b.DNS &&
		maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Env, b.Env)
}

// claimWarm is the pipeline's step before create: when the warm pool has a
// VM that the task's first create would have made, the run takes it over,
// started, ready and registered as in use, skips create, start and ready,
// and owns its deletion. It returns the context to go on with, whose
// logger names that VM, and whether the run is warm.
func (r *run) claimWarm(ctx context.Context, create smolvm.CreateOptions) (context.Context, bool) {
	p := r.h.warm
	if p == nil || r.p.Image == "" {
		return ctx, false
	}
	vm, counted := p.claim(r.p.Image, create)
	if vm == nil {
		if counted {
			r.log.Debug().Str("phase", "warm").Msg("no warm VM ready: cold start")
		}
		return ctx, false
	}
	r.vm, r.res.VM, r.created = vm.name, vm.name, true
	r.res.Warm = true
	r.res.SkippedPhases = []string{tasks.PhaseCreate, tasks.PhaseStart, tasks.PhaseReady}
	// The fields of Run's logger, with the VM the task runs in.
	r.log = r.h.log.With().Str("task_id", r.taskID).Int("attempt", r.res.Attempt).Str("vm", r.vm).Logger()
	r.log.Debug().Str("phase", "warm").Dur("age", time.Since(vm.ready)).Msg("claimed a warm VM")
	return r.log.WithContext(ctx), true
}

// warmName names a pool VM of deployment and owner: namePrefix, the
// deployment, warmMark, the owner token, '_' and 48 random bits.
func warmName(deployment, owner string) string {
	return vmPrefix(deployment) + warmMark + owner + "_" + randHex(6)
}

// warmOwnerOf returns the owner token in a pool VM's name.
func warmOwnerOf(vm string) (string, bool) {
	rest, ok := strings.CutPrefix(vm, namePrefix)
	if !ok {
		return "", false
	}
	if _, rest, ok = strings.Cut(rest, "-"); !ok { // past the deployment
		return "", false
	}
	if rest, ok = strings.CutPrefix(rest, warmMark); !ok {
		return "", false
	}
	owner, suffix, ok := strings.Cut(rest, "_")
	if !ok || validOwner(owner) != nil || suffix == "" {
		return "", false
	}
	return owner, true
}

// validOwner checks an owner token: 1 to maxOwnerLen lowercase letters and
// digits.
func validOwner(owner string) error {
	if owner == "" || len(owner) > maxOwnerLen || strings.Trim(owner, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return fmt.Errorf("worker: warm pool owner %q must be 1 to %d lowercase letters and digits", owner, maxOwnerLen)
	}
	return nil
}

// ownerToken is the owner token of the asynq server with ID id: its first
// maxOwnerLen lowercase letters and digits (asynq's IDs are random UUIDs).
func ownerToken(id string) string {
	var b strings.Builder
	for i := 0; i < len(id) && b.Len() < maxOwnerLen; i++ {
		c := id[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// WarmOwner waits until asynq lists the server of this process (on this
// host, with this PID), which [Serve] starts, and returns the owner token
// of its pool VMs, taken from the server's ID. A reaper spares the pool VMs
// whose owner is a live server on its host; once a crashed process's
// heartbeat expires, they are orphans. It fails only when ctx ends first.
func WarmOwner(ctx context.Context, insp Inspector) (string, error) {
	host, _ := os.Hostname()
	pid := os.Getpid()
	for {
		servers, err := insp.Servers()
		if err == nil {
			var mine *asynq.ServerInfo
			for _, s := range servers {
				if s.Host == host && s.PID == pid && (mine == nil || s.Started.After(mine.Started)) {
					mine = s
				}
			}
			if mine != nil {
				if tok := ownerToken(mine.ID); tok != "" {
					return tok, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
