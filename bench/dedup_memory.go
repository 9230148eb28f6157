package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/bot-bottle/bottleq/tasks"
)

func packDedup(ctx context.Context, b *bench) (section, error) {
	s := section{method: `Two worker processes (concurrency 25 each, so all 50 tasks start together) share one fresh data
directory and one simulator state, as two workers on one host do. 50 tasks of an image no one has packed are enqueued at
once; the harness counts ` + "`pack create`" + ` calls with a non-empty image in calls.jsonl once all 50 completed. Run twice: with
the simulator at zero latency, and with ` + "`SMOLVM_SIM_DELAY=pack-image=500ms`" + ` so that every task arrives while the one pack
is still running (the realistic case: a real pack pulls an image for seconds).`}
	const n = 50
	for _, v := range []struct{ label, delay string }{{"zero latency", ""}, {"pack takes 500ms", "pack-image=500ms"}} {
		queue := b.uniq("dedup")
		simState := b.mkdir(queue + "-sim")
		dataDir := b.mkdir(queue + "-data")
		var env []string
		if v.delay != "" {
			env = []string{"SMOLVM_SIM_DELAY=" + v.delay}
		}
		for range 2 {
			if _, err := b.startWorker(ctx, workerOpts{queue: queue, concurrency: 25, dataDir: dataDir, simState: simState, env: env}); err != nil {
				return s, err
			}
		}
		img := b.uniq("bench/dedup") + ":1"
		b.logf("  %s: %d tasks of %s on 2 workers", v.label, n, img)
		start := time.Now()
		ids, err := b.enqueueN(queue, n, payload(img))
		if err != nil {
			return s, err
		}
		if _, err := b.waitCompleted(ctx, queue, 0, n, 5*time.Minute); err != nil {
			return s, err
		}
		took := time.Since(start)
		b.stopAll()
		calls, err := readCalls(simState)
		if err != nil {
			return s, err
		}
		packs := 0
		for _, c := range calls {
			if c.Op == "pack create" && c.Image != "" {
				packs++
			}
		}
		cached := 0
		for _, id := range ids {
			r, ok, err := b.result(ctx, queue, id)
			if err != nil || !ok {
				return s, fmt.Errorf("task %s: no result (%v)", id, err)
			}
			if r.PackCached {
				cached++
			}
		}
		s.goal(fmt.Sprintf("image packs for 50 tasks, 2 processes, %s", v.label), fmt.Sprint(packs), "exactly 1", packs == 1)
		s.detail("- %s: %d `pack create --image` for %d tasks; %d tasks report pack_cached; all done in %s.", v.label, packs, n, cached, took.Round(10*time.Millisecond))
	}
	return s, nil
}

func memory(ctx context.Context, b *bench) (section, error) {
	s := section{method: `One worker at concurrency 50 runs 50 tasks at once whose command is
` + "`sh -c 'yes | head -c 100000000'`" + `: each prints 100 MB on stdout, streamed by the simulator (--stream hands the guest the
simulator's own stdout, so the bytes go straight into the worker's pipe). The worker keeps head and tail of each stream.
**Peak RSS = VmHWM of the worker process** (/proc/PID/status) after all 50 completed; the baseline is the same process's
VmHWM after its priming task (one quiet task). bottleq_vms_in_flight is sampled every 100 ms to show how many ran at
once. 5 GB pass through pipes on a 2-core machine, so the run takes a while; its time is reported.`}
	const n = 50
	queue := b.uniq("mem")
	simState := b.mkdir(queue + "-sim")
	w, err := b.startWorker(ctx, workerOpts{queue: queue, concurrency: n, dataDir: b.dataDir(), simState: simState})
	if err != nil {
		return s, err
	}
	pid := w.cmd.Process.Pid
	if _, err := b.enqueue(queue, payload(image)); err != nil {
		return s, err
	}
	if _, err := b.waitCompleted(ctx, queue, 0, 1, time.Minute); err != nil {
		return s, err
	}
	base, err := procStatus(pid, "VmHWM")
	if err != nil {
		return s, err
	}
	var mu sync.Mutex
	maxVMs := 0.0
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if m, err := w.scrape(); err == nil {
				mu.Lock()
				maxVMs = max(maxVMs, m.sum("bottleq_vms_in_flight"))
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	const size = 100_000_000
	b.logf("  %d tasks printing %d MB each, concurrency %d", n, size/1_000_000, n)
	start := time.Now()
	ids, err := b.enqueueN(queue, n, payload(image, "sh", "-c", fmt.Sprintf("yes | head -c %d", size)))
	if err != nil {
		close(stop)
		return s, err
	}
	_, err = b.waitCompleted(ctx, queue, 1, n, 8*time.Minute)
	took := time.Since(start)
	close(stop)
	<-sampled
	if err != nil {
		return s, err
	}
	peak, err := procStatus(pid, "VmHWM")
	if err != nil {
		return s, err
	}
	cpu, _ := procCPU(pid)
	if err := w.stop(); err != nil {
		return s, fmt.Errorf("worker exit: %w", err)
	}
	short := 0
	for _, id := range ids {
		r, ok, err := b.result(ctx, queue, id)
		if err != nil || !ok || r.State != tasks.StateDone || r.ExitCode != 0 {
			return s, fmt.Errorf("task %s: not done with exit 0 (%v, %+v)", id, err, r.Error)
		}
		if r.StdoutOmitted+int64(len(r.Stdout)) < size {
			short++
		}
	}
	if short > 0 {
		return s, fmt.Errorf("%d tasks saw less than %d bytes of stdout", short, size)
	}
	mib := func(x int64) float64 { return float64(x) / (1 << 20) }
	s.goal("worker peak RSS, 50 × 100 MB in flight", fmt.Sprintf("%.1f MiB (idle baseline %.1f MiB, ratio %.2f)", mib(peak), mib(base), float64(peak)/float64(base)), "≤ 64 MiB", mib(peak) <= 64)
	s.add("time for 50 × 100 MB", fmt.Sprintf("%s (%.0f MB/s through the worker; at most %.0f VMs in flight)", took.Round(100*time.Millisecond), n*size/1e6/took.Seconds(), maxVMs))
	s.detail("- Worker CPU for the whole run (user+system, /proc/PID/stat): %.1f s; its children (simulator and guests): %.1f s.", cpu.self, cpu.children)
	return s, nil
}
