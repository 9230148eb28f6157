package cliflag

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func newFS() (*flag.FlagSet, *int, *time.Duration) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	n := fs.Int("n", 1, "a number")
	d := fs.Duration("d", time.Second, "a duration")
	return fs, n, d
}

var envs = []Env{{"n", "X_N"}, {"d", "X_D"}}

func TestParse(t *testing.T) {
	t.Parallel()
	getenv := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		n      int
		d      time.Duration
		origin string // origin of -n
		err    string
	}{
		{"defaults", nil, nil, 1, time.Second, "-n", ""},
		{"env fills", nil, map[string]string{"X_N": "5", "X_D": "2s"}, 5, 2 * time.Second, "X_N", ""},
		{"flag beats env", []string{"-n", "7"}, map[string]string{"X_N": "5"}, 7, time.Second, "-n", ""},
		{"bad env names the variable", nil, map[string]string{"X_D": "soon"}, 0, 0, "", "X_D"},
		{"stray argument", []string{"extra"}, nil, 0, 0, "", "unexpected argument"},
		{"bad flag", []string{"-n", "x"}, nil, 0, 0, "", "-n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs, n, d := newFS()
			origin, err := Parse(fs, tt.args, envs, getenv(tt.env), "usage", &bytes.Buffer{})
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err = %v, want one line naming %s", err, tt.err)
				}
				return
			}
			if err != nil || *n != tt.n || *d != tt.d || origin["n"] != tt.origin {
				t.Errorf("n=%d d=%v origin=%q err=%v", *n, *d, origin["n"], err)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	fs, _, _ := newFS()
	var out bytes.Buffer
	_, err := Parse(fs, []string{"-h"}, envs, func(string) string { return "" }, "Usage: x", &out)
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "-n [X_N]") || !strings.HasPrefix(out.String(), "Usage: x") {
		t.Errorf("err = %v, usage:\n%s", err, out.String())
	}
}

// TestUsageDefaults: a default is printed after the help, once; an empty
// one is not, so a help that says what empty means reads once.
func TestUsageDefaults(t *testing.T) {
	t.Parallel()
	fs, _, _ := newFS()
	fs.String("host", "", "this host's name (default: the hostname)")
	var out bytes.Buffer
	usage(&out, "Usage: x", fs, envs)
	for _, want := range []string{
		"  -n [X_N]\n    \ta number (default \"1\")\n",
		"  -d [X_D]\n    \ta duration (default \"1s\")\n",
		"  -host\n    \tthis host's name (default: the hostname)\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), `(default "")`) {
		t.Errorf("usage prints an empty default:\n%s", out.String())
	}
}

func TestLogger(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	log, err := Logger("auto", "info", &out)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug().Msg("hidden")
	log.Info().Str("vm", "bq-1").Msg("shown")
	var line struct{ Time string }
	json.Unmarshal([]byte(strings.TrimSpace(out.String())), &line)
	if ts, err := time.Parse(time.RFC3339Nano, line.Time); err != nil || ts.Nanosecond() == 0 && !strings.Contains(line.Time, ".") {
		t.Errorf("time %q should be RFC 3339 with sub-second digits: %v", line.Time, err)
	}
	if s := out.String(); strings.Contains(s, "hidden") || !strings.Contains(s, `"vm":"bq-1"`) {
		t.Errorf("a buffer is no terminal: want JSON at info level, got %q", s)
	}
	for _, bad := range [][2]string{{"xml", "info"}, {"json", "loud"}, {"json", ""}} {
		if _, err := Logger(bad[0], bad[1], &out); err == nil {
			t.Errorf("Logger(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if code := ExitCode(&out, "x", flag.ErrHelp); code != 0 || out.Len() != 0 {
		t.Errorf("-h: code %d, printed %q", code, out.String())
	}
	if code := ExitCode(&out, "x", errors.New("-n: bad")); code != 2 || out.String() != "x: -n: bad\n" {
		t.Errorf("bad flag: code %d, printed %q", code, out.String())
	}
}
