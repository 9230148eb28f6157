package worker

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// Smolvm is what the handler needs of smolvm. *smolvm.Client implements it;
// tests pass a fake.
type Smolvm interface {
	// Version, PackImage, PackFromVM, Create, Start, WaitReady, Exec,
	// CopyIn, CopyOut, Stop, Delete, List and Status are *smolvm.Client's
	// methods of those names.
	Version() smolvm.Version
	PackImage(ctx context.Context, image, out string) (smolvm.Pack, error)
	PackFromVM(ctx context.Context, name, out string) (smolvm.Pack, error)
	Create(ctx context.Context, name string, o smolvm.CreateOptions) error
	Start(ctx context.Context, name string) error
	WaitReady(ctx context.Context, name string, timeout time.Duration) error
	Exec(ctx context.Context, name string, command []string, o smolvm.ExecOptions) (smolvm.ExecResult, error)
	CopyIn(ctx context.Context, name, hostPath, guestPath string, mode fs.FileMode) error
	CopyOut(ctx context.Context, name, guestPath, hostPath string) error
	Stop(ctx context.Context, name string) error
	Delete(ctx context.Context, name string) error
	List(ctx context.Context) ([]smolvm.Machine, error)
	Status(ctx context.Context, name string) (smolvm.Machine, error)
}

var _ Smolvm = (*smolvm.Client)(nil)

// Handler is the asynq handler of agent:run tasks.
type Handler struct {
	cfg     Config
	proxy   *ProxyAddr
	cache   *cache
	packs   *packCache
	commits *commits
	from    fromPolicy
	warm    *WarmPool
	log     zerolog.Logger

	mu     sync.Mutex
	active map[string]int // VM names this process is using, with a count
	holds  map[string][]*lease
	wg     sync.WaitGroup
	// cancels, set by Serve, ends tasks that users cancel for good.
	cancels *canceller
	// live, set by Serve, streams tasks' output to Redis as it comes.
	live *liveSink
}

