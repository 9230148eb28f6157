// Package e2e runs bottleq's real binaries together: cmd/worker and
// cmd/enqueue against miniredis and a real redis-server, with
// cmd/smolvm-sim standing in for smolvm in both argv dialects.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/internal/testbin"
	"github.com/bot-bottle/bottleq/internal/testredis"
)

var bins struct{ worker, enqueue, sim string }

func TestMain(m *testing.M) {
	os.Exit(testbin.Main(m.Run, func(d *testbin.Dir) (err error) {
		const mod = "github.com/bot-bottle/bottleq/cmd/"
		if bins.sim, err = d.Build(mod+"smolvm-sim", "smolvm"); err != nil {
			return err
		}
		if bins.worker, err = d.Build(mod+"worker", "worker"); err != nil {
			return err
		}
		bins.enqueue, err = d.Build(mod+"enqueue", "enqueue")
		return err
	}))
}

// stack is one Redis, one simulated smolvm state and one data directory,
// shared by the workers a test starts.
type stack struct {
	t        *testing.T
	redis    *testredis.Server
	version  string
	simState string
	dataDir  string
	// url overrides the Redis URL (with a password, say); caFile is the CA
	// of a TLS Redis.
	url, caFile string
}

func (s *stack) redisURL() string {
	if s.url != "" {
		return s.url
	}
	return s.redis.URL()
}

func newStack(t *testing.T, redisKind, version string) *stack {
	t.Helper()
	s := &stack{t: t, version: version, simState: t.TempDir(), dataDir: t.TempDir()}
	switch redisKind {
	case "redis-server":
		s.redis = testredis.Real(t)
	case "miniredis":
		s.redis = testredis.Mini(t)
	}
	t.Cleanup(func() {
		if ms := s.machines(); len(ms) != 0 {
			t.Errorf("machines left in the simulator: %q", ms)
		}
	})
	return s
}

// each runs f for every Redis kind and smolvm dialect.
func each(t *testing.T, f func(t *testing.T, s *stack)) {
	for _, kind := range []string{"miniredis", "redis-server"} {
		for _, v := range []string{"1.0.1", "1.9.3"} {
			t.Run(kind+"/"+v, func(t *testing.T) {
				t.Parallel()
				f(t, newStack(t, kind, v))
			})
		}
	}
}

func (s *stack) simEnv() []string {
	return []string{"SMOLVM_SIM_STATE=" + s.simState, "SMOLVM_SIM_VERSION=" + s.version}
}

// proc is a running worker.
type proc struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// worker starts cmd/worker on the stack, with env added (such as
// SMOLVM_SIM_FAULTS=...), and waits until it serves. It is stopped with
// SIGTERM at cleanup, and must exit 0.
func (s *stack) worker(env ...string) *proc {
	s.t.Helper()
	cmd := exec.Command(bins.worker, "-log-format", "json", "-log-level", "debug")
	cmd.Env = append(os.Environ(), s.simEnv()...)
	cmd.Env = append(cmd.Env,
		"REDIS_URL="+s.redisURL(),
		"REDIS_CA_FILE="+s.caFile,
		"SMOLVM_BIN="+bins.sim,
		"BOTTLEQ_DATA_DIR="+s.dataDir,
		"BOTTLEQ_POLL_INTERVAL=20ms",
		"BOTTLEQ_METRICS_ADDR=127.0.0.1:0",
		"BOTTLEQ_RETRY_BASE=50ms",
		"BOTTLEQ_RETRY_MAX=200ms",
		"BOTTLEQ_SHUTDOWN_TIMEOUT=2s",
	)
	cmd.Env = append(cmd.Env, env...)
	return s.startProc(cmd)
}

func (s *stack) startProc(cmd *exec.Cmd) *proc {
	s.t.Helper()
	p := &proc{cmd: cmd, logs: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	s.t.Cleanup(func() {
		if err := p.stop(); err != nil {
			s.t.Errorf("worker exit: %v\n%s", err, p.logs)
		} else if s.t.Failed() {
			s.t.Logf("worker %d log:\n%s", cmd.Process.Pid, lastBytes(p.logs.String(), 20000))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.logs.String(), "worker serving") {
		select {
		case err := <-p.done:
			p.done <- err
			s.t.Fatalf("worker exited before serving: %v\n%s", err, p.logs)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("worker did not start:\n%s", p.logs)
		}
	}
	return p
}

// metrics scrapes the worker's /metrics.
func (p *proc) metrics(t *testing.T) string {
	t.Helper()
	var addr string
	for _, line := range strings.Split(p.logs.String(), "\n") {
		var l struct{ Addr, Message string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Message == "metrics at /metrics" {
			addr = l.Addr
		}
	}
	if addr == "" {
		t.Fatalf("no metrics address in the worker's log:\n%s", p.logs)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// stop sends SIGTERM and waits for the exit; it returns the exit error.
func (p *proc) stop() error {
	select {
	case err := <-p.done:
		p.done <- err
		return nil // already stopped (and checked) by the test
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(60 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		return errors.New("worker did not exit within 60s of SIGTERM")
	}
}

// enqueue runs cmd/enqueue against the stack's Redis.
func (s *stack) enqueue(args ...string) (stdout, stderr string, code int) {
	s.t.Helper()
	if s.caFile != "" {
		args = append([]string{"--redis-ca", s.caFile}, args...)
	}
	return s.enqueueURL(s.redisURL(), args...)
}

// enqueueURL runs cmd/enqueue against the Redis at url.
func (s *stack) enqueueURL(url string, args ...string) (stdout, stderr string, code int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.enqueue, append([]string{"--redis", url}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		s.t.Fatalf("enqueue: %v", err)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// machines lists the simulator's machines.
func (s *stack) machines() []string {
	s.t.Helper()
	cmd := exec.Command(bins.sim, "machine", "ls", "--json")
	cmd.Env = append(os.Environ(), s.simEnv()...)
	out, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("machine ls: %v", err)
	}
	var ms []struct{ Name string }
	if err := json.Unmarshal(out, &ms); err != nil {
		s.t.Fatalf("machine ls: %v: %s", err, out)
	}
	var names []string
	for _, m := range ms {
		names = append(names, m.Name)
	}
	return names
}

// call is one line of the simulator's calls log.
type call struct {
	Op    string `json:"op"`
	Name  string `json:"name"`
	Image string `json:"image"`
	Exit  int    `json:"exit"`
	Fault bool   `json:"fault"`
	// Created is what a successful create made (see box_test.go).
	Created *createdBox `json:"created"`
}

// calls returns the simulator's logged calls that match keep.
func (s *stack) calls(keep func(call) bool) []call {
	s.t.Helper()
	f, err := os.Open(filepath.Join(s.simState, "calls.jsonl"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	var out []call
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var c call
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			s.t.Fatalf("calls log: %v", err)
		}
		if keep(c) {
			out = append(out, c)
		}
	}
	return out
}

// vmCalls are the calls that touch a machine or a pack: everything but
// --version and the test's own `machine ls`.
func vmCalls(c call) bool { return c.Op != "version" && c.Op != "machine ls" }

// imagePacks are `pack create --image` calls.
func imagePacks(c call) bool { return c.Op == "pack create" && c.Image != "" }

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
