package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

func readiness(ctx context.Context, b *bench) (section, error) {
	s := section{method: `For each D a worker (concurrency 1) runs with SMOLVM_SIM_NOT_READY=D: the simulator's ` + "`machine exec`" + `
fails "not running" until D after ` + "`machine start`" + ` recorded the machine as started. One priming task, then N tasks enqueued
at once; per task **lag = duration of the "ready" phase (from the task's result) − D**. The window opens inside the start
call, so the start call's own tail (process exit and reaping, ~1 ms) is not counted, which makes the figure a slight
under-estimate; "probes" counts the failed ` + "`exec -- true`" + ` calls per task in calls.jsonl.`}
	n := b.n(30, 5)
	s.detail("| D | N | lag p50 | lag p90 | lag max | probes per task (mean) |\n|---|---|---|---|---|---|")
	for _, d := range []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, time.Second} {
		queue := b.uniq("ready")
		simState := b.mkdir(queue + "-sim")
		w, err := b.startWorker(ctx, workerOpts{queue: queue, concurrency: 1, dataDir: b.dataDir(), simState: simState,
			env: []string{"SMOLVM_SIM_NOT_READY=" + d.String()}})
		if err != nil {
			return s, err
		}
		if _, err := b.enqueue(queue, payload(image)); err != nil {
			return s, err
		}
		if _, err := b.waitCompleted(ctx, queue, 0, 1, time.Minute); err != nil {
			return s, err
		}
		b.logf("  D=%s: %d tasks", d, n)
		ids, err := b.enqueueN(queue, n, payload(image))
		if err != nil {
			return s, err
		}
		if _, err := b.waitCompleted(ctx, queue, 1, n, 5*time.Minute); err != nil {
			return s, err
		}
		if err := w.stop(); err != nil {
			return s, fmt.Errorf("worker exit: %w", err)
		}
		var lags []float64
		vms := map[string]bool{}
		for _, id := range ids {
			r, ok, err := b.result(ctx, queue, id)
			if err != nil || !ok || r.State != tasks.StateDone {
				return s, fmt.Errorf("task %s: no final result (%v)", id, err)
			}
			lags = append(lags, phaseSeconds(r, tasks.PhaseReady)*1000-msDur(d))
			vms[r.VM] = true
		}
		calls, err := readCalls(simState)
		if err != nil {
			return s, err
		}
		failed := 0
		for _, c := range calls {
			if vms[c.Name] && c.Op == "machine exec" && c.Exit != 0 {
				failed++
			}
		}
		p50 := percentile(lags, 50)
		s.goal(fmt.Sprintf("lag p50, D=%s (N=%d)", d, n), ms(p50), "≤ 25 ms", p50 <= 25)
		s.detail("| %s | %d | %s | %s | %s | %.1f |", d, n, ms(p50), ms(percentile(lags, 90)), ms(percentile(lags, 100)), float64(failed)/float64(n))
	}
	return s, nil
}

// redisIdle counts the commands Redis processes in window.
func (b *bench) redisIdle(ctx context.Context, window time.Duration) (perSec float64, top string, err error) {
	info := func() (int64, map[string]int64, error) {
		s, err := b.rdb.Info(ctx, "stats", "commandstats").Result()
		if err != nil {
			return 0, nil, err
		}
		n, err := strconv.ParseInt(infoField(s, "total_commands_processed"), 10, 64)
		return n, commandStats(s), err
	}
	n0, c0, err := info()
	if err != nil {
		return 0, "", err
	}
	start := time.Now()
	select {
	case <-ctx.Done():
		return 0, "", ctx.Err()
	case <-time.After(window):
	}
	n1, c1, err := info()
	if err != nil {
		return 0, "", err
	}
	secs := time.Since(start).Seconds()
	type kv struct {
		k string
		v int64
	}
	var d []kv
	for k, v := range c1 {
		if k == "info" {
			continue
		}
		if dv := v - c0[k]; dv > 0 {
			d = append(d, kv{k, dv})
		}
	}
	sort.Slice(d, func(i, j int) bool { return d[i].v > d[j].v })
	var parts []string
	for _, e := range d[:min(len(d), 6)] {
		parts = append(parts, fmt.Sprintf("%s %.1f/s", e.k, float64(e.v)/secs))
	}
	// One INFO of ours falls in the window.
	return float64(n1-n0-1) / secs, strings.Join(parts, ", "), nil
}

