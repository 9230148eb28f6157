package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/smolvm"
)

// Inspector is what the reaper needs of asynq's Inspector.
type Inspector interface {
	// Servers and GetTaskInfo are *asynq.Inspector's methods.
	Servers() ([]*asynq.ServerInfo, error)
	GetTaskInfo(queue, id string) (*asynq.TaskInfo, error)
}

var _ Inspector = (*asynq.Inspector)(nil)

// Reaper deletes the VMs that a crashed worker of its deployment left
// behind (kill -9, OOM, power loss: no teardown ran). A machine is an
// orphan when its name starts with namePrefix and the reaper's deployment, no
// handler of this process uses it, it is older than MinAge, and it is not
// the VM of a task attempt that a live asynq server on this host is running
// now, nor a warm pool VM of another live asynq server on this host (its
// name holds the server's owner token, see [WarmOwner]). Liveness comes from asynq's own server list (heartbeats expire 10 s
// after a process dies), not from guesses; that list is per Redis database,
// so the reaper leaves the VMs of other deployments alone, whatever they
// are doing.
type Reaper struct {
	// Smolvm lists and deletes machines. Required.
	Smolvm Smolvm
	// Inspector reads asynq's servers and tasks. Required.
	Inspector Inspector
	// Deployment is the deployment whose VMs are reaped: the handlers'
	// Config.Deployment. It must pass [ValidateDeployment]. Default:
	// DefaultDeployment.
	Deployment string
	// Handler is this process's handler; its VMs are never reaped. Default:
	// nil, none.
	Handler *Handler
	// Hostname is this host as asynq records it. Default: os.Hostname.
	Hostname string
	// MinAge spares machines younger than this: another process's new task
	// may not be in its heartbeat yet (asynq beats every 5 s). Zero or
	// negative: DefaultReapMinAge.
	MinAge time.Duration
	// Confirm is how long a machine must stay an orphan, over successive
	// sweeps, before it is deleted: long enough for a live process that
	// missed a heartbeat (asynq's expire after 10 s) or a restarted Redis
	// to show up again. Zero or negative: DefaultReapConfirm.
	Confirm time.Duration
	// Interval is the longest wait between sweeps in Run. Zero or negative:
	// DefaultReapInterval.
	Interval time.Duration
	// Logger gets one line per reaped VM. Zero: no lines.
	Logger zerolog.Logger
	// Reaped, if set, is called for each deleted orphan. Default: nil.
	Reaped func(vm string)

	// now and after replace time.Now and time.After in tests. Default:
	// those.
	now   func() time.Time
	after func(time.Duration) <-chan time.Time

	mu       sync.Mutex
	suspects map[string]time.Time // orphan VM → when first seen as one
}

// minSweepGap is the shortest wait between two sweeps of Run, unless its
// Interval is shorter.
const minSweepGap = time.Second

// Run sweeps now and then until ctx ends. It sweeps again once a suspect's
// confirmation time or a young machine's MinAge has passed, so an orphan
// does not wait a whole Interval more, and once Confirm has passed since it
// started, by when the heartbeat of a worker that died just before has
// expired; otherwise it waits Interval. So an orphan that a crashed worker
// left is deleted at most Confirm + max(Confirm, MinAge) (45 s by default)
// after its successor starts.
func (r *Reaper) Run(ctx context.Context) {
	interval := r.Interval
	if interval <= 0 {
		interval = DefaultReapInterval
	}
	settled := r.clock().Add(r.confirm())
	for {
		_, next, err := r.sweep(ctx)
		if err != nil && ctx.Err() == nil {
			r.Logger.Warn().Str("phase", "reap").Err(err).Msg("reaper sweep failed")
		}
		now := r.clock()
		wait := interval
		if !next.IsZero() {
			wait = min(wait, next.Sub(now))
		}
		if now.Before(settled) {
			wait = min(wait, settled.Sub(now))
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wait(max(wait, min(minSweepGap, interval))):
		}
	}
}

// sweepNow deletes the orphans it finds now and returns their names.
func (r *Reaper) sweepNow(ctx context.Context) ([]string, error) {
	reaped, _, err := r.sweep(ctx)
	return reaped, err
}

