package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/tasks"
)

// bench is the shared environment: binaries, Redis and the processes a
// scenario started.
type bench struct {
	dir        string
	keep       bool
	scale      float64
	worker     string // path of the built cmd/worker
	sim        string // path of the built cmd/smolvm-sim, named smolvm
	simVersion string
	redis      *redisServer
	rdb        *redis.Client
	opt        asynq.RedisClientOpt
	client     *asynq.Client

	mu      sync.Mutex
	running []*workerProc
	seq     int
}

func newBench(ctx context.Context, scale float64, keep bool) (*bench, error) {
	dir, err := os.MkdirTemp("", "bottleq-bench-")
	if err != nil {
		return nil, err
	}
	b := &bench{dir: dir, keep: keep, scale: scale}
	b.logf("building cmd/worker and cmd/smolvm-sim into %s", dir)
	if b.worker, err = b.build(ctx, "github.com/bot-bottle/bottleq/cmd/worker", "worker"); err != nil {
		b.close()
		return nil, err
	}
	if b.sim, err = b.build(ctx, "github.com/bot-bottle/bottleq/cmd/smolvm-sim", filepath.Join("sim", "smolvm")); err != nil {
		b.close()
		return nil, err
	}
	v, err := exec.CommandContext(ctx, b.sim, "--version").Output()
	if err != nil {
		b.close()
		return nil, fmt.Errorf("smolvm-sim --version: %w", err)
	}
	b.simVersion = strings.TrimSpace(string(v))
	if b.redis, err = startRedis(ctx, b.mkdir("redis")); err != nil {
		b.close()
		return nil, err
	}
	b.logf("redis-server %s on %s", b.redis.version, b.redis.addr)
	b.rdb = redis.NewClient(&redis.Options{Addr: b.redis.addr})
	b.opt = asynq.RedisClientOpt{Addr: b.redis.addr}
	b.client = asynq.NewClient(b.opt)
	return b, nil
}

func (b *bench) close() {
	b.stopAll()
	if b.client != nil {
		b.client.Close()
	}
	if b.rdb != nil {
		b.rdb.Close()
	}
	b.redis.stop()
	if b.keep {
		b.logf("kept %s", b.dir)
		return
	}
	os.RemoveAll(b.dir)
}

func (b *bench) logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

// n scales a task count, never below min.
func (b *bench) n(count, minimum int) int { return max(int(float64(count)*b.scale), minimum) }

// uniq returns a name unique in this run.
func (b *bench) uniq(prefix string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	return fmt.Sprintf("%s-%d", prefix, b.seq)
}

func (b *bench) mkdir(name string) string {
	p := filepath.Join(b.dir, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		panic(err)
	}
	return p
}

func (b *bench) build(ctx context.Context, pkg, name string) (string, error) {
	out := filepath.Join(b.dir, "bin", name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	// Static, as the Dockerfile builds: see testbin.Dir.Build.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return out, nil
}

// workerOpts configures one worker process.
type workerOpts struct {
	queue       string
	concurrency int
	poll        time.Duration // 0: the worker's default
	dataDir     string
	simState    string
	env         []string // added to the environment, e.g. SMOLVM_SIM_NOT_READY=1s
	debug       bool
	redis       string   // host:port of the Redis to serve; empty: the harness's
	args        []string // more flags, e.g. -store URL
}

// workerProc is a running cmd/worker.
type workerProc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	metrics string // host:port of /metrics
	done    chan struct{}
	err     error
}