func pickup(ctx context.Context, b *bench) (section, error) {
	s := section{method: `A worker with nothing to do (concurrency 4) gets one task at a time, each after a random pause of
0–1.5 poll intervals following the previous task's completion, so arrivals fall at random points of asynq's poll
sleep (interval/2 + jitter up to one interval). **Pickup latency = from Enqueue returning to the first progress report
being readable in Redis**: the handler writes it (state running, phase pack) right after it starts, before any smolvm
call; the harness polls the task's result field every millisecond, so the figure includes that first result write
and up to ~1 ms of polling. The worker's log timestamps have whole-second resolution, so they cannot be used. Run at
the default -poll-interval (100ms) and at 1s (asynq's own default) as the baseline. **Idle Redis cost**: with the worker
idle, the delta of INFO total_commands_processed over 5 s (Redis 7 counts the commands inside asynq's Lua scripts too,
so this is work done, not round trips; EVALSHA in commandstats counts the script round trips), with the busiest
entries of INFO commandstats. The worker sets asynq's DelayedTaskCheckInterval (the forwarder moving scheduled and
retry tasks) to max(poll, 100ms); a what-if with in-process no-op asynq servers shows what that choice costs.`}
	type pollCfg struct {
		label string
		poll  time.Duration
		n     int
	}
	cfgs := []pollCfg{{"100ms (default)", 0, b.n(40, 8)}, {"1s (asynq default)", time.Second, b.n(16, 4)}}
	var p50s, idle []float64
	for _, cfg := range cfgs {
		queue := b.uniq("pickup")
		simState := b.mkdir(queue + "-sim")
		w, err := b.startWorker(ctx, workerOpts{queue: queue, concurrency: 4, poll: cfg.poll, dataDir: b.dataDir(), simState: simState})
		if err != nil {
			return s, err
		}
		interval := cfg.poll
		if interval == 0 {
			interval = 100 * time.Millisecond
		}
		if _, err := b.enqueue(queue, payload(image)); err != nil {
			return s, err
		}
		if _, err := b.waitCompleted(ctx, queue, 0, 1, time.Minute); err != nil {
			return s, err
		}
		time.Sleep(time.Second)
		cps, top, err := b.redisIdle(ctx, 5*time.Second)
		if err != nil {
			return s, err
		}
		b.logf("  poll %s: %d tasks", cfg.label, cfg.n)
		var lats []float64
		for i := range cfg.n {
			time.Sleep(time.Duration(rand.Int64N(int64(interval) * 3 / 2)))
			id, err := b.enqueue(queue, payload(image))
			if err != nil {
				return s, err
			}
			t0 := time.Now()
			for {
				_, ok, err := b.result(ctx, queue, id)
				if err != nil {
					return s, err
				}
				if ok {
					break
				}
				if time.Since(t0) > time.Minute {
					return s, fmt.Errorf("task %s not started after a minute", id)
				}
				time.Sleep(time.Millisecond)
			}
			lats = append(lats, msDur(time.Since(t0)))
			if _, err := b.waitCompleted(ctx, queue, 1+i, 1, time.Minute); err != nil {
				return s, err
			}
		}
		if err := w.stop(); err != nil {
			return s, fmt.Errorf("worker exit: %w", err)
		}
		p50 := percentile(lats, 50)
		p50s = append(p50s, p50)
		idle = append(idle, cps)
		s.detail("- poll %s: N=%d, pickup p50 %s, p90 %s, max %s; idle Redis %.1f commands/s (busiest in commandstats: %s)",
			cfg.label, cfg.n, ms(p50), ms(percentile(lats, 90)), ms(percentile(lats, 100)), cps, top)
	}
	// What-if for the idle cost: an in-process no-op asynq server polling
	// like the worker, with the delayed-task check at the worker's 100ms and at 1s.
	var whatIf []float64
	for _, delayed := range []time.Duration{100 * time.Millisecond, time.Second} {
		q := b.uniq("idle")
		srv := asynq.NewServer(b.opt, asynq.Config{Concurrency: 4, Queues: map[string]int{q: 1}, TaskCheckInterval: 100 * time.Millisecond,
			DelayedTaskCheckInterval: delayed, LogLevel: asynq.ErrorLevel})
		if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })); err != nil {
			return s, err
		}
		time.Sleep(time.Second)
		cps, top, err := b.redisIdle(ctx, 4*time.Second)
		srv.Shutdown()
		if err != nil {
			return s, err
		}
		whatIf = append(whatIf, cps)
		s.detail("- what-if, no-op asynq.Server, TaskCheckInterval 100ms, DelayedTaskCheckInterval %s: idle Redis %.1f commands/s (%s)", delayed, cps, top)
	}
	s.goal(fmt.Sprintf("pickup p50 at 100ms poll (N=%d)", cfgs[0].n), ms(p50s[0]), "≤ 100 ms", p50s[0] <= 100)
	s.add("pickup p50 at 1s poll (baseline)", fmt.Sprintf("%s; 100ms/1s ratio %.2f", ms(p50s[1]), p50s[0]/p50s[1]))
	s.add("idle Redis commands/s, 100ms vs 1s poll", fmt.Sprintf("%.1f vs %.1f: ratio %.1f", idle[0], idle[1], idle[0]/idle[1]))
	s.add("idle Redis, what-if delayed-task check 1s instead of 100ms (no-op asynq)", fmt.Sprintf("%.1f vs %.1f commands/s: ratio %.2f", whatIf[1], whatIf[0], whatIf[1]/whatIf[0]))
	return s, nil
}
