package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

// warmDelays is the simulated smolvm latency of the warm pool scenario:
// what a real host's create and boot cost, roughly.
const (
	warmCreate = 30 * time.Millisecond
	warmStart  = 250 * time.Millisecond
)

func warmPool(ctx context.Context, b *bench) (section, error) {
	s := section{method: `The simulator runs with SMOLVM_SIM_DELAY=create=30ms,start=250ms. **Latency = from the harness calling
Enqueue to the agent's first act**: the agent command is ` + "`date +%s%N`" + `, whose output (in the task's result) is the
time it ran, on the same clock. Every server here polls every 10ms (-poll-interval 10ms): at the default 100ms,
asynq's pickup alone spreads over 0–150 ms (scenario 4) and its noise would drown differences of a few ms; the
default adds the same ~50 ms p50 to all three paths. Each task is enqueued alone after a random pause of 0–1.5 poll
intervals following the previous one's completion, so arrivals fall at random points of asynq's poll sleep.
**Cold**: a worker (concurrency 4) without a pool: pack lookup, create, status, start, readiness probe, then the
agent's exec. **Warm**: the same worker with ` + "`-warm IMAGE=1`" + `; before each task the harness waits until the
pool is full again (bottleq_warm_pool_vms), so every task finds a ready VM: pack lookup, claim, exec. **Baseline**:
asynq's own pickup, an in-process asynq.Server with the worker's poll settings and concurrency whose handler records
time.Now() as it starts, fed the same way on its own queue. p99 of N samples is by nearest rank. **Absorption**: a
worker (concurrency 4) with a full pool of P VMs gets 2P+4 tasks (agent "true", no commit) enqueued at once: how many
claimed a warm VM before the first found the pool empty (in the order of the worker's own log lines), and how many ran
warm in all (refills, 2 at a time, catch up while cold tasks boot). **Cold − warm** is what the pool takes off the
path: the simulated delays and the four smolvm calls before the agent's exec (create, status, start, readiness
probe), each a process spawn.`}
	n := b.n(80, 8)
	delay := fmt.Sprintf("SMOLVM_SIM_DELAY=create=%s,start=%s", warmCreate, warmStart)
	// A short poll keeps asynq's pickup, which all three paths share, from
	// drowning the differences in noise: at the default 100ms it spreads
	// over 0-150 ms (scenario 4).
	poll := 10 * time.Millisecond

	b.logf("  baseline: %d tasks", n)
	base, err := b.asynqPickup(ctx, n, poll)
	if err != nil {
		return s, err
	}

	b.logf("  cold: %d tasks", n)
	queue := b.uniq("cold")
	w, err := b.startWorker(ctx, workerOpts{queue: queue, concurrency: 4, poll: poll, dataDir: b.dataDir(), simState: b.mkdir(queue + "-sim"), env: []string{delay}})
	if err != nil {
		return s, err
	}
	cold, coldWarm, err := b.agentLatency(ctx, queue, n, poll, nil)
	if err != nil {
		return s, err
	}
	if err := w.stop(); err != nil {
		return s, fmt.Errorf("worker exit: %w", err)
	}

	b.logf("  warm: %d tasks", n)
	queue = b.uniq("warm")
	w, err = b.startWorker(ctx, workerOpts{queue: queue, concurrency: 4, poll: poll, dataDir: b.dataDir(), simState: b.mkdir(queue + "-sim"),
		env: []string{delay, "BOTTLEQ_WARM=" + image + "=1"}})
	if err != nil {
		return s, err
	}
	full := func() error { return w.waitPool(ctx, 1) }
	warm, warmWarm, err := b.agentLatency(ctx, queue, n, poll, full)
	if err != nil {
		return s, err
	}
	if err := w.stop(); err != nil {
		return s, fmt.Errorf("worker exit: %w", err)
	}
	if coldWarm != 0 || warmWarm != n {
		return s, fmt.Errorf("%d cold-path tasks ran warm and %d of %d warm-path tasks did: the paths are mixed", coldWarm, warmWarm, n)
	}

	bp50, cp50, wp50 := percentile(base, 50), percentile(cold, 50), percentile(warm, 50)
	boot := msDur(warmCreate + warmStart)
	s.goal(fmt.Sprintf("warm p50, enqueue → agent running (N=%d)", n), fmt.Sprintf("%s (baseline %s: +%s)", ms(wp50), ms(bp50), ms(wp50-bp50)),
		"≤ baseline + 15 ms", wp50 <= bp50+15)
	s.goal(fmt.Sprintf("cold p50, enqueue → agent running (N=%d)", n), fmt.Sprintf("%s (baseline + %s delays + %s)", ms(cp50), ms(boot), ms(cp50-bp50-boot)),
		"≤ baseline + 280 ms + 20 ms", cp50 <= bp50+boot+20)
	s.add("cold − warm p50: what the pool takes off the path", fmt.Sprintf("%s = %s delays + %s for 4 smolvm calls", ms(cp50-wp50), ms(boot), ms(cp50-wp50-boot)))
	s.add("p99: warm, cold, asynq pickup baseline", fmt.Sprintf("%s, %s, %s", ms(percentile(warm, 99)), ms(percentile(cold, 99)), ms(percentile(base, 99))))
	s.detail("| path | N | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|")
	for _, r := range []struct {
		name string
		xs   []float64
	}{{"asynq pickup (baseline)", base}, {"warm", warm}, {"cold", cold}} {
		s.detail("| %s | %d | %s | %s | %s | %s |", r.name, len(r.xs), ms(percentile(r.xs, 50)), ms(percentile(r.xs, 90)), ms(percentile(r.xs, 99)), ms(percentile(r.xs, 100)))
	}

	s.detail("\n| pool P | tasks at once | warm before the first cold | warm in all |\n|---|---|---|---|")
	for _, p := range []int{2, 4, 8} {
		absorbed, total, m, err := b.absorb(ctx, p, delay)
		if err != nil {
			return s, err
		}
		s.add(fmt.Sprintf("back-to-back tasks a pool of %d absorbs, concurrency 4", p), fmt.Sprintf("%d before the first cold start (%d of %d warm)", absorbed, total, m))
		s.detail("| %d | %d | %d | %d |", p, m, absorbed, total)
	}
	return s, nil
}

