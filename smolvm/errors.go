package smolvm

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Sentinels for the causes of an [*Error] that callers may act on. They are
// derived only inside this package, from smolvm's exit code and its own
// `Error: ` line; match them with errors.Is.
var (
	// ErrNotFound: the named machine does not exist.
	ErrNotFound = errors.New("machine not found")
	// ErrNotRunning: the machine exists but is not running (or its agent is
	// unreachable), so exec and cp cannot reach it.
	ErrNotRunning = errors.New("machine not running")
	// ErrExists: create was given a name that is taken.
	ErrExists = errors.New("machine already exists")
	// ErrUsage: smolvm rejected its argv (clap's exit 2). With the input
	// validation of this package it means the dialect is wrong.
	ErrUsage = errors.New("smolvm rejected its arguments")
	// ErrNotReady: [Client.WaitReady] gave up before exec worked.
	ErrNotReady = errors.New("machine not ready")
	// ErrNotInstalled: the smolvm binary was not found.
	ErrNotInstalled = errors.New("smolvm binary not found")
	// ErrNoSuchFile: smolvm reported that a file does not exist, such as
	// the guest file of a `machine cp` download.
	ErrNoSuchFile = errors.New("no such file or directory")
	// ErrNoSpace: smolvm reported a full file system (the operating
	// system's "no space left on device"), such as the host directory
	// `pack create` or a `machine cp` download writes into.
	ErrNoSpace = errors.New("no space left on device")
	// ErrInvalid: input refused before any process started. It does not
	// come inside an [*Error]: see [*ArgError] and [*UnsupportedError].
	ErrInvalid = errors.New("invalid argument")
	// ErrUnsupported: an option needs a newer smolvm release than the
	// client speaks to; see [*UnsupportedError]. It always comes with
	// [ErrInvalid] too, since no process was started.
	ErrUnsupported = errors.New("not supported by this smolvm release")
)

// Error is a failure of smolvm itself: it could not be started, it exited
// non-zero (exec: with its own `Error: ` line), or the caller's context ended
// while it ran. A guest command that exits non-zero is not an Error; it is an
// [ExecResult].
type Error struct {
	// Op is the subcommand, such as "machine start" or "pack create".
	Op string
	// Machine is the machine the call was about, if any.
	Machine string
	// Args is the argv after the binary, with every env value redacted.
	Args []string
	// ExitCode is smolvm's exit code, or -1 if it did not exit by itself.
	ExitCode int
	// Message is smolvm's own error text (its last `Error: ` line without
	// the prefix, or clap's `error:` line), else a bounded tail of stderr.
	Message string
	// Err is the cause: one of the sentinels above, a context error, or the
	// error from starting the process. It may be nil for an unclassified
	// non-zero exit.
	Err error
}