// NewHandler checks cfg and returns a handler, or a [*ConfigError] naming
// the field at fault. With a ProxyURL on a smolvm that would not enforce it,
// it refuses unless AllowUnenforcedEgress is set.
// It writes no file (it resolves FromDirs; the default Store's directory
// comes with its first object): a worker calls [Handler.Sweep] before
// serving.
func NewHandler(cfg Config) (*Handler, error) {
	if cfg.Smolvm == nil {
		return nil, configErr("Smolvm", "required")
	}
	if cfg.DataDir == "" {
		return nil, configErr("DataDir", "required")
	}
	// smolvm cp takes host paths under it: absolute, and a ':' would turn
	// an upload into a download.
	if strings.Contains(cfg.DataDir, ":") {
		return nil, configErr("DataDir", "%q must not contain ':' (smolvm cp reads it as MACHINE:PATH)", cfg.DataDir)
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, &ConfigError{Field: "DataDir", Err: err}
	}
	cfg.DataDir = dataDir
	if cfg.Deployment == "" {
		cfg.Deployment = DefaultDeployment
	}
	if err := ValidateDeployment(cfg.Deployment); err != nil {
		return nil, &ConfigError{Field: "Deployment", Err: err}
	}
	if cfg.Host == "" {
		cfg.Host, _ = os.Hostname()
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.TeardownTimeout <= 0 {
		cfg.TeardownTimeout = DefaultTeardownTimeout
	}
	if cfg.CopyTimeout <= 0 {
		cfg.CopyTimeout = DefaultCopyTimeout
	}
	switch {
	case cfg.MaxFilesBytes == 0:
		cfg.MaxFilesBytes = tasks.DefaultMaxFilesBytes
	case cfg.MaxFilesBytes < 0 || cfg.MaxFilesBytes > tasks.MaxFilesBytesLimit:
		return nil, configErr("MaxFilesBytes", "%d is not between 1 and the hard limit %d (%s)", cfg.MaxFilesBytes, tasks.MaxFilesBytesLimit, tasks.FormatBytes(tasks.MaxFilesBytesLimit))
	}
	if cfg.MaxArtifactBytes == 0 {
		cfg.MaxArtifactBytes = DefaultMaxArtifactBytes
	}
	if cfg.MaxArtifactsBytes == 0 {
		cfg.MaxArtifactsBytes = DefaultMaxArtifactsBytes
	}
	switch {
	case cfg.Retention == 0:
		cfg.Retention = DefaultRetention
	case cfg.Retention < 0:
		return nil, configErr("Retention", "%s must not be negative", cfg.Retention)
	}
	switch {
	case cfg.CacheMaxBytes == 0:
		cfg.CacheMaxBytes = DefaultCacheMaxBytes
	case cfg.CacheMaxBytes < 0:
		return nil, configErr("CacheMaxBytes", "must not be negative")
	}
	if cfg.MaxArtifactBytes < 0 {
		return nil, configErr("MaxArtifactBytes", "must not be negative")
	}
	if cfg.MaxArtifactsBytes < 0 {
		return nil, configErr("MaxArtifactsBytes", "must not be negative")
	}
	if len(cfg.Registries) == 0 {
		cfg.Registries, _ = ParseRegistries(DefaultRegistries)
	} else {
		regs, err := ParseRegistries(strings.Join(cfg.Registries, ","))
		if err != nil {
			return nil, &ConfigError{Field: "Registries", Err: err}
		}
		cfg.Registries = regs
	}
	if err := checkVMConfig(&cfg); err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, active: map[string]int{}, holds: map[string][]*lease{}}
	if h.from, err = newFromPolicy(cfg.FromDirs, cfg.DataDir); err != nil {
		return nil, err
	}
	if cfg.BundledProxy != nil && cfg.ProxyURL == "" {
		return nil, configErr("ProxyURL", "required with a BundledProxy: the address VMs reach it at")
	}
	if cfg.ProxyURL != "" {
		p, err := ParseProxyAddr(cfg.ProxyURL)
		if err != nil {
			return nil, &ConfigError{Field: "ProxyURL", Err: err}
		}
		if v := cfg.Smolvm.Version(); !v.EnforcesAllowCIDROnFrom() && !cfg.AllowUnenforcedEgress {
			return nil, configErr("AllowUnenforcedEgress", "not set, but smolvm %s ignores --allow-cidr on machines created from a pack (fixed in %s), so VMs would get unrestricted egress through the proxy; upgrade smolvm, or set it to accept that", v, smolvm.V1_8_0)
		}
		h.proxy = &p
	}
	if h.cfg.Store == nil {
		if h.cfg.Store, err = store.NewFile(filepath.Join(cfg.DataDir, "store")); err != nil {
			return nil, &ConfigError{Field: "Store", Err: err}
		}
	}
	h.cache = newCache(filepath.Join(cfg.DataDir, "cache"), h.cfg.Store, cfg.CacheMaxBytes, cfg.Logger)
	h.packs = newPackCache(h.cache, cfg.PackTTL, cfg.Smolvm.PackImage, cfg.PackLock)
	h.commits = &commits{cache: h.cache, hostOf: cfg.HostOfTask}
	if h.warm, err = newWarmPool(h); err != nil {
		return nil, err
	}
	return h, nil
}

// Meta is what the handler knows of a task besides its payload.
type Meta struct {
	// ID is the task's ID.
	ID string
	// Queue is the queue it came from.
	Queue string
	// Retried counts the deliveries before this one that failed.
	Retried int
	// MaxRetry is how many retries the task allows.
	MaxRetry int
}

// ProcessTask implements asynq.Handler. Under [Serve], a task a user
// cancels (enqueue cancel, the dashboard's cancel) ends for good: its VM
// deleted, its result cancelled, archived without retry; a shutdown puts
// it back in its queue instead.
func (h *Handler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var m Meta
	m.ID, _ = asynq.GetTaskID(ctx)
	m.Queue, _ = asynq.GetQueueName(ctx)
	m.Retried, _ = asynq.GetRetryCount(ctx)
	m.MaxRetry, _ = asynq.GetMaxRetry(ctx)
	var w io.Writer
	if rw := t.ResultWriter(); rw != nil {
		w = rw
	}
	if h.cancels != nil {
		return h.cancels.process(ctx, h, m, t.Payload(), w)
	}
	return h.Run(ctx, m, t.Payload(), w)
}

