package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/bot-bottle/bottleq/tasks"
)

// image is the image every scenario but pack dedup uses; its pack is made
// once, in the shared data directory, by the first task that needs it.
const image = "bench/alpine:3"

// callsPerTask is the smolvm calls of a committed run of an image already
// packed: create, status (the check that the VM got the resources and
// network it was created with), start, the readiness exec, the agent's
// exec, stop, pack --from-vm and delete. The first task of an image packs
// it too.
const callsPerTask = 8

func payload(img string, command ...string) tasks.AgentRun {
	if len(command) == 0 {
		command = []string{"true"}
	}
	return tasks.AgentRun{Image: img, Command: command}
}

// dataDir is the data directory the scenarios share (packs and commits).
func (b *bench) dataDir() string { return b.mkdir("data") }

// taskTimes is what the worker's debug log says of one task.
type taskTimes struct {
	id, vm     string
	wall       float64        // "task finished" duration: the handler's own clock, ms
	smolvm     float64        // sum of the worker-measured durations of its smolvm calls, ms
	phases     float64        // sum of its "phase done" durations, ms
	calls      int            // smolvm calls the worker logged for its VM
	perOp      map[string]int // calls by op
	perOpMS    map[string]float64
	finishedOK bool
}

// taskTimesFromLog groups the worker's log lines by VM. The pack --image
// call names no VM and is left out (it belongs to the first task only).
func taskTimesFromLog(lines []logLine) map[string]*taskTimes {
	byVM := map[string]*taskTimes{}
	get := func(vm string) *taskTimes {
		t := byVM[vm]
		if t == nil {
			t = &taskTimes{vm: vm, perOp: map[string]int{}, perOpMS: map[string]float64{}}
			byVM[vm] = t
		}
		return t
	}
	for _, l := range lines {
		if l.VM == "" {
			continue
		}
		switch l.Message {
		case "smolvm":
			t := get(l.VM)
			t.smolvm += l.Duration
			t.calls++
			t.perOp[l.Op]++
			t.perOpMS[l.Op] += l.Duration
		case "phase done":
			get(l.VM).phases += l.Duration
		case "task finished":
			t := get(l.VM)
			t.id, t.wall, t.finishedOK = l.TaskID, l.Duration, true
		}
	}
	return byVM
}