// agentLatency enqueues n tasks one at a time on queue, each after before
// (if set) returns and a random pause, and returns the latency from
// Enqueue to the agent's first act in ms, and how many ran warm.
func (b *bench) agentLatency(ctx context.Context, queue string, n int, poll time.Duration, before func() error) ([]float64, int, error) {
	p := payload(image, "date", "+%s%N")
	p.Commit = tasks.Bool(false)
	if before == nil { // prime: pack lookup and the worker's first task
		if _, err := b.enqueue(queue, p); err != nil {
			return nil, 0, err
		}
		if _, err := b.waitCompletedEvery(ctx, queue, 0, 1, time.Minute, time.Millisecond); err != nil {
			return nil, 0, err
		}
	}
	done := 0
	if before == nil {
		done = 1
	}
	var lats []float64
	warm := 0
	for range n {
		if before != nil {
			if err := before(); err != nil {
				return nil, 0, err
			}
		}
		time.Sleep(time.Duration(rand.Int64N(int64(poll) * 3 / 2)))
		t0 := time.Now()
		id, err := b.enqueue(queue, p)
		if err != nil {
			return nil, 0, err
		}
		if _, err := b.waitCompletedEvery(ctx, queue, done, 1, time.Minute, time.Millisecond); err != nil {
			return nil, 0, err
		}
		done++
		r, ok, err := b.result(ctx, queue, id)
		if err != nil || !ok {
			return nil, 0, fmt.Errorf("task %s: no result (%v)", id, err)
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(r.Stdout), 10, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("task %s: agent printed %q, not a time", id, r.Stdout)
		}
		lats = append(lats, float64(ns-t0.UnixNano())/1e6)
		if r.Warm {
			warm++
		}
	}
	return lats, warm, nil
}