// startWorker starts the real worker binary and waits until it serves.
// The reaper is off (it would add `machine ls` calls to the counts).
func (b *bench) startWorker(ctx context.Context, o workerOpts) (*workerProc, error) {
	name := b.uniq("worker")
	redisAddr := o.redis
	if redisAddr == "" {
		redisAddr = b.redis.addr
	}
	args := []string{
		"-redis", "redis://" + redisAddr,
		"-smolvm", b.sim,
		"-data-dir", o.dataDir,
		"-host", "bench",
		"-concurrency", strconv.Itoa(o.concurrency),
		"-queues", o.queue + "=1",
		"-metrics-addr", "127.0.0.1:0",
		"-reap-interval", "0",
		"-shutdown-timeout", "30s",
		"-log-format", "json",
	}
	if o.poll > 0 {
		args = append(args, "-poll-interval", o.poll.String())
	}
	if o.debug {
		args = append(args, "-log-level", "debug")
	}
	args = append(args, o.args...)
	cmd := exec.Command(b.worker, args...)
	cmd.Env = append(cleanEnv(), "SMOLVM_SIM_STATE="+o.simState)
	cmd.Env = append(cmd.Env, o.env...)
	p := &workerProc{name: name, cmd: cmd, logPath: filepath.Join(b.dir, name+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	b.mu.Lock()
	b.running = append(b.running, p)
	b.mu.Unlock()

	deadline := time.Now().Add(30 * time.Second)
	for {
		serving := false
		for _, l := range p.lines() {
			switch l.Message {
			case "metrics at /metrics":
				p.metrics = l.Addr
			case "worker serving":
				serving = true
			}
		}
		if serving && p.metrics != "" {
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("worker exited before serving: %v\n%s", p.err, tail(p.logPath))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("worker did not start in 30s:\n%s", tail(p.logPath))
		}
	}
}

// cleanEnv is the harness's environment without anything that would
// configure the worker or the simulator behind the harness's back.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "BOTTLEQ_") || strings.HasPrefix(kv, "SMOLVM_") || strings.HasPrefix(kv, "REDIS_URL=") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// stop sends SIGTERM and waits for a clean exit.
func (p *workerProc) stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return errors.New("worker did not exit within 60s of SIGTERM")
	}
}

// stopAll stops every worker still running.
func (b *bench) stopAll() {
	b.mu.Lock()
	ps := b.running
	b.running = nil
	b.mu.Unlock()
	for _, p := range ps {
		if err := p.stop(); err != nil {
			b.logf("%s: %v", p.name, err)
		}
	}
}

// logLine is the part of the worker's JSON log lines the harness reads.
// Durations are in milliseconds (duration_ms).
type logLine struct {
	Level    string  `json:"level"`
	Message  string  `json:"message"`
	Addr     string  `json:"addr"`
	TaskID   string  `json:"task_id"`
	VM       string  `json:"vm"`
	Op       string  `json:"op"`
	Phase    string  `json:"phase"`
	Duration float64 `json:"duration_ms"`
	Exit     *int    `json:"exit"`
}

func (p *workerProc) lines() []logLine {
	f, err := os.Open(p.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

// scrape reads /metrics into series → value, e.g.
// `bottleq_smolvm_call_duration_seconds_sum{op="machine exec"}`.
func (p *workerProc) scrape() (metrics, error) {
	resp, err := http.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	m := metrics{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			m[line[:i]] = v
		}
	}
	return m, nil
}

type metrics map[string]float64

// sum adds every series whose name (before any label) is name.
func (m metrics) sum(name string) float64 {
	var t float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			t += v
		}
	}
	return t
}

// status reads a kB field (VmRSS, VmHWM) of /proc/PID/status, in bytes.
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// enqueue enqueues one agent:run task on queue with the asynq client.
func (b *bench) enqueue(queue string, p tasks.AgentRun) (string, error) {
	t, err := tasks.NewAgentRun(p, asynq.Queue(queue))
	if err != nil {
		return "", err
	}
	info, err := b.client.Enqueue(t)
	if err != nil {
		return "", err
	}
	return info.ID, nil
}

