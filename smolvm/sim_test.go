package smolvm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/internal/testbin"
)

// simBin is cmd/smolvm-sim, built once for this test binary and named
// smolvm (smolvm ≥ 1.7.0 prints a note under any other name).
var simBin string

func TestMain(m *testing.M) {
	os.Exit(testbin.Main(m.Run, func(d *testbin.Dir) (err error) {
		simBin, err = d.Build("github.com/bot-bottle/bottleq/cmd/smolvm-sim", "smolvm")
		return err
	}))
}

// simClient returns a client of the simulator at version v with a state
// directory of its own.
func simClient(t *testing.T, v string, extraEnv ...string) (*Client, string) {
	t.Helper()
	state := t.TempDir()
	env := append([]string{"SMOLVM_SIM_VERSION=" + v, "SMOLVM_SIM_STATE=" + state}, extraEnv...)
	c, err := New(context.Background(), Config{Bin: simBin, Env: env, KillGrace: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if c.Version().String() != v {
		t.Fatalf("detected %s, want %s", c.Version(), v)
	}
	return c, state
}

// TestSimLifecycle drives the whole life of a machine through the real
// simulator binary in each dialect: pack → create --from with egress →
// start → ready → exec → stop → pack --from-vm → delete, then a machine
// from the commit sees the committed file.
func TestSimLifecycle(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"0.8.0", "1.0.1", "1.0.2", "1.9.3"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			c, _ := simClient(t, v)
			dir := t.TempDir()
			out := filepath.Join(dir, "agent")
			pack, err := c.PackImage(ctx, "alpine:3", out)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(pack.Machine); err != nil {
				t.Fatalf("pack file: %v", err)
			}
			opts := CreateOptions{From: pack.Machine, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Env: map[string]string{"FROM_CREATE": "c"}}
			if err := c.Create(ctx, "vm-one", opts); err != nil {
				t.Fatal(err)
			}
			if err := c.Create(ctx, "vm-one", opts); !errors.Is(err, ErrExists) {
				t.Fatalf("duplicate create: %v, want ErrExists", err)
			}
			if _, err := c.Exec(ctx, "vm-one", []string{"true"}, ExecOptions{}); !errors.Is(err, ErrNotRunning) {
				t.Fatalf("exec before start: %v, want ErrNotRunning", err)
			}
			if err := c.Start(ctx, "vm-one"); err != nil {
				t.Fatal(err)
			}
			if err := c.WaitReady(ctx, "vm-one", 10*time.Second); err != nil {
				t.Fatal(err)
			}
			res, err := c.Exec(ctx, "vm-one", []string{"sh", "-c", `mkdir -p state && echo "$FROM_CREATE $TASK $(pwd)" > state/file && cat state/file; echo oops >&2; exit 3`},
				ExecOptions{Env: map[string]string{"TASK": "t1"}, Workdir: "/workspace", Timeout: 30 * time.Second, Stream: true})
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != 3 || !strings.HasPrefix(string(res.Stdout), "c t1 ") || !strings.HasSuffix(strings.TrimSpace(string(res.Stdout)), "/workspace") || string(res.Stderr) != "oops\n" {
				t.Fatalf("exec result = %d %q %q", res.ExitCode, res.Stdout, res.Stderr)
			}
			m, err := c.Status(ctx, "vm-one")
			if err != nil || m.State != StateRunning || m.Name != "vm-one" {
				t.Fatalf("status = %+v, %v", m, err)
			}
			if _, err := c.PackFromVM(ctx, "vm-one", filepath.Join(dir, "early")); err == nil {
				t.Fatal("pack --from-vm of a running machine succeeded")
			}
			if err := c.Stop(ctx, "vm-one"); err != nil {
				t.Fatal(err)
			}
			commit, err := c.PackFromVM(ctx, "vm-one", filepath.Join(dir, "commit"))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Delete(ctx, "vm-one"); err != nil {
				t.Fatal(err)
			}
			if err := c.Delete(ctx, "vm-one"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("second delete: %v, want ErrNotFound", err)
			}
			if err := c.Create(ctx, "vm-two", CreateOptions{From: commit.Machine}); err != nil {
				t.Fatal(err)
			}
			if err := c.Start(ctx, "vm-two"); err != nil {
				t.Fatal(err)
			}
			res, err = c.Exec(ctx, "vm-two", []string{"cat", "state/file"}, ExecOptions{Workdir: "/workspace"})
			if err != nil || res.ExitCode != 0 || !strings.HasPrefix(string(res.Stdout), "c t1") {
				t.Fatalf("commit not carried: %d %q %v", res.ExitCode, res.Stdout, err)
			}
			if err := c.Delete(ctx, "vm-two"); err != nil {
				t.Fatal(err)
			}
			ms, err := c.List(ctx)
			if err != nil || len(ms) != 0 {
				t.Fatalf("ls = %+v, %v; want no machines", ms, err)
			}
		})
	}
}

