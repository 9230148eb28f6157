package smolvm

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Readiness polling starts fast, so a machine that becomes ready is noticed
// within a few milliseconds, and backs off for machines that take long.
const (
	readyFirstDelay = 2 * time.Millisecond
	readyFastCap    = 10 * time.Millisecond  // for the first readyFastFor
	readySlowCap    = 250 * time.Millisecond // after that
	readyFastFor    = 2 * time.Second
)

// WaitReady polls `machine exec --name NAME -- true` until it exits 0.
// smolvm's start already waits for the guest agent, so the first probe
// usually succeeds; polling is insurance against a stale "running" record.
//
// It gives up after timeout with an *Error matching [ErrNotReady] that names
// the machine and carries the last probe's message, and at once if the
// machine does not exist or smolvm rejects the call.
func (c *Client) WaitReady(ctx context.Context, name string, timeout time.Duration) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	start := time.Now()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	delay := readyFirstDelay
	for {
		res, err := c.Exec(ctx, name, []string{"true"}, ExecOptions{})
		switch {
		case err == nil && res.ExitCode == 0:
			return nil
		case errors.Is(err, ErrNotFound), errors.Is(err, ErrUsage), errors.Is(err, ErrNotInstalled), errors.Is(err, ErrInvalid):
			return err
		case err != nil:
			var e *Error
			if errors.As(err, &e) && e.Message != "" {
				last = e.Message
			}
		default:
			last = fmt.Sprintf("true exited %d", res.ExitCode)
		}
		capd := readyFastCap
		if time.Since(start) > readyFastFor {
			capd = readySlowCap
		}
		delay = min(2*delay, capd)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			if err := parent.Err(); err != nil {
				return &Error{Op: "wait ready", Machine: name, ExitCode: -1, Err: err}
			}
			msg := fmt.Sprintf("machine %s not ready after %s", name, timeout)
			if last != "" {
				msg += ": last probe: " + last
			}
			return &Error{Op: "wait ready", Machine: name, ExitCode: -1, Message: msg, Err: ErrNotReady}
		case <-t.C:
		}
	}
}
