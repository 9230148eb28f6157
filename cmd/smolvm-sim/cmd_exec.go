package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// outputCap is the agent's per-stream limit for buffered exec (11 MiB).
const outputCap = 11 * 1024 * 1024

func (a *app) execFlags() []flagSpec {
	f := []flagSpec{
		{long: "name", value: "NAME"}, // no -n short in any version
		{long: "workdir", short: 'w', value: "WORKDIR"},
		{long: "env", short: 'e', value: "ENV", multi: true},
		{long: "timeout", value: "TIMEOUT"},
		{long: "interactive", short: 'i'}, {long: "tty", short: 't'}, {long: "stream"},
	}
	if a.ver.atLeast(1, 3, 0) {
		f = append(f, flagSpec{long: "detach", short: 'd'})
	}
	return f
}

// exec handles `machine exec`: COMMAND runs as a plain host process.
func (a *app) exec(args []string) error {
	p, err := parseArgs(args, a.execFlags(), true)
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
			return usagef("invalid value '%s' for '--timeout <TIMEOUT>': %v", v, err)
		}
		if timeout <= 0 {
			return usagef("invalid value '%s' for '--timeout <TIMEOUT>': timeout must be greater than 0 (e.g., 5sec, 30s)", v)
		}
	}
	detach := p.has("detach")
	for _, other := range []string{"interactive", "tty", "stream"} {
		if detach && p.has(other) {
			return usagef("the argument '--detach' cannot be used with '--%s'", other)
		}
	}
	name := "default"
	if p.has("name") {
		name = p.get("name")
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
	workdir := p.get("workdir")
	if workdir == "" {
		workdir = m.Workdir
	}
	if workdir == "" && m.Manifest != nil {
		workdir = m.Manifest.Workdir
	}
	dir, err := guestPath(root, workdir)
	if err != nil {
		return agentErr("vm exec", err.Error())
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return agentErr("vm exec", err.Error())
	}
	// Later entries win: host env, then manifest env, record env, CLI -e.
	env := append(append([]string{}, a.env...), "SMOLVM_SIM_ROOT="+root, "SMOLVM_SIM_MACHINE="+name)
	if m.Manifest != nil {
		env = append(env, m.Manifest.Env...)
	}
	env = append(append(env, m.Env...), a.envPairs(p.all("env"))...)

	cmd := exec.Command(command[0], command[1:]...)
	cmd.Dir, cmd.Env = dir, env
	if detach {
		return a.detach(st, name, cmd)
	}
	cmd.SysProcAttr = guestAttr()
	return a.runGuest(cmd, p.has("interactive"), p.has("stream"), timeout)
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

// detach starts cmd in its own process group, records the group so that stop
// kills it, and prints the PID.
func (a *app) detach(st *store, name string, cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return agentErr("vm exec", "failed to spawn command: "+err.Error())
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	err := st.locked(func() error {
		m, err := st.get(name)
		if err != nil || m == nil {
			return err
		}
		m.GuestPGIDs = append(m.GuestPGIDs, pid)
		return st.put(m)
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, pid)
	return nil
}

// runGuest runs cmd to completion, enforcing the timeout and killing the
// guest's process group if the simulator itself is told to stop.
func (a *app) runGuest(cmd *exec.Cmd, interactive, stream bool, timeout time.Duration) error {
	if interactive {
		cmd.Stdin = a.stdin
	}
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
		return agentErr("vm exec", "failed to spawn command: "+err.Error())
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
		if a.ver.atLeast(0, 8, 1) { // v0.8.0's bare-VM path added no text
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

// guestPath maps guest path p into root. Relative paths start at "/"; a ".."
// that would climb above the guest root is rejected.
func guestPath(root, p string) (string, error) {
	depth := 0
	for _, part := range strings.Split(p, "/") {
		switch part {
		case "", ".":
		case "..":
			if depth--; depth < 0 {
				return "", fmt.Errorf("guest path escapes the machine root: %s", p)
			}
		default:
			depth++
		}
	}
	return filepath.Join(root, filepath.FromSlash(filepath.Clean("/"+p))), nil
}

// cp handles `machine cp SRC DST`; one side is MACHINE:PATH.
func (a *app) cp(args []string) error {
	var specs []flagSpec
	// --mode, --uid and --gid appeared between v1.8.0 and v1.9.3
	// (docs/smolvm.md, machine cp); the simulator, like the wrapper, takes
	// v1.9.3 as the boundary.
	if a.ver.atLeast(1, 9, 3) {
		specs = []flagSpec{{long: "mode", value: "MODE"}, {long: "uid", value: "UID"}, {long: "gid", value: "GID"}}
	}
	p, err := parseArgs(args, specs, false)
	if err != nil {
		return err
	}
	pos := append(p.pos, p.rest...)
	switch {
	case len(pos) < 2:
		return missing("<SRC> <DST>")
	case len(pos) > 2:
		return usagef("unexpected argument '%s' found", pos[2])
	}
	var mode os.FileMode
	if v := p.get("mode"); v != "" {
		n, err := strconv.ParseUint(v, 8, 32)
		if err != nil || n > 0o7777 {
			return usagef("invalid value '%s' for '--mode <MODE>': expected an octal mode", v)
		}
		mode = os.FileMode(n)
	}
	src, dst := pos[0], pos[1]
	var name, guest string
	upload := false
	if n, g, ok := strings.Cut(src, ":"); ok { // SRC is checked first
		name, guest = n, g
	} else if n, g, ok := strings.Cut(dst, ":"); ok {
		name, guest, upload = n, g, true
	} else {
		return configErr("cp", "one of SRC or DST must use machine:path syntax (e.g. myvm:/path/in/guest)")
	}
	if p.has("mode") && !upload {
		return configErr("cp", "--mode only applies to uploads")
	}
	a.call.Name = name
	if err := a.gate("cp"); err != nil {
		return err
	}
	_, st, err := a.running(name, false)
	if err != nil {
		return err
	}
	gp, err := guestPath(st.root(name), guest)
	if err != nil {
		return configErr("cp", err.Error())
	}
	if upload {
		if err := os.MkdirAll(filepath.Dir(gp), 0o755); err != nil {
			return configErr("cp", err.Error())
		}
		err = copyFile(src, gp, mode)
	} else {
		if info, statErr := os.Stat(dst); statErr == nil && info.IsDir() {
			dst = filepath.Join(dst, filepath.Base(gp))
		}
		err = copyFile(gp, dst, 0)
	}
	if err != nil {
		return configErr("cp", err.Error())
	}
	return nil
}

// copyFile copies one regular file atomically; mode 0 keeps the source mode.
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return errors.New(src + " is not a regular file")
	}
	if mode == 0 {
		mode = info.Mode().Perm()
	}
	return writeFileAtomic(dst, mode, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}
