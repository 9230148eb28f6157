package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/egress"
	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// Smolvm is what the handler needs of smolvm. *smolvm.Client implements it;
// tests pass a fake.
type Smolvm interface {
	// Version, PackImage, PackFromVM, Create, Start, WaitReady, Exec,
	// CopyIn, CopyOut, Stop, Delete and List are *smolvm.Client's methods
	// of those names.
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
}

var _ Smolvm = (*smolvm.Client)(nil)

// Config configures a [Handler]. Zero values have working defaults except
// where a field says it is required.
type Config struct {
	// Smolvm runs smolvm. Required.
	Smolvm Smolvm
	// DataDir holds packs (packs/) and commits (commits/). Required.
	DataDir string
	// Host names this host in results. Default: os.Hostname.
	Host string
	// Proxy is the egress proxy, "http://IP:PORT". VMs may then reach that
	// address only, and get HTTP(S)_PROXY pointing at it. Default: none,
	// and VMs get no network at all.
	Proxy string
	// AllowUnenforcedEgress lets a Proxy be used with a smolvm older than
	// 1.8.0, which ignores --allow-cidr for machines created from a pack,
	// so VMs get unrestricted egress. Default false: refuse.
	AllowUnenforcedEgress bool
	// PackTTL is how long the pack of a tagged (not digest-pinned) image is
	// reused before it is packed again. Zero means the default, 24h;
	// negative: forever.
	PackTTL time.Duration
	// ReadyTimeout bounds the wait for exec to work after start.
	// Default 60s.
	ReadyTimeout time.Duration
	// TeardownTimeout bounds deleting the VM, which runs even when the task
	// was cancelled. Default 2m.
	TeardownTimeout time.Duration
	// Commits finds earlier tasks' commits. Default: this host's data
	// directory only.
	Commits Commits
	// HostOfTask, with the default Commits, names the host of a commit that
	// is not here. Default: none.
	HostOfTask HostOfTask
	// Egress is the bundled egress proxy. When set, Proxy must be its
	// address as VMs reach it; each task registers its allow_hosts with it
	// and gets credentials of its own, and the task's egress record goes
	// into its result. Default: none, and a task with allow_hosts is
	// refused.
	Egress *egress.Proxy
	// Busy reports whether another live worker process is using a VM of
	// this name: the same task attempt delivered twice (asynq is
	// at-least-once). A leftover VM is deleted only when it is not busy.
	// Default: never busy.
	Busy func(ctx context.Context, vm string) (bool, error)
	// MaxFilesBytes caps the total content of a task's files. A task over
	// it is archived without retry before any smolvm call. Default
	// tasks.DefaultMaxFilesBytes; at most tasks.MaxFilesBytesLimit.
	MaxFilesBytes int64
	// MaxArtifactBytes caps one artifact: a bigger file is deleted and
	// recorded as over the cap. Default DefaultMaxArtifactBytes.
	MaxArtifactBytes int64
	// MaxArtifactsBytes caps the artifacts of one task together: an
	// artifact that would pass it is deleted and recorded as over the cap.
	// Default DefaultMaxArtifactsBytes.
	MaxArtifactsBytes int64
	// Logger gets the handler's lines. Default: none.
	Logger zerolog.Logger
	// Hooks observe the pipeline, for metrics. Default: none.
	Hooks Hooks
}

// Hooks are called by the handler as tasks run. Any may be nil.
type Hooks struct {
	// Phase is called after each phase with its duration and error.
	Phase func(phase string, d time.Duration, err error)
	// Outcome is called once per task attempt with one of the Outcome
	// constants and the phase it ended in.
	Outcome func(outcome, phase string)
	// PackCache is called with whether an image pack was reused.
	PackCache func(hit bool)
	// VMs is called with +1 when a VM is created and -1 when it is deleted.
	VMs func(delta int)
	// DeleteFailed is called when a VM could not be deleted after retries.
	DeleteFailed func(vm string)
}

// Defaults of the artifact caps in [Config].
const (
	DefaultMaxArtifactBytes  = 64 << 20
	DefaultMaxArtifactsBytes = 256 << 20
)

// Outcomes of a task attempt, for [Hooks].Outcome.
const (
	OutcomeCompleted = "completed" // the command ran; its exit code is the result
	OutcomeFailed    = "failed"    // a smolvm failure; asynq retries the task
	OutcomeInvalid   = "invalid"   // bad input; archived without retry
	OutcomeCancelled = "cancelled" // the task's context ended (shutdown or timeout)
)