func (b *bench) enqueueN(queue string, n int, p tasks.AgentRun) ([]string, error) {
	ids := make([]string, 0, n)
	for range n {
		id, err := b.enqueue(queue, p)
		if err != nil {
			return ids, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// completion is when the completed count of a queue first reached base+1
// and base+n.
type completion struct {
	first, last time.Time
}

// waitCompleted polls asynq's completed set of queue until it holds base+n
// tasks. A task that is archived or retried is an error: the benchmark only
// means something when every task succeeds. It polls every 20ms, so as not
// to load the 2 cores it measures; waitCompletedEvery sets the period.
func (b *bench) waitCompleted(ctx context.Context, queue string, base, n int, timeout time.Duration) (completion, error) {
	return b.waitCompletedEvery(ctx, queue, base, n, timeout, 20*time.Millisecond)
}

func (b *bench) waitCompletedEvery(ctx context.Context, queue string, base, n int, timeout, every time.Duration) (completion, error) {
	n += base
	var c completion
	prefix := "asynq:{" + queue + "}:"
	deadline := time.Now().Add(timeout)
	for i := 0; ; i++ {
		done, err := b.rdb.ZCard(ctx, prefix+"completed").Result()
		if err != nil {
			return c, err
		}
		now := time.Now()
		if done > int64(base) && c.first.IsZero() {
			c.first = now
		}
		if done >= int64(n) {
			c.last = now
			return c, nil
		}
		if i%max(1, int(100*time.Millisecond/every)) == 0 {
			bad, _ := b.rdb.ZCard(ctx, prefix+"archived").Result()
			retry, _ := b.rdb.ZCard(ctx, prefix+"retry").Result()
			if bad+retry > 0 {
				return c, fmt.Errorf("queue %s: %d tasks archived, %d retrying (of %d; %d completed): %s", queue, bad, retry, n, done, b.someError(ctx, queue))
			}
		}
		if now.After(deadline) {
			return c, fmt.Errorf("queue %s: only %d of %d tasks completed in %s", queue, done, n, timeout)
		}
		select {
		case <-ctx.Done():
			return c, ctx.Err()
		case <-time.After(every):
		}
	}
}

func (b *bench) someError(ctx context.Context, queue string) string {
	insp := asynq.NewInspector(b.opt)
	defer insp.Close()
	for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){insp.ListArchivedTasks, insp.ListRetryTasks} {
		ts, _ := list(queue, asynq.PageSize(1))
		if len(ts) > 0 {
			return ts[0].LastErr
		}
	}
	return ""
}

// result reads a task's result as the worker last wrote it.
func (b *bench) result(ctx context.Context, queue, id string) (tasks.Result, bool, error) {
	return resultOn(ctx, b.rdb, queue, id)
}

// resultOn reads a task's result from the Redis rdb talks to.
func resultOn(ctx context.Context, rdb *redis.Client, queue, id string) (tasks.Result, bool, error) {
	var r tasks.Result
	raw, err := rdb.HGet(ctx, "asynq:{"+queue+"}:t:"+id, "result").Bytes()
	if errors.Is(err, redis.Nil) || (err == nil && len(raw) == 0) {
		return r, false, nil
	}
	if err != nil {
		return r, false, err
	}
	return r, true, json.Unmarshal(raw, &r)
}

func phaseSeconds(r tasks.Result, name string) float64 {
	var t float64
	for _, p := range r.Phases {
		if p.Name == name {
			t += p.Seconds
		}
	}
	return t
}

// call is one line of the simulator's STATE/calls.jsonl.
type call struct {
	Time  time.Time `json:"time"`
	Op    string    `json:"op"`
	Name  string    `json:"name"`
	Image string    `json:"image"`
	Exit  int       `json:"exit"`
	MS    int64     `json:"ms"`
}

func readCalls(simState string) ([]call, error) {
	raw, err := os.ReadFile(filepath.Join(simState, "calls.jsonl"))
	if err != nil {
		return nil, err
	}
	var out []call
	for _, line := range bytes.Split(raw, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var c call
		if err := json.Unmarshal(line, &c); err != nil {
			return nil, fmt.Errorf("calls.jsonl: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}
