package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// outputCap is the agent's per-stream limit for buffered exec (11 MiB).
const outputCap = 11 * 1024 * 1024

// exec handles `machine exec`: COMMAND runs as a plain host process.
func (a *app) exec(args []string) error {
	p, err := parseArgs(args, execFlags, true)
	if err != nil {
		return err
	}
	command := append(p.pos, p.rest...)
	if len(command) == 0 {
		return missing("<COMMAND>...")
	}
	var timeout time.Duration
	if v := p.get("timeout"); p.has("timeout") {
		if timeout, err = parseHumanDuration(v); err != nil {
			return usagef("invalid value '%s' for '%s': %v", v, flagTimeout.display(), err)
		}
		if timeout <= 0 {
			return usagef("invalid value '%s' for '%s': timeout must be greater than 0 (e.g., 5sec, 30s)", v, flagTimeout.display())
		}
	}
	if err := checkEnv(p.all("env")); err != nil {
		return err
	}
	name, err := nameFlag(p)
	if err != nil {
		return err
	}
	a.call.Name = name
	if err := a.gate("exec"); err != nil {
		return err
	}
	m, st, err := a.running(name, true)
	if err != nil {
		return err
	}
	root := st.root(name)
	dir, err := guestPath(root, p.get("workdir"))
	if err != nil {
		return agentErr("vm exec", err.Error())
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return agentErr("vm exec", err.Error())
	}
	// Later entries win: the host's environment, the machine's, exec's -e.
	env := append(append([]string{}, a.env...), "SMOLVM_SIM_ROOT="+root, "SMOLVM_SIM_MACHINE="+name)
	env = append(append(env, m.Env...), p.all("env")...)

	cmd := exec.Command(command[0], command[1:]...)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = guestAttr()
	return a.runGuest(cmd, m.Image != "", p.has("stream"), timeout)
}

// running loads a machine that exec/cp may use: it must exist and be running
// (and, for exec, be outside the SMOLVM_SIM_NOT_READY window).
func (a *app) running(name string, checkReady bool) (*machine, *store, error) {
	st, err := a.openStore()
	if err != nil {
		return nil, nil, err
	}
	var m *machine
	err = st.locked(func() (err error) {
		m, err = st.get(name)
		switch {
		case err != nil:
			return err
		case m == nil:
			return errNotFound(name)
		case m.State != stateRunning:
			return errNotRunning(name)
		case checkReady && a.notReady > 0 && time.Since(m.StartedAt) < a.notReady:
			return errNotRunning(name) // the agent is not reachable yet
		}
		return nil
	})
	return m, st, err
}

// runGuest runs cmd to completion with stdin from /dev/null, enforcing the
// timeout and killing the guest's process group if the simulator itself is
// told to stop. container says the machine has an image: a command that
// cannot be started is then the container runtime's non-zero exit, a guest
// result (docs/smolvm.md, machine exec), not smolvm's own failure.
func (a *app) runGuest(cmd *exec.Cmd, container, stream bool, timeout time.Duration) error {
	overflow := make(chan struct{})
	var once sync.Once
	onOver := func() { once.Do(func() { close(overflow) }) }
	if !a.ver.atLeast(1, 9, 0) {
		onOver = nil // older agents silently cut the output at the cap
	}
	stdout := &capBuffer{limit: outputCap, onOver: onOver}
	stderr := &capBuffer{limit: outputCap, onOver: onOver}
	if stream {
		cmd.Stdout, cmd.Stderr = a.stdout, a.stderr
	} else {
		cmd.Stdout, cmd.Stderr = stdout, stderr
	}
	// A background grandchild may hold the pipes open after the guest exits.
	cmd.WaitDelay = 2 * time.Second

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		if !container {
			return agentErr("vm exec", "failed to spawn command: "+err.Error())
		}
		// A shell's codes: 126 found but not runnable, 127 not found. The
		// wording is the runtime's, never smolvm's "Error: " shape.
		fmt.Fprintf(a.stderr, "exec %s: %v\n", cmd.Args[0], errors.Unwrap(err))
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return exitStatus(127)
		}
		return exitStatus(126)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	kill := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	timedOut := false
	select {
	case <-done:
	case <-timer:
		timedOut = true
		kill()
	case s := <-sigs:
		kill() // the client was cancelled: the agent kills the guest
		return exitStatus(128 + int(s.(syscall.Signal)))
	case <-overflow:
		kill()
		return agentErr("vm exec", fmt.Sprintf("command output exceeded %d bytes; use streaming exec (--stream)", outputCap))
	}
	if !stream {
		_, _ = a.stdout.Write(stdout.Bytes())
		_, _ = a.stderr.Write(stderr.Bytes())
	}
	if timedOut {
		switch {
		case container:
			fmt.Fprintln(a.stderr, "container timed out")
		case a.ver.atLeast(0, 8, 1): // v0.8.0's bare-VM path added no text
			fmt.Fprintf(a.stderr, "\ncommand timed out after %dms\n", timeout.Milliseconds())
		}
		return exitStatus(124)
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		return exitStatus(cmd.ProcessState.ExitCode())
	case ws.Signaled() && a.ver.atLeast(0, 8, 1):
		return exitStatus(128 + int(ws.Signal()))
	case ws.Signaled():
		return exitStatus(255) // v0.8.0 reported -1
	}
	return exitStatus(ws.ExitStatus())
}

// capBuffer keeps the first limit bytes written and drains the rest, calling
// onOver (if set) the first time the limit is exceeded.
type capBuffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	limit  int
	onOver func()
}

func (c *capBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	room := c.limit - c.buf.Len()
	if len(p) <= room {
		return c.buf.Write(p)
	}
	c.buf.Write(p[:room])
	if c.onOver != nil {
		c.onOver()
	}
	return len(p), nil
}

// Bytes returns the kept output.
func (c *capBuffer) Bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Bytes()
}