// Handler is the asynq handler of agent:run tasks.
type Handler struct {
	cfg     Config
	proxy   *Proxy
	packs   *PackCache
	commits packStore
	log     zerolog.Logger

	mu     sync.Mutex
	active map[string]int // VM names this process is using, with a count
	wg     sync.WaitGroup
}

// NewHandler checks cfg and returns a handler. With a Proxy on a smolvm
// that would not enforce it, it refuses unless AllowUnenforcedEgress is set.
func NewHandler(cfg Config) (*Handler, error) {
	if cfg.Smolvm == nil {
		return nil, errors.New("worker: Config.Smolvm is required")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("worker: Config.DataDir is required")
	}
	// smolvm cp takes host paths under it: absolute, and a ':' would turn
	// an upload into a download.
	if strings.Contains(cfg.DataDir, ":") {
		return nil, fmt.Errorf("worker: data directory %q must not contain ':' (smolvm cp reads it as MACHINE:PATH)", cfg.DataDir)
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("worker: data directory: %w", err)
	}
	cfg.DataDir = dataDir
	if cfg.Host == "" {
		cfg.Host, _ = os.Hostname()
	}
	if cfg.PackTTL == 0 {
		cfg.PackTTL = 24 * time.Hour
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 60 * time.Second
	}
	if cfg.TeardownTimeout <= 0 {
		cfg.TeardownTimeout = 2 * time.Minute
	}
	switch {
	case cfg.MaxFilesBytes == 0:
		cfg.MaxFilesBytes = tasks.DefaultMaxFilesBytes
	case cfg.MaxFilesBytes < 0 || cfg.MaxFilesBytes > tasks.MaxFilesBytesLimit:
		return nil, fmt.Errorf("max-files-bytes: %d is not between 1 and the hard limit %d (%s)", cfg.MaxFilesBytes, tasks.MaxFilesBytesLimit, tasks.FormatBytes(tasks.MaxFilesBytesLimit))
	}
	if cfg.MaxArtifactBytes == 0 {
		cfg.MaxArtifactBytes = DefaultMaxArtifactBytes
	}
	if cfg.MaxArtifactsBytes == 0 {
		cfg.MaxArtifactsBytes = DefaultMaxArtifactsBytes
	}
	if cfg.MaxArtifactBytes < 0 || cfg.MaxArtifactsBytes < 0 {
		return nil, errors.New("max-artifact-bytes, max-artifacts-bytes: must not be negative")
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, active: map[string]int{}}
	if cfg.Egress != nil && cfg.Proxy == "" {
		return nil, errors.New("worker: Config.Egress needs Config.Proxy, the address VMs reach it at")
	}
	if cfg.Proxy != "" {
		p, err := ParseProxy(cfg.Proxy)
		if err != nil {
			return nil, err
		}
		if v := cfg.Smolvm.Version(); !v.EnforcesAllowCIDROnFrom() && !cfg.AllowUnenforcedEgress {
			return nil, fmt.Errorf("proxy: smolvm %s ignores --allow-cidr on machines created from a pack (fixed in %s), so VMs would get unrestricted egress; upgrade smolvm, or accept that with --allow-unenforced-egress", v, smolvm.V1_8_0)
		}
		h.proxy = &p
	}
	h.packs = NewPackCache(filepath.Join(cfg.DataDir, "packs"), cfg.PackTTL, cfg.Smolvm.PackImage)
	h.commits = packStore{dir: filepath.Join(cfg.DataDir, "commits")}
	if h.cfg.Commits == nil {
		h.cfg.Commits = localCommits{store: h.commits, host: cfg.Host, hostOf: cfg.HostOfTask}
	}
	for _, s := range []packStore{h.packs.store, h.commits} {
		s.sweep(time.Hour)
	}
	// Artifacts half-copied when a worker crashed.
	dirs, _ := filepath.Glob(filepath.Join(cfg.DataDir, "artifacts", "*"))
	for _, d := range dirs {
		packStore{dir: d}.sweep(time.Hour)
	}
	if err := os.MkdirAll(h.tmpDir(), 0o700); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	sweepTmp(h.tmpDir(), time.Hour)
	return h, nil
}

// Proxy is a parsed egress proxy address.
type Proxy struct {
	// URL is what the VM gets in HTTP_PROXY and HTTPS_PROXY.
	URL string
	// Prefix is the single address VMs may reach.
	Prefix netip.Prefix
}