// Wait blocks until every task this handler is running has returned, its
// VM torn down. asynq's shutdown requeues a task it gives up on and cancels
// its context without waiting for the handler; the worker calls Wait after
// it so no VM outlives the process.
func (h *Handler) Wait() { h.wg.Wait() }

// Run runs one task: what ProcessTask does, with the task's metadata given.
// w receives JSON tasks.Result reports; it may be nil.
func (h *Handler) Run(ctx context.Context, m Meta, payload []byte, w io.Writer) error {
	h.wg.Add(1)
	defer h.wg.Done()
	attempt := m.Retried + 1
	log := h.log.With().Str("task_id", m.ID).Int("attempt", attempt).Logger()

	p, err := tasks.Decode(payload)
	if err == nil {
		err = h.runnableHere(p)
	}
	if err != nil {
		log.Warn().Str("phase", "decode").Err(err).Msg(msgInvalid)
		h.outcome(OutcomeInvalid, "decode")
		return noRetry(err)
	}
	r := &run{h: h, p: p, w: w, vm: VMName(h.cfg.Deployment, m.ID, attempt), taskID: m.ID,
		storeRun: strconv.Itoa(attempt) + "-" + randHex(4)}
	r.log = log.With().Str("vm", r.vm).Logger()
	r.scrub = newScrubber(slices.Collect(maps.Values(p.Env))...)
	r.res = tasks.Result{
		Host: h.cfg.Host, Tenant: p.TenantName(), VM: r.vm, Attempt: attempt,
		SmolvmVersion: h.cfg.Smolvm.Version().String(),
	}
	start := time.Now()
	ctx = r.log.WithContext(ctx) // smolvm's lines carry the task's fields too
	r.log.Info().Str("phase", "start").Msg("task started")
	r.live = h.live.open(ctx, m, r.res, r.log)
	err = r.scrub.err(r.pipeline(ctx))
	r.live.close(ctx, r.res, err)
	if err != nil {
		r.res.Error = err.Error()
		r.report()
		o := outcomeOf(ctx, err, m)
		level := zerolog.WarnLevel
		if o == OutcomeFailed {
			level = zerolog.ErrorLevel // the task ends without a result
		}
		r.log.WithLevel(level).Str("phase", r.res.Phase).Err(err).Msg(failedMsg(o, m))
		r.ended(o)
		if o == OutcomeInvalid {
			return noRetry(err)
		}
		return err
	}
	r.res.State = tasks.StateDone
	r.report()
	r.live.linger(ctx)
	r.log.Info().Str("phase", "done").Int("exit_code", r.res.ExitCode).Float64("duration_ms", ms(time.Since(start))).Msg("task finished")
	r.ended(OutcomeCompleted)
	return nil
}

// runnableHere checks what this worker's configuration adds to a valid
// payload, before any smolvm call.
func (h *Handler) runnableHere(p tasks.AgentRun) error {
	if n := p.FilesBytes(); n > h.cfg.MaxFilesBytes {
		return &tasks.ValidationError{Field: "files", Reason: fmt.Sprintf("%s in total, over this worker's cap of %s",
			tasks.FormatBytes(n), tasks.FormatBytes(h.cfg.MaxFilesBytes))}
	}
	if p.Image != "" {
		if reason := imageAllowed(p.Image, h.cfg.Registries); reason != "" {
			return &tasks.ValidationError{Field: "image", Reason: reason}
		}
	}
	if len(p.AllowHosts) > 0 && h.cfg.BundledProxy == nil {
		return &tasks.ValidationError{Field: "allow_hosts", Reason: "this worker has no bundled egress proxy to enforce it"}
	}
	_, _, err := h.resources(p)
	return err
}