// TestSimUnknownMachine: every call on a missing machine is ErrNotFound.
func TestSimUnknownMachine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, _ := simClient(t, "1.9.3")
	for name, err := range map[string]error{
		"start":  c.Start(ctx, "ghost"),
		"stop":   c.Stop(ctx, "ghost"),
		"delete": c.Delete(ctx, "ghost"),
		"ready":  c.WaitReady(ctx, "ghost", time.Second),
		"status": func() error { _, err := c.Status(ctx, "ghost"); return err }(),
		"exec":   func() error { _, err := c.Exec(ctx, "ghost", []string{"true"}, ExecOptions{}); return err }(),
	} {
		var e *Error
		if !errors.Is(err, ErrNotFound) || !errors.As(err, &e) || e.ExitCode != 1 {
			t.Errorf("%s: %v, want ErrNotFound exit 1", name, err)
		}
	}
}

// TestSimExecTimeout: smolvm's --timeout ends the guest with 124.
func TestSimExecTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, _ := simClient(t, "1.9.3")
	startedMachine(t, c)
	res, err := c.Exec(ctx, "vm1", []string{"sleep", "30"}, ExecOptions{Timeout: 200 * time.Millisecond})
	if err != nil || res.ExitCode != 124 || !res.TimedOut {
		t.Fatalf("res = %+v, err = %v; want exit 124, timed out", res, err)
	}
}

