package main

import (
	"bytes"
	"errors"
	"flag"
	"regexp"
	"strings"
	"testing"
)

// usage returns what -h prints, split into the help of each flag by name.
func usage(t *testing.T) (string, map[string]string) {
	t.Helper()
	var out bytes.Buffer
	if _, err := parseFlags([]string{"-h"}, env(nil), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	help := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^  -(\S+).*\n    \t(.*)$`).FindAllStringSubmatch(out.String(), -1) {
		help[m[1]] = m[2]
	}
	if len(help) < len(envFallbacks) {
		t.Fatalf("found help for %d flags in -h's output, want %d:\n%s", len(help), len(envFallbacks), out.String())
	}
	return out.String(), help
}

// TestHelpStatesDefaultsOnce: a flag whose help says what its default is
// ("-host ... (default: the hostname)") does not get `(default "")` after
// it; a flag with a default value shows it once.
func TestHelpStatesDefaultsOnce(t *testing.T) {
	t.Parallel()
	_, help := usage(t)
	for name, h := range help {
		if n := strings.Count(h, "(default"); n > 1 || strings.Contains(h, `(default "")`) {
			t.Errorf("-%s's help gives its default %d times: %s", name, n, h)
		}
	}
	if got, want := help["host"], "this host's name in results (default: the hostname)"; got != want {
		t.Errorf("-host's help = %q, want %q", got, want)
	}
	if got := help["concurrency"]; !strings.HasSuffix(got, `(default "4")`) {
		t.Errorf("-concurrency's help = %q, want it to end with its default", got)
	}
}

// TestHelpRedisURL: -redis's help shows a URL with a user, and such a URL
// is taken, as is one with only a password.
func TestHelpRedisURL(t *testing.T) {
	t.Parallel()
	_, help := usage(t)
	if !strings.Contains(help["redis"], "redis://[[USER]:PASSWORD@]HOST:PORT[/DB]") {
		t.Errorf("-redis's help = %q, want the URL's user part", help["redis"])
	}
	for _, u := range []string{"redis://app:pw@127.0.0.1:6380/2", "redis://:pw@127.0.0.1:6380", "redis://127.0.0.1:6380"} {
		if c, err := parseFlags([]string{"-redis", u}, env(nil), &bytes.Buffer{}); err != nil || c.redisURL != u {
			t.Errorf("-redis %s: %v", u, err)
		}
	}
}

// TestLogFlagErrors: a bad -log-level or -log-format is reported under
// that flag alone, or under the variable it came from.
func TestLogFlagErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-log-level", "loud"}, nil, `-log-level: "loud" is not one of debug, info, warn, error`},
		{nil, map[string]string{"BOTTLEQ_LOG_LEVEL": "loud"}, `BOTTLEQ_LOG_LEVEL: "loud" is not one of`},
		{[]string{"-log-format", "xml"}, nil, `-log-format: "xml" is not one of auto, json, console`},
		{nil, map[string]string{"BOTTLEQ_LOG_FORMAT": "xml"}, `BOTTLEQ_LOG_FORMAT: "xml" is not one of`},
		{[]string{"-log-format", "xml", "-log-level", "loud"}, nil, `-log-format: "xml"`},
	} {
		_, err := parseFlags(tt.args, env(tt.env), &bytes.Buffer{})
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("parseFlags(%q, %v) = %v, want an error starting %q", tt.args, tt.env, err, tt.want)
		}
	}
}
