package main

import (
	"errors"
	"fmt"
	"strconv"
)

// usageError is a clap-style parse error: "error: ..." and exit 2.
type usageError string

// Error returns the message without the "error: " prefix.
func (e usageError) Error() string { return string(e) }

func usagef(format string, args ...any) error { return usageError(fmt.Sprintf(format, args...)) }

// notSimulated refuses, as a parse error, a form smolvm accepts but
// bottleq never sends.
func notSimulated(what string) error {
	return usagef("smolvm-sim does not simulate %s: bottleq never sends it", what)
}

// faultError is an injected failure with its own exit code.
type faultError struct {
	code int
	msg  string
}

// Error returns the injected message.
func (e *faultError) Error() string { return e.msg }

// exitStatus ends the invocation with a code and prints nothing more (guest exit codes).
type exitStatus int

// Error describes the code; it is never printed.
func (e exitStatus) Error() string { return "exit status " + strconv.Itoa(int(e)) }

var errHelp = errors.New("help requested")

// The shapes of smolvm's own errors, printed as "Error: ..." with exit 1.

func errNotFound(name string) error { return fmt.Errorf("vm not found: %s", name) }

func configErr(op, reason string) error {
	return fmt.Errorf("config operation failed: %s: %s", op, reason)
}

func agentErr(op, reason string) error {
	return fmt.Errorf("agent operation failed: %s: %s", op, reason)
}

func errNotRunning(name string) error {
	return agentErr("connect", fmt.Sprintf("machine '%s' is not running. Use 'smolvm machine start --name %s' first.", name, name))
}