// ParseProxy reads "http://IP:PORT". The host must be a literal IP: smolvm
// allows egress by CIDR, and a name could resolve elsewhere later.
func ParseProxy(s string) (Proxy, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.User != nil {
		return Proxy{}, fmt.Errorf("proxy: %q must be http://IP:PORT", s)
	}
	a, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return Proxy{}, fmt.Errorf("proxy: host of %q must be an IP address, not a name", s)
	}
	if port, err := strconv.Atoi(u.Port()); err != nil || port < 1 || port > 65535 {
		return Proxy{}, fmt.Errorf("proxy: port of %q is out of range", s)
	}
	return Proxy{URL: "http://" + u.Host, Prefix: netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())}, nil
}

// env is what a VM gets so its tools use the proxy.
func (p *Proxy) env() map[string]string { return p.envWith(p.URL) }

// envWith is env with another proxy URL, such as one carrying a task's
// credentials.
func (p *Proxy) envWith(proxyURL string) map[string]string {
	const noProxy = "localhost,127.0.0.1,::1"
	return map[string]string{
		"HTTP_PROXY": proxyURL, "HTTPS_PROXY": proxyURL, "http_proxy": proxyURL, "https_proxy": proxyURL,
		"NO_PROXY": noProxy, "no_proxy": noProxy,
	}
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

// ProcessTask implements asynq.Handler.
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
	return h.Run(ctx, m, t.Payload(), w)
}

// Active returns the names of the VMs this handler is using now.
func (h *Handler) Active() map[string]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]bool, len(h.active))
	for k := range h.active {
		out[k] = true
	}
	return out
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
		log.Warn().Str("phase", "decode").Err(err).Msg("task cannot run, archived without retry")
		h.outcome(OutcomeInvalid, "decode")
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	r := &run{h: h, p: p, w: w, vm: VMName(m.ID, attempt), taskID: m.ID}
	r.log = log.With().Str("vm", r.vm).Logger()
	r.res = tasks.Result{
		Host: h.cfg.Host, VM: r.vm, Attempt: attempt,
		SmolvmVersion: h.cfg.Smolvm.Version().String(),
	}
	start := time.Now()
	ctx = r.log.WithContext(ctx) // smolvm's lines carry the task's fields too
	r.log.Info().Str("phase", "start").Msg("task started")
	err = r.pipeline(ctx)
	if err != nil {
		r.res.Error = err.Error()
		r.report()
		switch {
		case isPermanent(err):
			r.log.Warn().Str("phase", r.res.Phase).Err(err).Msg("task cannot run, archived without retry")
			h.outcome(OutcomeInvalid, r.res.Phase)
			return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
		case ctx.Err() != nil:
			r.log.Warn().Str("phase", r.res.Phase).Err(err).Msg("task cancelled")
			h.outcome(OutcomeCancelled, r.res.Phase)
		default:
			r.log.Error().Str("phase", r.res.Phase).Err(err).Msg("task failed, asynq will retry it")
			h.outcome(OutcomeFailed, r.res.Phase)
		}
		return err
	}
	r.res.State = tasks.StateDone
	r.report()
	r.log.Info().Str("phase", "done").Int("exit_code", r.res.ExitCode).Dur("duration", time.Since(start)).Msg("task finished")
	h.outcome(OutcomeCompleted, "done")
	return nil
}

// runnableHere checks what this worker's configuration adds to a valid
// payload, before any smolvm call.
func (h *Handler) runnableHere(p tasks.AgentRun) error {
	if n := p.FilesBytes(); n > h.cfg.MaxFilesBytes {
		return &tasks.ValidationError{Field: "files", Reason: fmt.Sprintf("%s in total, over this worker's cap of %s (-max-files-bytes)",
			tasks.FormatBytes(n), tasks.FormatBytes(h.cfg.MaxFilesBytes))}
	}
	if len(p.AllowHosts) > 0 && h.cfg.Egress == nil {
		return &tasks.ValidationError{Field: "allow_hosts", Reason: "this worker has no bundled egress proxy (-egress-listen) to enforce it"}
	}
	return nil
}

// BusyError is a VM name taken by another live delivery of the same task
// attempt. The attempt fails and is retried later under a new name; the
// other delivery's VM is left alone.
type BusyError struct {
	// VM is the machine the other delivery uses.
	VM string
}

// Error says whose the machine is and that the attempt will be retried.
func (e *BusyError) Error() string {
	return "machine " + e.VM + " is in use by another live delivery of this task; retrying later"
}

// isPermanent tells input this host can never run from a smolvm failure.
func isPermanent(err error) bool {
	var ce *CommitError
	var ve *tasks.ValidationError
	return errors.As(err, &ce) || errors.As(err, &ve) || errors.Is(err, smolvm.ErrInvalid)
}

func (h *Handler) outcome(o, phase string) {
	if h.cfg.Hooks.Outcome != nil {
		h.cfg.Hooks.Outcome(o, phase)
	}
}