func ownTime(ctx context.Context, b *bench) (section, error) {
	s := section{method: `One worker (concurrency 1, debug log level, JSON log) runs one warm-up task (the first of its
image, which packs it) and then N tasks (command "true", commit on) enqueued at once. Per task, **worker-own time =
handler wall time − Σ smolvm call durations**, both from the worker's own clock as it logs them: the wall time is the
duration of the "task finished" line (from just before "task started" to after the final result write: everything
the handler does but JSON-decoding the payload), the smolvm time is the sum of the duration of the debug "smolvm" line
the client writes for each call of that VM (the same duration it passes to Config.Observe, i.e. fork+exec+wait+output
capture of the smolvm process). The sum over all tasks is cross-checked against the delta of
bottleq_smolvm_call_duration_seconds_sum on /metrics. The own time splits into the part inside phases (Σ "phase
done" − Σ smolvm: pack-cache lookup, commit rename, …) and the part between phases (wall − Σ phases: the progress
result writes to Redis before each phase, logging, JSON). Debug logging adds ~16 log lines per task, so this is an
upper bound of the info-level own time; scenario 2 reports the info-level mean. smolvm calls per task are counted in
the simulator's STATE/calls.jsonl, by machine name. What would make it exact and cheap (no debug log): the worker
putting "handler_seconds" and "smolvm_seconds" in the final tasks.Result, the latter summed by a per-task observer
of smolvm calls carried in the context.`}
	n := b.n(500, 20)
	queue := b.uniq("own")
	simState := b.mkdir(queue + "-sim")
	w, err := b.startWorker(ctx, workerOpts{queue: queue, concurrency: 1, dataDir: b.dataDir(), simState: simState, debug: true})
	if err != nil {
		return s, err
	}
	img := b.uniq("bench/own") + ":1" // a new image: the warm-up task packs it
	warmID, err := b.enqueue(queue, payload(img))
	if err != nil {
		return s, err
	}
	if _, err := b.waitCompleted(ctx, queue, 0, 1, time.Minute); err != nil {
		return s, err
	}
	m0, err := w.scrape()
	if err != nil {
		return s, err
	}
	b.logf("  %d tasks at concurrency 1", n)
	ids, err := b.enqueueN(queue, n, payload(img))
	if err != nil {
		return s, err
	}
	c, err := b.waitCompleted(ctx, queue, 1, n, 10*time.Minute)
	if err != nil {
		return s, err
	}
	m1, err := w.scrape()
	if err != nil {
		return s, err
	}
	rss, _ := procStatus(w.cmd.Process.Pid, "VmHWM")
	if err := w.stop(); err != nil {
		return s, fmt.Errorf("worker exit: %w", err)
	}

	byVM := taskTimesFromLog(w.lines())
	byID := map[string]*taskTimes{}
	for _, t := range byVM {
		if t.finishedOK {
			byID[t.id] = t
		}
	}
	var own, inside, between, wall, sm []float64
	var logSmolvm float64
	for _, id := range ids {
		t := byID[id]
		if t == nil {
			return s, fmt.Errorf("task %s has no \"task finished\" line in the worker's log", id)
		}
		own = append(own, t.wall-t.smolvm)
		inside = append(inside, t.phases-t.smolvm)
		between = append(between, t.wall-t.phases)
		wall = append(wall, t.wall)
		sm = append(sm, t.smolvm)
		logSmolvm += t.smolvm
	}
	p50, p99 := percentile(own, 50), percentile(own, 99)
	s.goal(fmt.Sprintf("own time p50 (N=%d)", n), ms(p50), "≤ 2 ms", p50 <= 2)
	s.goal("own time p99", ms(p99), "≤ 10 ms", p99 <= 10)

	// Calls per task, from the simulator's log.
	calls, err := readCalls(simState)
	if err != nil {
		return s, err
	}
	perName := map[string][]call{}
	imagePacks := 0
	for _, cl := range calls {
		if cl.Op == "pack create" && cl.Image != "" {
			imagePacks++
		}
		perName[cl.Name] = append(perName[cl.Name], cl)
	}
	var counts []float64
	ops := map[string]int{}
	for _, id := range ids {
		cs := perName[byID[id].vm]
		counts = append(counts, float64(len(cs)))
		for _, cl := range cs {
			ops[cl.Op]++
		}
	}
	warm := 0
	if t := byID[warmID]; t != nil {
		warm = len(perName[t.vm]) + imagePacks
	}
	minC, maxC := slices.Min(counts), slices.Max(counts)
	s.goal("smolvm calls per task (committed run)", fmt.Sprintf("%g (min %g, max %g); first task of the image: %d", mean(counts), minC, maxC, warm),
		fmt.Sprintf("%d; first of an image %d", callsPerTask, callsPerTask+1), minC == callsPerTask && maxC == callsPerTask && warm == callsPerTask+1)

	// Cross-check with /metrics and the simulator's own timing.
	metricSmolvm := (m1.sum("bottleq_smolvm_call_duration_seconds_sum") - m0.sum("bottleq_smolvm_call_duration_seconds_sum")) * 1000
	metricCalls := m1.sum("bottleq_smolvm_call_duration_seconds_count") - m0.sum("bottleq_smolvm_call_duration_seconds_count")
	var simMS int64
	for _, id := range ids {
		for _, cl := range perName[byID[id].vm] {
			simMS += cl.MS
		}
	}
	tput := float64(n-1) / c.last.Sub(c.first).Seconds()
	s.detail("| per task (N=%d) | p50 | p99 | mean |\n|---|---|---|---|", n)
	s.detail("| handler wall time | %s | %s | %s |", ms(percentile(wall, 50)), ms(percentile(wall, 99)), ms(mean(wall)))
	s.detail("| Σ smolvm calls (worker's clock) | %s | %s | %s |", ms(percentile(sm, 50)), ms(percentile(sm, 99)), ms(mean(sm)))
	s.detail("| **worker-own time** | **%s** | **%s** | %s |", ms(p50), ms(p99), ms(mean(own)))
	s.detail("| … of which inside phases (Σ phases − Σ smolvm) | %s | %s | %s |", ms(percentile(inside, 50)), ms(percentile(inside, 99)), ms(mean(inside)))
	s.detail("| … of which between phases (wall − Σ phases) | %s | %s | %s |", ms(percentile(between, 50)), ms(percentile(between, 99)), ms(mean(between)))
	s.detail("")
	s.detail("- Cross-check: Σ smolvm time of the %d tasks from the log = %.1f ms; from /metrics (Δ bottleq_smolvm_call_duration_seconds_sum) = %.1f ms over %.0f calls. The simulator's own timing of the same calls (calls.jsonl `ms`, whole milliseconds, from its start to its exit, without process start-up) = %d ms, so about %s per call is process spawn, Go runtime start and pipe handling on either side.",
		n, logSmolvm, metricSmolvm, metricCalls, simMS, ms((logSmolvm-float64(simMS))/float64(max(1, len(ids)*int(mean(counts))))))
	var opNames []string
	for op := range ops {
		opNames = append(opNames, op)
	}
	sort.Strings(opNames)
	var opParts []string
	perOpMS := map[string]float64{}
	perOpN := map[string]int{}
	for _, id := range ids {
		for op, v := range byID[id].perOpMS {
			perOpMS[op] += v
			perOpN[op] += byID[id].perOp[op]
		}
	}
	for _, op := range opNames {
		opParts = append(opParts, fmt.Sprintf("%s ×%.2f (mean %s)", op, float64(ops[op])/float64(n), ms(perOpMS[op]/float64(max(1, perOpN[op])))))
	}
	s.detail("- Calls per task by op (calls.jsonl; mean duration on the worker's clock): %s. The first task of the image adds one `pack create --image` (counted: %d in this run).", strings.Join(opParts, ", "), imagePacks)
	s.detail("- Throughput of this run (concurrency 1, debug log): %.1f tasks/s. Worker peak RSS (VmHWM): %.1f MiB.", tput, float64(rss)/(1<<20))
	return s, nil
}