// TestSimReadyWaitsOutNotReady: WaitReady keeps probing while the machine
// reports "not running" after start, and succeeds when it stops doing so.
func TestSimReadyWaitsOutNotReady(t *testing.T) {
	t.Parallel()
	c, state := simClient(t, "1.9.3", "SMOLVM_SIM_NOT_READY=300ms")
	startedMachine(t, c)
	if err := c.WaitReady(context.Background(), "vm1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	log, _ := os.ReadFile(filepath.Join(state, "calls.jsonl"))
	if n := strings.Count(string(log), `"op":"machine exec"`); n < 2 {
		t.Errorf("%d exec probes, want several", n)
	}
}

// TestSimCancelKillsProcessGroup: cancelling an exec ends the smolvm
// process and the guest command it started.
func TestSimCancelKillsProcessGroup(t *testing.T) {
	t.Parallel()
	c, _ := simClient(t, "1.9.3")
	startedMachine(t, c)
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "vm1", []string{"sh", "-c", "echo guest-says-sk-123 >&2; echo $$ > " + pidFile + "; exec sleep 60"}, ExecOptions{Stream: true})
		done <- err
	}()
	pid := waitPID(t, pidFile)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		if err != nil && strings.Contains(err.Error(), "guest-says") {
			t.Errorf("the guest's output reached the error: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Exec did not return after cancel")
	}
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("guest %d still alive after cancel", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSimCancelEscalatesToKill: a smolvm that ignores SIGTERM is killed
// after the grace period, and so is everything in its process group (here a
// child that ignores SIGTERM too, which os/exec alone would leave behind).
func TestSimCancelEscalatesToKill(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stubborn := filepath.Join(dir, "smolvm")
	pidFile, childFile := filepath.Join(dir, "pid"), filepath.Join(dir, "child")
	script := "#!/bin/sh\nif [ \"$1\" = --version ]; then echo smolvm 1.9.3; exit 0; fi\ntrap '' TERM\n" +
		"sleep 300 & echo $! > " + childFile + "\necho $$ > " + pidFile + "\nwhile :; do sleep 0.05; done\n"
	if err := os.WriteFile(stubborn, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := New(context.Background(), Config{Bin: stubborn, KillGrace: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx, "vm1") }()
	pid := waitPID(t, pidFile)
	child := waitPID(t, childFile)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Start did not return after cancel and grace")
	}
	for _, p := range []int{pid, child} {
		deadline := time.Now().Add(5 * time.Second)
		for alive(p) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(p) {
			t.Errorf("process %d of the smolvm group survived", p)
		}
	}
}

// alive reports whether pid runs (a zombie waiting for its reaper does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func startedMachine(t *testing.T, c *Client) {
	t.Helper()
	ctx := context.Background()
	pack, err := c.PackImage(ctx, "alpine:3", filepath.Join(t.TempDir(), "p"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, "vm1", CreateOptions{From: pack.Machine}); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
}

func waitPID(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				return pid
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no pid in %s", path)
	return 0
}

// TestSimListMany: ls is read whole, however many machines there are (its
// JSON does not survive being cut to a head and a tail).
func TestSimListMany(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, _ := simClient(t, "1.9.3")
	pack, err := c.PackImage(ctx, "alpine:3", filepath.Join(t.TempDir(), "p"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 120 // ~100 KiB of JSON, past the default 64 KiB capture
	for i := range n {
		if err := c.Create(ctx, fmt.Sprintf("vm%d", i), CreateOptions{From: pack.Machine}); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := c.List(ctx)
	if err != nil || len(ms) != n {
		t.Fatalf("List = %d machines, %v; want %d", len(ms), err, n)
	}
}

// gateWriter collects what Exec passes on and opens the gate, a file the
// guest waits for, once it has seen mark: the guest can only finish after
// its first output reached the writer while it ran.
type gateWriter struct {
	mu         sync.Mutex
	buf        bytes.Buffer
	mark, gate string
}

func (g *gateWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.buf.Write(p)
	if g.mark != "" && strings.Contains(g.buf.String(), g.mark) {
		g.mark = ""
		if err := os.WriteFile(g.gate, nil, 0o644); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (g *gateWriter) String() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.String()
}

// TestSimExecTeesOutput: with Stream, ExecOptions.Stdout and Stderr get
// the guest's output while it runs, every byte of it, and the result
// keeps its head and tail as before.
func TestSimExecTeesOutput(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"1.0.1", "1.9.3"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			c, _ := simClient(t, v)
			startedMachine(t, c)
			gate := filepath.Join(t.TempDir(), "gate")
			stdout := &gateWriter{mark: "first\n", gate: gate}
			stderr := &gateWriter{}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			script := `echo first; echo err-line >&2; while [ ! -e "$1" ]; do sleep 0.01; done; head -c 200000 /dev/zero | tr '\0' x; echo; echo last`
			res, err := c.Exec(ctx, "vm1", []string{"sh", "-c", script, "sh", gate}, ExecOptions{Stream: true, Timeout: time.Minute, Stdout: stdout, Stderr: stderr})
			if err != nil || res.ExitCode != 0 {
				t.Fatalf("exec: %v, exit %d, stderr %q", err, res.ExitCode, res.Stderr)
			}
			want := "first\n" + strings.Repeat("x", 200000) + "\nlast\n"
			if got := stdout.String(); got != want {
				t.Errorf("the writer got %d bytes of stdout, want all %d", len(got), len(want))
			}
			if got := stderr.String(); got != "err-line\n" {
				t.Errorf("the writer got stderr %q", got)
			}
			if res.StdoutOmitted == 0 || !strings.HasPrefix(string(res.Stdout), "first\n") || !strings.HasSuffix(string(res.Stdout), "x\nlast\n") {
				t.Errorf("result stdout: %d omitted, %q…", res.StdoutOmitted, lastN(string(res.Stdout), 40))
			}
		})
	}
}

func lastN(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