// run is one attempt of one task.
type run struct {
	h      *Handler
	p      tasks.AgentRun
	taskID string
	vm     string
	w      io.Writer
	log    zerolog.Logger
	res    tasks.Result
	// created is set once smolvm created the VM, for the VM gauge.
	created bool
	// foreign is set when the VM of this name belongs to another live
	// delivery: teardown must leave it alone.
	foreign bool
}

func (r *run) pipeline(ctx context.Context) error {
	h := r.h
	var from smolvm.Pack
	if err := r.phase(ctx, tasks.PhasePack, func(ctx context.Context) (err error) {
		from, err = r.source(ctx)
		return err
	}); err != nil {
		return err
	}

	execEnv := r.p.Env
	if h.cfg.Egress != nil {
		// allow_hosts was validated with the payload: what fails here is a
		// duplicate delivery in this process (its name is registered) or
		// the token's randomness, both worth a retry.
		token, err := h.cfg.Egress.Register(r.vm, egress.Policy{Hosts: r.p.AllowHosts})
		if err != nil {
			return fmt.Errorf("egress proxy registration: %w", err)
		}
		defer r.closeEgress()
		execEnv = maps.Clone(r.p.Env)
		if execEnv == nil {
			execEnv = map[string]string{}
		}
		maps.Copy(execEnv, h.proxy.envWith(egress.ProxyURL(h.proxy.URL, token)))
	}

	create := smolvm.CreateOptions{From: from.Machine}
	if h.proxy != nil {
		create.AllowCIDRs = []netip.Prefix{h.proxy.Prefix}
		create.Env = h.proxy.env()
	}
	h.own(r.vm, true)
	defer h.own(r.vm, false)
	defer r.teardown(ctx)
	if err := r.phase(ctx, tasks.PhaseCreate, func(ctx context.Context) error {
		err := h.cfg.Smolvm.Create(ctx, r.vm, create)
		if errors.Is(err, smolvm.ErrExists) {
			// Whose is it? Another delivery in this process, or a live one
			// elsewhere on this host, keeps it; and when that cannot be
			// told, it is left alone too (the reaper decides later).
			busy := h.users(r.vm) > 1
			if !busy && h.cfg.Busy != nil {
				var berr error
				if busy, berr = h.cfg.Busy(ctx, r.vm); berr != nil {
					r.foreign = true
					return fmt.Errorf("machine %s exists and its owner cannot be checked: %w", r.vm, berr)
				}
			}
			if busy {
				r.foreign = true
				return &BusyError{VM: r.vm}
			}
			// Left over from an earlier delivery of this attempt that died.
			r.log.Warn().Str("phase", tasks.PhaseCreate).Msg("deleting a leftover machine of the same name")
			if err := h.cfg.Smolvm.Delete(ctx, r.vm); err != nil && !errors.Is(err, smolvm.ErrNotFound) {
				return err
			}
			err = h.cfg.Smolvm.Create(ctx, r.vm, create)
		}
		if err == nil {
			r.created = true
			h.vms(+1)
		}
		return err
	}); err != nil {
		return err
	}
	if err := r.phase(ctx, tasks.PhaseStart, func(ctx context.Context) error {
		return h.cfg.Smolvm.Start(ctx, r.vm)
	}); err != nil {
		return err
	}
	if err := r.phase(ctx, tasks.PhaseReady, func(ctx context.Context) error {
		return h.cfg.Smolvm.WaitReady(ctx, r.vm, h.cfg.ReadyTimeout)
	}); err != nil {
		return err
	}
	if len(r.p.Files) > 0 {
		if err := r.phase(ctx, tasks.PhaseFiles, r.copyIn); err != nil {
			return err
		}
	}
	if err := r.phase(ctx, tasks.PhaseExec, func(ctx context.Context) error {
		res, err := h.cfg.Smolvm.Exec(ctx, r.vm, r.p.Command, smolvm.ExecOptions{
			Env: execEnv, Workdir: r.p.Workdir, Timeout: r.p.CommandTimeout(), Stream: true,
		})
		r.closeEgress()
		if err != nil {
			return err
		}
		r.res.ExitCode, r.res.TimedOut = res.ExitCode, res.TimedOut
		r.res.Stdout, r.res.Stderr = string(res.Stdout), string(res.Stderr)
		r.res.StdoutOmitted, r.res.StderrOmitted = res.StdoutOmitted, res.StderrOmitted
		return nil
	}); err != nil {
		return err
	}
	// Artifacts come out whatever the command's exit code, before stop.
	if len(r.p.Artifacts) > 0 {
		if err := r.phase(ctx, tasks.PhaseArtifacts, r.copyOut); err != nil {
			return err
		}
	}
	if !r.p.CommitEnabled() {
		return nil
	}
	if err := r.phase(ctx, tasks.PhaseStop, func(ctx context.Context) error {
		return h.cfg.Smolvm.Stop(ctx, r.vm)
	}); err != nil {
		return err
	}
	return r.phase(ctx, tasks.PhaseCommit, func(ctx context.Context) error {
		p, err := h.commits.write(ctx, fileKey(r.taskID), func(ctx context.Context, out string) (smolvm.Pack, error) {
			return h.cfg.Smolvm.PackFromVM(ctx, r.vm, out)
		})
		r.res.Commit = p.Machine
		return err
	})
}

