// Command bench is bottleq's benchmark harness, run by `make bench`.
//
// It builds the real cmd/worker and cmd/smolvm-sim (as "smolvm"), starts a
// redis-server on a free loopback port, runs the numbered scenarios below
// (worker overhead, throughput, readiness lag, idle pickup, pack dedup,
// memory, warm pool, HTTP API, Redis memory per task, object store) with
// the unmodified worker binary against the simulator, prints a table and
// writes it, with the method of each scenario, to BENCHMARKS.md.
//
// Every figure that has a baseline is measured in the same run as it. The
// harness only measures: it configures the worker with flags and
// environment, reads what the worker itself reports (its JSON log, its
// /metrics, its task results, /proc) and never patches it. It needs Linux
// (/proc), redis-server (scripts/ensure-redis installs it) and, for the
// object store scenario, versitygw (scripts/ensure-versitygw).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() { os.Exit(run(os.Args[1:])) }

// scenario is one numbered benchmark.
type scenario struct {
	n    int
	name string
	run  func(ctx context.Context, b *bench) (section, error)
}

var scenarios = []scenario{
	{1, "Worker's own time per task", ownTime},
	{2, "Throughput", throughput},
	{3, "Readiness detection lag", readiness},
	{4, "Idle pickup latency", pickup},
	{5, "Pack dedup across processes", packDedup},
	{6, "Memory with 50 loud agents", memory},
	{7, "Warm pool: enqueue to agent running", warmPool},
	{8, "HTTP API overhead", apiOverhead},
	{9, "Redis memory per finished task", redisPerTask},
	{10, "Object store: transfers, shared packs, commits on other hosts", objStore},
}

func run(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	out := fs.String("out", "BENCHMARKS.md", "markdown file to write (empty: none)")
	only := fs.String("only", "", "comma-separated scenario numbers to run (default: all)")
	scale := fs.Float64("scale", 1, "multiply task counts by this (below 1 to try the harness quickly; the goals need 1)")
	keep := fs.Bool("keep", false, "keep the temporary directory (binaries, logs, simulator state)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	want := map[int]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench: -only: %q is not a scenario number\n", s)
				return 2
			}
			want[n] = true
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	started := time.Now()
	b, err := newBench(ctx, *scale, *keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer b.close()

	rep := report{
		date:   started.UTC().Format("2006-01-02 15:04 MST"),
		cores:  runtime.NumCPU(),
		goVer:  runtime.Version(),
		cpu:    cpuModel(),
		redis:  b.redis.version,
		scale:  *scale,
		simVer: b.simVersion,
	}
	failed := false
	for _, s := range scenarios {
		if len(want) > 0 && !want[s.n] {
			continue
		}
		b.logf("scenario %d: %s", s.n, s.name)
		t0 := time.Now()
		l0 := b.cpuSnapshot()
		sec, err := s.run(ctx, b)
		if err != nil {
			failed = true
			sec.err = err
			b.logf("scenario %d FAILED: %v", s.n, err)
		}
		b.stopAll()
		sec.n, sec.title, sec.took = s.n, s.name, time.Since(t0)
		sec.foreign = b.cpuSnapshot().foreignSince(l0)
		rep.sections = append(rep.sections, sec)
		if ctx.Err() != nil {
			break
		}
	}
	rep.took = time.Since(started)

	fmt.Println()
	fmt.Print(rep.table())
	fmt.Printf("\nbench: %d cores, %s, finished in %s\n", rep.cores, rep.goVer, rep.took.Round(time.Second))
	if *out != "" {
		if err := os.WriteFile(*out, []byte(rep.markdown()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		fmt.Println("bench: wrote", *out)
	}
	if failed || ctx.Err() != nil {
		return 1
	}
	return 0
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