// sweep is sweepNow, and also returns when a machine it spared for now may be
// reaped: the earliest confirmation or MinAge deadline (zero: none).
func (r *Reaper) sweep(ctx context.Context) (reaped []string, next time.Time, err error) {
	deployment := r.Deployment
	if deployment == "" {
		deployment = DefaultDeployment
	}
	if err := ValidateDeployment(deployment); err != nil {
		return nil, time.Time{}, fmt.Errorf("worker: Reaper.Deployment: %w", err)
	}
	machines, err := r.Smolvm.List(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	soon := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	var candidates []smolvm.Machine
	minAge := r.MinAge
	if minAge <= 0 {
		minAge = DefaultReapMinAge
	}
	prefix := vmPrefix(deployment)
	mine := r.handlerActive()
	now := r.clock()
	for _, m := range machines {
		if !strings.HasPrefix(m.Name, prefix) || mine[m.Name] {
			continue
		}
		if grown := time.Unix(m.CreatedAt, 0).Add(minAge); m.CreatedAt > 0 && now.Before(grown) {
			soon(grown)
			continue
		}
		candidates = append(candidates, m)
	}
	if len(candidates) == 0 {
		r.mu.Lock()
		r.suspects = nil
		r.mu.Unlock()
		return nil, next, nil
	}
	live, err := liveVMs(r.Inspector, deployment, r.hostname(), 0)
	if err != nil {
		return nil, time.Time{}, err
	}
	if r.Handler != nil {
		live.self = r.Handler.warmOwner() // its pool VMs are spared above, by name
	}
	confirm := r.confirm()
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := r.suspects
	r.suspects = map[string]time.Time{}
	var errs []error
	for _, m := range candidates {
		if live.has(m.Name) {
			continue
		}
		if mine = r.handlerActive(); mine[m.Name] {
			continue // a handler of ours picked it up since
		}
		now := r.clock()
		first, ok := seen[m.Name]
		if !ok {
			first = now
		}
		if now.Sub(first) < confirm {
			r.suspects[m.Name] = first // an orphan for now: confirm on a later sweep
			soon(first.Add(confirm))
			continue
		}
		if err := r.Smolvm.Delete(ctx, m.Name); err != nil && !errors.Is(err, smolvm.ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		r.Logger.Warn().Str("phase", "reap").Str("vm", m.Name).Str("state", m.State).
			Str("reason", "no live asynq server on this host runs its task attempt").Msg("reaped orphan VM")
		if r.Reaped != nil {
			r.Reaped(m.Name)
		}
		reaped = append(reaped, m.Name)
	}
	return reaped, next, errors.Join(errs...)
}

func (r *Reaper) confirm() time.Duration {
	if r.Confirm <= 0 {
		return DefaultReapConfirm
	}
	return r.Confirm
}

func (r *Reaper) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

func (r *Reaper) wait(d time.Duration) <-chan time.Time {
	if r.after != nil {
		return r.after(d)
	}
	return time.After(d)
}

func (r *Reaper) handlerActive() map[string]bool {
	if r.Handler == nil {
		return nil
	}
	return r.Handler.activeVMs()
}

// liveSet holds the VM names of running attempts, the stems of running
// tasks whose attempt could not be read (those are spared whole), and the
// owner tokens of live servers, whose warm pool VMs are spared; self is
// the reaper's own process's token, whose handler says which are in use.
type liveSet struct {
	names, stems, owners map[string]bool
	self                 string
}

func (l liveSet) has(vm string) bool {
	if owner, ok := warmOwnerOf(vm); ok {
		return owner != l.self && l.owners[owner]
	}
	if l.names[vm] {
		return true
	}
	stem, _, _ := cutAttempt(vm)
	return l.stems[stem]
}

func cutAttempt(vm string) (stem, attempt string, ok bool) {
	i := strings.LastIndex(vm, "-a")
	if i < 0 {
		return vm, "", false
	}
	return vm[:i], vm[i+2:], true
}

func (r *Reaper) hostname() string {
	if r.Hostname != "" {
		return r.Hostname
	}
	h, _ := os.Hostname()
	return h
}

// liveVMs reads the VMs of deployment that the live asynq servers on host
// are using, leaving out the process skipPID (0: none).
func liveVMs(insp Inspector, deployment, host string, skipPID int) (liveSet, error) {
	servers, err := insp.Servers()
	if err != nil {
		return liveSet{}, err
	}
	l := liveSet{names: map[string]bool{}, stems: map[string]bool{}, owners: map[string]bool{}}
	for _, s := range servers {
		if s.Host != host || (skipPID != 0 && s.PID == skipPID) {
			continue
		}
		l.owners[ownerToken(s.ID)] = true
		for _, w := range s.ActiveWorkers {
			info, err := insp.GetTaskInfo(w.Queue, w.TaskID)
			if err != nil {
				l.stems[vmStem(deployment, w.TaskID)] = true
				continue
			}
			l.names[VMName(deployment, w.TaskID, info.Retried+1)] = true
		}
	}
	return l, nil
}

// BusyElsewhere returns a Config.Busy that asks asynq whether another live
// worker process on this host is running the attempt that owns a VM of
// deployment.
func BusyElsewhere(insp Inspector, deployment string) func(ctx context.Context, vm string) (bool, error) {
	host, _ := os.Hostname()
	pid := os.Getpid()
	return func(_ context.Context, vm string) (bool, error) {
		live, err := liveVMs(insp, deployment, host, pid)
		if err != nil {
			return false, err
		}
		return live.has(vm), nil
	}
}
