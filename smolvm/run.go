package smolvm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// DefaultKillGrace is how long a cancelled smolvm process gets between
// SIGTERM and SIGKILL when [Config.KillGrace] is zero. smolvm stops the VM
// it started on SIGTERM, which takes a moment.
const DefaultKillGrace = 10 * time.Second

// proc is the outcome of one smolvm process.
type proc struct {
	exitCode       int // -1 when the process did not exit by itself
	stdout, stderr []byte
	stdoutDropped  int64
	stderrDropped  int64
}

// runFunc starts smolvm with argv and waits for it, keeping limit bytes of
// each output stream. A non-zero exit is not an error; an error means the
// process could not start or did not end by itself (the context ended).
type runFunc func(ctx context.Context, argv []string, limit int) (proc, error)

// processRunner returns the one function in bottleq that starts processes.
//
// smolvm runs in a process group of its own. When ctx ends the group gets
// SIGTERM (smolvm stops what it started, and exec's guest command dies with
// it); after grace os/exec kills the leader and stops waiting for its
// output, and the whole group gets SIGKILL. On Linux the process also gets
// SIGTERM if the worker dies first (see procAttr).
func processRunner(bin string, env []string, grace time.Duration) runFunc {
	return func(ctx context.Context, argv []string, limit int) (proc, error) {
		stdout, stderr := newCapture(limit), newCapture(limit)
		cmd := exec.CommandContext(ctx, bin, argv...)
		if env != nil {
			cmd.Env = append(os.Environ(), env...)
		}
		cmd.Stdout, cmd.Stderr = stdout, stderr // stdin stays /dev/null
		cmd.SysProcAttr = procAttr()
		cmd.Cancel = func() error { return signalGroup(cmd.Process, syscall.SIGTERM) }
		cmd.WaitDelay = grace

		err := cmd.Run()
		var p proc
		p.stdout, p.stdoutDropped = stdout.bytes()
		p.stderr, p.stderrDropped = stderr.bytes()
		p.exitCode = -1
		if cmd.ProcessState != nil && cmd.ProcessState.Exited() {
			p.exitCode = cmd.ProcessState.ExitCode()
		}
		// A smolvm that finished its work before ctx ended reports that.
		// Otherwise ctx's end is the outcome (its exit code is then just the
		// answer to our SIGTERM), and whatever of the group survived the
		// polite signal gets SIGKILL.
		if ctx.Err() != nil && p.exitCode != 0 {
			if cmd.Process != nil {
				_ = signalGroup(cmd.Process, syscall.SIGKILL)
			}
			return p, ctx.Err()
		}
		var exitErr *exec.ExitError
		switch {
		case err == nil, errors.As(err, &exitErr) && p.exitCode >= 0:
			return p, nil
		case errors.Is(err, exec.ErrWaitDelay):
			// smolvm exited but something it started kept its output open.
			return p, nil
		case errors.Is(err, exec.ErrNotFound), errors.Is(err, os.ErrNotExist):
			return p, fmt.Errorf("%w: %w", ErrNotInstalled, err)
		}
		return p, err
	}
}

func signalGroup(p *os.Process, sig syscall.Signal) error {
	if p == nil {
		return nil
	}
	err := syscall.Kill(-p.Pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}
