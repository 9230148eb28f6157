package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/egress"
	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

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
	// scrub removes the task's secrets from the errors it returns.
	scrub scrubber
	// live is the attempt's live output, or nil.
	live *liveLog
	// storeRun names this delivery in its artifacts' store keys: the
	// attempt and a random suffix, so no two deliveries share a key.
	storeRun string
}

// pipeline runs the attempt's phases in order, from pack to commit; once a
// VM may exist, its teardown is deferred so that it always runs.
func (r *run) pipeline(ctx context.Context) error {
	h := r.h
	var from smolvm.Pack
	var hold *lease
	if err := r.phase(ctx, tasks.PhasePack, func(ctx context.Context) (err error) {
		from, hold, err = r.source(ctx)
		return err
	}); err != nil {
		return err
	}
	// The cache keeps the pack until the VM made from it is deleted: the
	// teardown deferred below runs first.
	defer hold.Release()

	cpus, memMiB, err := h.resources(r.p)
	if err != nil {
		return err
	}
	create := r.createOptions(from.Machine, cpus, memMiB)
	ctx, warm := r.claimWarm(ctx, create)
	if warm {
		// The pool registered the VM as in use; it is this run's now.
		defer h.own(r.vm, false)
		defer r.teardown(ctx)
	}

	execEnv := r.p.Env
	if h.cfg.BundledProxy != nil {
		// allow_hosts was validated with the payload: what fails here is a
		// duplicate delivery in this process (its name is registered) or
		// the token's randomness, both worth a retry.
		token, err := h.cfg.BundledProxy.Register(r.vm, egress.Policy{Hosts: r.p.AllowHosts})
		if err != nil {
			return fmt.Errorf("egress proxy registration: %w", err)
		}
		defer r.closeEgress()
		execEnv = maps.Clone(r.p.Env)
		if execEnv == nil {
			execEnv = map[string]string{}
		}
		proxyURL := egress.ProxyURL(h.proxy.URL, token)
		maps.Copy(execEnv, h.proxy.envWith(proxyURL))
		r.scrub = newScrubber(append(slices.Collect(maps.Values(r.p.Env)), token, proxyURL)...)
	}

	if !warm {
		h.own(r.vm, true)
		defer h.own(r.vm, false)
		defer r.teardown(ctx)
		if err := r.boot(ctx, create); err != nil {
			return err
		}
	}
	if len(r.p.Files) > 0 {
		if err := r.phase(ctx, tasks.PhaseFiles, r.copyIn); err != nil {
			return err
		}
	}
	if err := r.phase(ctx, tasks.PhaseExec, func(ctx context.Context) error {
		out, err := r.outputs()
		if err != nil {
			return err
		}
		defer out.close()
		res, err := h.cfg.Smolvm.Exec(ctx, r.vm, r.p.Command, smolvm.ExecOptions{
			Env: execEnv, Workdir: r.p.Workdir, Timeout: r.p.CommandTimeout(), Stream: true,
			Stdout: out.writer(0, r.live.stdout()), Stderr: out.writer(1, r.live.stderr()),
		})
		r.closeEgress()
		if err != nil && !r.agentExit(ctx, err) {
			return err
		}
		r.res.ExitCode, r.res.TimedOut = res.ExitCode, res.TimedOut
		r.res.Stdout, r.res.Stderr = string(res.Stdout), string(res.Stderr)
		r.res.StdoutOmitted, r.res.StderrOmitted = res.StdoutOmitted, res.StderrOmitted
		return out.keep(ctx, &r.res)
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
		owner := commitOwner{TaskID: r.taskID, Tenant: r.p.TenantName(), Attempt: r.res.Attempt, Host: h.cfg.Host}
		c, err := h.commits.write(ctx, owner, func(ctx context.Context, out string) (smolvm.Pack, error) {
			return h.cfg.Smolvm.PackFromVM(ctx, r.vm, out)
		})
		if err != nil {
			return err
		}
		expires := c.Stored.Add(h.cfg.Retention).UTC()
		r.res.Commit, r.res.CommitKey, r.res.CommitExpires = c.Path, c.Key, &expires
		return nil
	})
}

// boot is the cold path's create, start and ready phases, for the
// attempt's own VM.
func (r *run) boot(ctx context.Context, create smolvm.CreateOptions) error {
	h := r.h
	if err := r.phase(ctx, tasks.PhaseCreate, func(ctx context.Context) error {
		return r.createBoxed(ctx, create)
	}); err != nil {
		return err
	}
	if err := r.phase(ctx, tasks.PhaseStart, func(ctx context.Context) error {
		return h.cfg.Smolvm.Start(ctx, r.vm)
	}); err != nil {
		return err
	}
	return r.phase(ctx, tasks.PhaseReady, func(ctx context.Context) error {
		return h.cfg.Smolvm.WaitReady(ctx, r.vm, h.cfg.ReadyTimeout)
	})
}

