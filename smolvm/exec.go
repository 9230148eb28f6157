package smolvm

import (
	"bytes"
	"context"
	"io"
	"time"
)

// execGrace is how much longer than its --timeout the wrapper lets an exec
// run before it cancels smolvm itself. smolvm's own client gives up 5 s
// after the timeout; this is the backstop for a smolvm that hangs.
const execGrace = 10 * time.Second

// ExecOptions are the optional parts of [Client.Exec].
type ExecOptions struct {
	// Env is added to the command's environment. Keys must be valid names.
	Env map[string]string
	// Workdir is the command's working directory, an absolute guest path.
	Workdir string
	// Timeout makes smolvm kill the command after this long (exit 124),
	// and the wrapper cancel smolvm 10 s later. Zero means no timeout
	// at all: set one.
	Timeout time.Duration
	// Stream passes --stream: output is relayed as the guest writes it
	// instead of buffered in smolvm, which caps a buffered stream at 11 MiB.
	Stream bool
	// Stdout and Stderr, when set, get every byte of the command's output
	// as smolvm relays it (as the guest writes it, with Stream), besides
	// the head and tail ExecResult keeps. Each is called from a goroutine
	// of its own until Exec returns (a guest process that keeps the output
	// open after smolvm exits can leave one call in flight a moment
	// longer). A write must not block: smolvm and the guest wait for it.
	// Its error is ignored. On a failure, smolvm's own `Error: ` line is
	// part of what Stderr gets.
	Stdout, Stderr io.Writer
}

// ExecResult is what a guest command did. Output is bounded: each stream
// keeps its first and last 32 KiB.
type ExecResult struct {
	// ExitCode is the guest command's exit code: 124 when smolvm's
	// --timeout fired, 128+N when a signal N killed it.
	ExitCode int
	// Stdout and Stderr are the head and tail of each stream, with a
	// marker line where the middle was dropped.
	Stdout, Stderr []byte
	// StdoutOmitted and StderrOmitted count the dropped bytes.
	StdoutOmitted, StderrOmitted int64
	// TimedOut is true when smolvm's --timeout ended the command.
	TimedOut bool
}

// Exec runs command in the machine: `machine exec --name NAME [-e K=V]...
// [-w DIR] [--timeout DUR] [--stream] -- COMMAND...`.
//
// A command that runs and exits non-zero is a result, not an error. The
// error is an *Error only when smolvm itself failed: it could not run, the
// context ended, or it exited with its own `Error: ` line (the machine is
// not running, not found, …). Exit code 1 is otherwise ambiguous, and this
// is how the two are told apart, as far as text can: a guest can end its
// stderr with such a line too (check [Client.Status] before trusting it),
// so the error's Message keeps only what the line means, never its text.
func (c *Client) Exec(ctx context.Context, name string, command []string, o ExecOptions) (ExecResult, error) {
	if err := ValidateName(name); err != nil {
		return ExecResult{}, err
	}
	if len(command) == 0 || command[0] == "" {
		return ExecResult{}, argErr("command", "must not be empty")
	}
	for _, a := range command {
		if err := checkNUL("command", a); err != nil {
			return ExecResult{}, err
		}
	}
	if err := checkEnv(o.Env); err != nil {
		return ExecResult{}, err
	}
	if o.Workdir != "" {
		if err := checkGuestPath("workdir", o.Workdir); err != nil {
			return ExecResult{}, err
		}
	}
	if o.Timeout < 0 {
		return ExecResult{}, argErr("timeout", "must not be negative")
	}
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout+execGrace)
		defer cancel()
	}
	argv := execArgv(name, command, o)
	start := time.Now()
	p, err := c.invoke(ctx, "machine exec", name, argv, outputs{limit: outputLimit, stdout: o.Stdout, stderr: o.Stderr}, func(p proc) error {
		if p.exitCode == 0 {
			return nil
		}
		msg, cause, own := classify(p.exitCode, p.stderr)
		if !own {
			return nil
		}
		return &Error{Op: "machine exec", Machine: name, Args: redact(argv), ExitCode: p.exitCode, Message: execMessage(msg, cause), Err: cause}
	})
	return ExecResult{
		ExitCode:      p.exitCode,
		Stdout:        p.stdout,
		Stderr:        p.stderr,
		StdoutOmitted: p.stdoutDropped,
		StderrOmitted: p.stderrDropped,
		// 124 is also an exit code a guest may choose: it is smolvm's
		// timeout only with smolvm's line, or once the timeout has passed.
		TimedOut: o.Timeout > 0 && p.exitCode == 124 &&
			(bytes.Contains(p.stderr, []byte("timed out after")) || time.Since(start) >= o.Timeout),
	}, err
}
