// Package cliflag is how bottleq's long-running commands read their
// configuration: flags, each with an environment variable that sets it when
// the flag is not given, and the zerolog logger every command builds the
// same way. It exists so that the worker and the dashboard cannot drift
// apart in how an operator configures them.
package cliflag

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// Env names the environment variable behind a flag: {flag without the
// dash, variable}.
type Env [2]string

// Flag is the flag's name.
func (e Env) Flag() string { return e[0] }

// Var is the variable's name.
func (e Env) Var() string { return e[1] }

// Parse parses args into fs, then sets every flag that was not given from
// its environment variable, if that is set. A flag always beats its
// variable. It returns where each flag with a variable got its value ("-flag"
// or the variable's name), for error messages. A bad variable's error names
// the variable; -h prints usage (head, then the flags with their variables)
// to w and returns flag.ErrHelp. Unless fs has a flag of that name, Parse
// adds -version, which prints [VersionLine] of fs's name to w and returns
// [ErrVersion].
func Parse(fs *flag.FlagSet, args []string, envs []Env, getenv func(string) string, head string, w io.Writer) (origin map[string]string, err error) {
	fs.SetOutput(io.Discard) // errors are the caller's one line; usage only on -h
	fs.Usage = func() {}
	var version *bool
	if fs.Lookup("version") == nil {
		version = fs.Bool("version", false, "print the version and exit")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(w, head, fs, envs)
		}
		return nil, err
	}
	if version != nil && *version {
		fmt.Fprintln(w, VersionLine(fs.Name()))
		return nil, ErrVersion
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	origin = map[string]string{}
	for _, e := range envs {
		origin[e.Flag()] = "-" + e.Flag()
		v := getenv(e.Var())
		if given[e.Flag()] || v == "" {
			continue
		}
		origin[e.Flag()] = e.Var()
		if err := fs.Set(e.Flag(), v); err != nil {
			// The value is not quoted: a variable may hold a secret.
			return nil, fmt.Errorf("%s: not a valid -%s value: %w", e.Var(), e.Flag(), err)
		}
	}
	return origin, nil
}

// ExitCode is the exit code of a command whose flags failed to parse with
// err: 0 after -h or -version (Parse printed the usage or the version),
// else 2, with err on one line after the command's name.
func ExitCode(stderr io.Writer, command string, err error) int {
	if errors.Is(err, flag.ErrHelp) || errors.Is(err, ErrVersion) {
		return 0
	}
	fmt.Fprintf(stderr, "%s: %v\n", command, err)
	return 2
}

// usage prints head, then each flag with its variable and default. An
// empty default is not printed: such a flag's help says what empty means,
// as "(default: the hostname)" does.
func usage(w io.Writer, head string, fs *flag.FlagSet, envs []Env) {
	fmt.Fprintf(w, "%s\n\nFlags (environment fallback in brackets):\n", head)
	fs.VisitAll(func(f *flag.Flag) {
		env := ""
		for _, e := range envs {
			if e.Flag() == f.Name {
				env = " [" + e.Var() + "]"
			}
		}
		def := ""
		if f.DefValue != "" {
			def = fmt.Sprintf(" (default %q)", f.DefValue)
		}
		fmt.Fprintf(w, "  -%s%s\n    \t%s%s\n", f.Name, env, f.Usage, def)
	})
}

// Logger returns a zerolog logger writing to w: JSON lines, or console
// output for format "console", or for "auto" when w is a terminal. Times
// carry milliseconds, so latencies can be read from the log.
func Logger(format, level string, w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Logger{}, fmt.Errorf("%q is not one of debug, info, warn, error", level)
	}
	switch format {
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	case "auto":
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
		}
	case "json":
	default:
		return zerolog.Logger{}, fmt.Errorf("%q is not one of auto, json, console", format)
	}
	// Not Timestamp(): its format is a zerolog global.
	stamp := zerolog.HookFunc(func(e *zerolog.Event, _ zerolog.Level, _ string) {
		e.Str(zerolog.TimestampFieldName, time.Now().UTC().Format(time.RFC3339Nano))
	})
	return zerolog.New(w).Level(lvl).Hook(stamp), nil
}