// create is the create phase: it creates the VM and, when a machine of its
// name exists already, settles whose it is with reclaim first.
func (r *run) create(ctx context.Context, o smolvm.CreateOptions) error {
	err := r.h.cfg.Smolvm.Create(ctx, r.vm, o)
	if errors.Is(err, smolvm.ErrExists) {
		if err := r.reclaim(ctx); err != nil {
			return err
		}
		err = r.h.cfg.Smolvm.Create(ctx, r.vm, o)
	}
	if err == nil {
		r.created = true
		r.h.vms(+1)
	}
	return err
}

// reclaim handles a duplicate delivery: a machine named after this attempt
// exists. Another delivery in this process, or a live one elsewhere on this
// host, keeps it, and so does one whose owner cannot be told (the reaper
// decides later): the run is then foreign and fails. A machine left over
// from an earlier delivery of this attempt that died is deleted, so the
// caller can create it again.
func (r *run) reclaim(ctx context.Context) error {
	h := r.h
	busy := h.users(r.vm) > 1
	if !busy && h.cfg.Busy != nil {
		var err error
		if busy, err = h.cfg.Busy(ctx, r.vm); err != nil {
			r.foreign = true
			return fmt.Errorf("machine %s exists and its owner cannot be checked: %w", r.vm, err)
		}
	}
	if busy {
		r.foreign = true
		return &busyError{VM: r.vm}
	}
	r.log.Warn().Str("phase", tasks.PhaseCreate).Msg("deleting a leftover machine of the same name")
	if err := h.cfg.Smolvm.Delete(ctx, r.vm); err != nil && !errors.Is(err, smolvm.ErrNotFound) {
		return err
	}
	return nil
}

// closeEgress ends the task's registration with the bundled proxy, once,
// and keeps its egress record for the result.
func (r *run) closeEgress() {
	if r.res.Egress != nil || r.h.cfg.BundledProxy == nil {
		return
	}
	rec := r.h.cfg.BundledProxy.Unregister(r.vm)
	r.res.Egress = &rec
}

// source returns the pack to create the VM from and the cache's lease on
// it (nil for a pack the payload names by path), and says in the result
// where it came from.
func (r *run) source(ctx context.Context) (smolvm.Pack, *lease, error) {
	if r.p.Image != "" {
		p, src, l, err := r.h.packs.Get(ctx, r.p.Image)
		if err != nil {
			return p, nil, err
		}
		hit := src != tasks.PackSourcePacked
		r.res.PackSource, r.res.PackCached = src, hit
		if r.h.cfg.Hooks.PackCache != nil {
			r.h.cfg.Hooks.PackCache(hit)
		}
		return p, l, nil
	}
	if id, ok := r.p.FromTask(); ok {
		l, err := r.h.commits.Lookup(ctx, r.p.TenantName(), id)
		if err != nil {
			return smolvm.Pack{}, nil, err
		}
		r.res.PackSource = tasks.PackSourceCommit
		return smolvm.Pack{Machine: l.Path}, l, nil
	}
	path, err := r.h.from.resolve(r.p.From)
	if err == nil {
		r.res.PackSource = tasks.PackSourcePath
	}
	return smolvm.Pack{Machine: path}, nil, err
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
			r.log.Warn().Str("phase", tasks.PhaseDelete).Int("try", try).Err(r.scrub.err(err)).Msg("delete failed")
			select {
			case <-ctx.Done():
				try = 3
			case <-time.After(time.Duration(try) * 250 * time.Millisecond):
			}
		}
		r.log.Error().Str("phase", tasks.PhaseDelete).Err(r.scrub.err(err)).Msg("VM left behind; the reaper will delete it")
		if r.h.cfg.Hooks.DeleteFailed != nil {
			r.h.cfg.Hooks.DeleteFailed(r.vm)
		}
		if r.created {
			r.h.vms(-1) // handed to the reaper: no longer this worker's
		}
		return err
	})
}

// phase runs one step: it reports progress (to the live output too),
// times the step and tells the hooks. Its error comes back scrubbed of the
// task's secrets.
func (r *run) phase(ctx context.Context, name string, f func(context.Context) error) error {
	// The result first: a reader of the live output that meets the phase
	// there finds it in the result too.
	if name != tasks.PhaseDelete {
		r.res.State, r.res.Phase = tasks.StateRunning, name
		r.report()
	}
	r.live.phase(name)
	start := time.Now()
	err := r.scrub.err(f(ctx))
	d := time.Since(start)
	r.res.Add(name, d)
	r.log.Debug().Str("phase", name).Float64("duration_ms", ms(d)).Err(err).Msg("phase done")
	if r.h.cfg.Hooks.Phase != nil {
		r.h.cfg.Hooks.Phase(name, d, err)
	}
	return err
}

// ms is d in milliseconds, the unit of the log's duration_ms fields.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// report writes the result so far, at most maxResultBytes of JSON; a
// failed write only costs progress.
func (r *run) report() {
	if r.w == nil {
		return
	}
	b, err := encodeResult(r.res, maxResultBytes)
	if err == nil {
		_, err = r.w.Write(b)
	}
	if err != nil {
		r.log.Debug().Err(err).Msg("result not written")
	}
}