// closeEgress ends the task's registration with the bundled proxy, once,
// and keeps its egress record for the result.
func (r *run) closeEgress() {
	if r.res.Egress != nil || r.h.cfg.Egress == nil {
		return
	}
	rec := r.h.cfg.Egress.Unregister(r.vm)
	r.res.Egress = &rec
}

// source returns the pack to create the VM from.
func (r *run) source(ctx context.Context) (smolvm.Pack, error) {
	if r.p.Image != "" {
		p, hit, err := r.h.packs.Get(ctx, r.p.Image)
		r.res.PackCached = hit
		if err == nil && r.h.cfg.Hooks.PackCache != nil {
			r.h.cfg.Hooks.PackCache(hit)
		}
		return p, err
	}
	if id, ok := r.p.FromTask(); ok {
		return r.h.cfg.Commits.Lookup(ctx, id)
	}
	if _, err := os.Stat(r.p.From); err != nil {
		return smolvm.Pack{}, &tasks.ValidationError{Field: "from", Reason: fmt.Sprintf("%s is not readable on host %s", r.p.From, r.h.cfg.Host)}
	}
	return smolvm.Pack{Machine: r.p.From}, nil
}

// teardown deletes the VM whatever happened before, under a context that
// the task's cancellation cannot end. A failing delete is retried; if it
// still fails, the VM is logged and left to the reaper.
func (r *run) teardown(ctx context.Context) {
	if r.foreign {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.h.cfg.TeardownTimeout)
	defer cancel()
	_ = r.phase(ctx, tasks.PhaseDelete, func(ctx context.Context) error {
		var err error
		for try := 1; try <= 3; try++ {
			err = r.h.cfg.Smolvm.Delete(ctx, r.vm)
			if err == nil || errors.Is(err, smolvm.ErrNotFound) {
				if r.created {
					r.h.vms(-1)
				}
				return nil
			}
			r.log.Warn().Str("phase", tasks.PhaseDelete).Int("try", try).Err(err).Msg("delete failed")
			select {
			case <-ctx.Done():
				try = 3
			case <-time.After(time.Duration(try) * 250 * time.Millisecond):
			}
		}
		r.log.Error().Str("phase", tasks.PhaseDelete).Err(err).Msg("VM left behind; the reaper will delete it")
		if r.h.cfg.Hooks.DeleteFailed != nil {
			r.h.cfg.Hooks.DeleteFailed(r.vm)
		}
		if r.created {
			r.h.vms(-1) // handed to the reaper: no longer this worker's
		}
		return err
	})
}

// phase runs one step: it reports progress, times the step and tells the
// hooks.
func (r *run) phase(ctx context.Context, name string, f func(context.Context) error) error {
	if name != tasks.PhaseDelete {
		r.res.State, r.res.Phase = tasks.StateRunning, name
		r.report()
	}
	start := time.Now()
	err := f(ctx)
	d := time.Since(start)
	r.res.Add(name, d)
	r.log.Debug().Str("phase", name).Dur("duration", d).Err(err).Msg("phase done")
	if r.h.cfg.Hooks.Phase != nil {
		r.h.cfg.Hooks.Phase(name, d, err)
	}
	return err
}

// report writes the result so far; a failed write only costs progress.
func (r *run) report() {
	if r.w == nil {
		return
	}
	b, err := json.Marshal(r.res)
	if err == nil {
		_, err = r.w.Write(b)
	}
	if err != nil {
		r.log.Debug().Err(err).Msg("result not written")
	}
}

// users counts this process's deliveries using vm.
func (h *Handler) users(vm string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.active[vm]
}

func (h *Handler) own(vm string, on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if on {
		h.active[vm]++
	} else if h.active[vm]--; h.active[vm] <= 0 {
		delete(h.active, vm)
	}
}

func (h *Handler) vms(delta int) {
	if h.cfg.Hooks.VMs != nil {
		h.cfg.Hooks.VMs(delta)
	}
}