// Error returns a one-line description without env values.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("smolvm ")
	b.WriteString(e.Op)
	if e.Machine != "" {
		b.WriteString(" ")
		b.WriteString(e.Machine)
	}
	if e.ExitCode >= 0 {
		fmt.Fprintf(&b, ": exit %d", e.ExitCode)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	// A sentinel cause repeats the message; a process or context error
	// says what the message cannot.
	if e.Err != nil && (e.Message == "" || e.ExitCode < 0) {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// ArgError is input refused before any process started. It names the field
// and never includes an env value.
type ArgError struct {
	// Field names the offending input, such as "name" or "env".
	Field string
	// Reason says what is wrong with it.
	Reason string
}

// Error returns "field: reason".
func (e *ArgError) Error() string { return e.Field + ": " + e.Reason }

// Is makes every ArgError match [ErrInvalid].
func (e *ArgError) Is(target error) bool { return target == ErrInvalid }

// UnsupportedError is an option that the client's smolvm release would
// ignore or reject, refused before any process started. Callers that have a
// fallback ask [Client.Supports] first; the rest match this error with
// errors.Is(err, ErrUnsupported) (or ErrInvalid, which it matches too).
type UnsupportedError struct {
	// Field names the option, such as "labels" or "dns".
	Field string
	// Feature is what the option needs.
	Feature Feature
	// Version is the client's smolvm release.
	Version Version
}

// Error returns "field: smolvm X does not support FEATURE (needs Y)".
func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("%s: smolvm %s does not support %s (needs %s)", e.Field, e.Version, e.Feature, e.Feature.Since())
}

// Is makes every UnsupportedError match [ErrUnsupported] and [ErrInvalid].
func (e *UnsupportedError) Is(target error) bool {
	return target == ErrUnsupported || target == ErrInvalid
}

func argErr(field, format string, a ...any) error {
	return &ArgError{Field: field, Reason: fmt.Sprintf(format, a...)}
}

var (
	reVMNotFound      = regexp.MustCompile(`(?i)\bvm not found: |\b(vm|machine) '[^']*' not found\b`)
	reNotRunning      = regexp.MustCompile(`(?i)\bis not running\b|\bnot running\. Use\b`)
	reAlreadyExists   = regexp.MustCompile(`(?i)\balready exists\b`)
	reOutputTooLarge  = regexp.MustCompile(`(?i)\boutput exceeded\b`)
	reNoSuchFile      = regexp.MustCompile(`(?i)\bno such file or directory\b`)
	reNoSpace         = regexp.MustCompile(`(?i)\bno space left on device\b`)
	errOutputTooLarge = errors.New("command output exceeded smolvm's buffer; use streaming exec")
)

// smolvmPrefixes start every error message smolvm's CLI reports, after its
// "Error: " (docs/smolvm.md, Exit codes and errors).
var smolvmPrefixes = []string{"vm not found: ", "config operation failed: ", "agent operation failed: ",
	"kvm not available", "kvm permission denied", "invalid vm state: "}

// classify reads smolvm's own stderr after a non-zero exit. It is the only
// place in bottleq that interprets smolvm's text. It returns the message to
// report, the cause, and whether the text is smolvm's own failure (as opposed
// to a guest command's output, which exec passes through).
//
// smolvm prints `Error: <message>` as the last line on its failures (exit 1)
// and clap prints `error: <message>`, a usage line and a --help hint on argv
// errors (exit 2). A guest may print anything, and exec relays its stderr
// before smolvm's own line, so "own" is strict: exit 1 with a last line that
// is one of smolvm's error shapes, or exit 2 with clap's whole shape.
func classify(exitCode int, stderr []byte) (msg string, cause error, own bool) {
	if exitCode == 2 && strings.HasPrefix(firstLine(stderr), "error: ") &&
		bytes.Contains(stderr, []byte("\nUsage: ")) && bytes.Contains(stderr, []byte("try '--help'")) {
		return strings.TrimPrefix(firstLine(stderr), "error: "), ErrUsage, true
	}
	last := lastLine(stderr)
	if !strings.HasPrefix(last, "Error: ") {
		return tail(stderr, 512), nil, false
	}
	msg = strings.TrimPrefix(last, "Error: ")
	own = exitCode == 1 && slices.ContainsFunc(smolvmPrefixes, func(p string) bool { return strings.HasPrefix(msg, p) })
	switch {
	case reVMNotFound.MatchString(msg):
		cause = ErrNotFound
	case reNotRunning.MatchString(msg):
		cause = ErrNotRunning
	case reAlreadyExists.MatchString(msg):
		cause = ErrExists
	case reOutputTooLarge.MatchString(msg):
		cause = errOutputTooLarge
	case reNoSuchFile.MatchString(msg):
		cause = ErrNoSuchFile
	case reNoSpace.MatchString(msg):
		cause = ErrNoSpace
	}
	return msg, cause, own
}

// execMessage is the Message of an exec *Error for smolvm's own line msg
// and the cause classify read in it. exec relays the guest's stderr, and a
// guest can end it with a line of smolvm's shape, holding anything it
// likes: so only the cause, or the fixed start of smolvm's message, is
// kept, never the rest of the line.
func execMessage(msg string, cause error) string {
	if cause != nil {
		return cause.Error()
	}
	for _, p := range smolvmPrefixes {
		if strings.HasPrefix(msg, p) {
			return strings.TrimSuffix(p, ": ") + " (the rest of smolvm's line is not kept: exec relays the guest's stderr)"
		}
	}
	return ""
}

func lastLine(b []byte) string {
	s := strings.TrimRight(string(b), " \t\r\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}

func firstLine(b []byte) string {
	s := string(b)
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		// smolvm ≥ 1.7.0 run under another file name prints a note first.
		if line == "" || strings.HasPrefix(line, "note: ") {
			continue
		}
		return line
	}
	return ""
}

func tail(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return strings.ReplaceAll(s, "\n", " | ")
}