// asynqPickup is the baseline: n tasks fed as agentLatency feeds them to a
// no-op asynq server, and the latency from Enqueue to its handler's start.
func (b *bench) asynqPickup(ctx context.Context, n int, poll time.Duration) ([]float64, error) {
	queue := b.uniq("pickup-noop")
	var mu sync.Mutex
	starts := map[string]time.Time{}
	srv := asynq.NewServer(b.opt, asynq.Config{
		Concurrency: 4, Queues: map[string]int{queue: 1}, TaskCheckInterval: poll,
		DelayedTaskCheckInterval: max(poll, time.Second), LogLevel: asynq.ErrorLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		now := time.Now()
		id, _ := asynq.GetTaskID(ctx)
		mu.Lock()
		starts[id] = now
		mu.Unlock()
		return nil
	})); err != nil {
		return nil, err
	}
	defer srv.Shutdown()
	p := payload(image, "date", "+%s%N")
	var lats []float64
	for range n {
		time.Sleep(time.Duration(rand.Int64N(int64(poll) * 3 / 2)))
		t0 := time.Now()
		id, err := b.enqueue(queue, p)
		if err != nil {
			return nil, err
		}
		for {
			mu.Lock()
			start, ok := starts[id]
			mu.Unlock()
			if ok {
				lats = append(lats, msDur(start.Sub(t0)))
				break
			}
			if time.Since(t0) > time.Minute {
				return nil, fmt.Errorf("no-op task %s not started after a minute", id)
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
		if _, err := b.waitCompletedEvery(ctx, queue, len(lats)-1, 1, time.Minute, time.Millisecond); err != nil {
			return nil, err
		}
	}
	return lats, nil
}

// absorb fills a pool of p at concurrency 4, enqueues 2p+4 tasks at once,
// and returns how many claimed a warm VM before the first found none (in
// the order the worker logged its claims) and how many ran warm in all.
func (b *bench) absorb(ctx context.Context, p int, delay string) (absorbed, warm, m int, err error) {
	queue := b.uniq("absorb")
	w, err := b.startWorker(ctx, workerOpts{queue: queue, concurrency: 4, dataDir: b.dataDir(), simState: b.mkdir(queue + "-sim"),
		env: []string{delay, fmt.Sprintf("BOTTLEQ_WARM=%s=%d", image, p)}, debug: true})
	if err != nil {
		return 0, 0, 0, err
	}
	defer w.stop()
	if err := w.waitPool(ctx, p); err != nil {
		return 0, 0, 0, err
	}
	m = 2*p + 4
	pl := payload(image)
	pl.Commit = tasks.Bool(false)
	ids, err := b.enqueueN(queue, m, pl)
	if err != nil {
		return 0, 0, 0, err
	}
	if _, err := b.waitCompleted(ctx, queue, 0, m, 2*time.Minute); err != nil {
		return 0, 0, 0, err
	}
	for _, id := range ids {
		r, ok, err := b.result(ctx, queue, id)
		if err != nil || !ok {
			return 0, 0, 0, fmt.Errorf("task %s: no result (%v)", id, err)
		}
		if r.Warm {
			warm++
		}
	}
	if err := w.stop(); err != nil {
		return 0, 0, 0, err
	}
	claims := 0
	for _, l := range w.lines() {
		if l.Message == "no warm VM ready: cold start" {
			break
		}
		if l.Message == "claimed a warm VM" {
			claims++
		}
	}
	if claims > warm {
		return 0, 0, 0, fmt.Errorf("the log shows %d claims before the first miss, the results %d warm tasks", claims, warm)
	}
	return claims, warm, m, nil
}

// waitPool waits until the worker's pool holds n ready VMs of image, by its
// bottleq_warm_pool_vms gauge.
func (p *workerProc) waitPool(ctx context.Context, n int) error {
	series := `bottleq_warm_pool_vms{image="` + image + `"}`
	deadline := time.Now().Add(time.Minute)
	for {
		m, err := p.scrape()
		if err != nil {
			return err
		}
		if m[series] >= float64(n) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the pool of %s holds %g VMs after a minute, want %d", image, m[series], n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
