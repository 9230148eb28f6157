package smolvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// defaultKillGrace is how long a cancelled smolvm process gets between
// SIGTERM and SIGKILL when [Config.KillGrace] is zero. smolvm stops the VM
// it started on SIGTERM, which takes a moment.
const defaultKillGrace = 10 * time.Second

// proc is the outcome of one smolvm process.
type proc struct {
	exitCode       int // -1 when the process did not exit by itself
	stdout, stderr []byte
	stdoutDropped  int64
	stderrDropped  int64
}

// outputs says what becomes of a process's output: limit bytes of each
// stream are kept (see capture), and stdout and stderr, when set, get
// every byte as well, as it comes.
type outputs struct {
	limit          int
	stdout, stderr io.Writer
}

// runFunc starts smolvm with argv and waits for it, keeping and passing on
// its output as o says. A non-zero exit is not an error; an error means
// the process could not start or did not end by itself (the context ended).
type runFunc func(ctx context.Context, argv []string, o outputs) (proc, error)

// processRunner returns the one function in bottleq that starts processes.
//
// smolvm runs in a process group of its own. When ctx ends the group gets
// SIGTERM (smolvm stops what it started, and exec's guest command dies with
// it); after grace os/exec kills the leader and stops waiting for its
// output, and the whole group gets SIGKILL. On Linux the process also gets
// SIGTERM if the worker dies first (see procAttr).
func processRunner(bin string, env []string, grace time.Duration) runFunc {
	return func(ctx context.Context, argv []string, o outputs) (proc, error) {
		stdout, stderr := newCapture(o.limit), newCapture(o.limit)
		cmd := exec.CommandContext(ctx, bin, argv...)
		if env != nil {
			cmd.Env = append(os.Environ(), env...)
		}
		cmd.Stdout, cmd.Stderr = tee(stdout, o.stdout), tee(stderr, o.stderr) // stdin stays /dev/null
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

// tee returns w, or a writer that writes to w and then to also. also's
// errors are ignored: a reader of the output that falls behind or fails
// must not stop the copy, which would leave the process blocked on a full
// pipe.
func tee(w *capture, also io.Writer) io.Writer {
	if also == nil {
		return w
	}
	return &teeWriter{w: w, also: also}
}

type teeWriter struct {
	w    *capture
	also io.Writer
}

func (t *teeWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	_, _ = t.also.Write(p)
	return n, err
}
