// Package readme keeps README.md honest: every command it shows must still
// parse. `make X` must be a Makefile target; each bin/worker, bin/enqueue
// and bin/dashboard line is run against the real binary, which must not
// reject its flags (exit 2). What the commands do is exercised elsewhere:
// `make demo` and `make test` run in CI, and internal/e2e runs enqueue
// --wait through a worker.
package readme

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/internal/testbin"
)

var bins = map[string]string{}

func TestMain(m *testing.M) {
	os.Exit(testbin.Main(m.Run, func(d *testbin.Dir) error {
		for _, name := range []string{"worker", "enqueue", "dashboard"} {
			p, err := d.Build("github.com/bot-bottle/bottleq/cmd/"+name, name)
			if err != nil {
				return err
			}
			bins[name] = p
		}
		return nil
	}))
}

// commands returns the shell lines of README's ```sh blocks, with
// continuation lines joined and comments dropped.
func commands(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	in, cont := false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```sh"):
			in = true
			continue
		case strings.HasPrefix(line, "```"):
			in = false
			continue
		case !in:
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if strings.HasSuffix(line, "\\") {
			cont += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		if line = strings.TrimSpace(cont + line); line != "" {
			out = append(out, line)
		}
		cont = ""
	}
	return out
}

var target = regexp.MustCompile(`(?m)^([a-z][a-z-]*):`)

func TestReadmeCommands(t *testing.T) {
	t.Parallel()
	mk, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, m := range target.FindAllStringSubmatch(string(mk), -1) {
		targets[m[1]] = true
	}
	cmds := commands(t)
	if len(cmds) < 5 {
		t.Fatalf("found only %d commands in README.md: is the parser broken?", len(cmds))
	}
	for _, line := range cmds {
		fields := strings.Fields(line)
		// Leading VAR=value assignments.
		var env []string
		for len(fields) > 0 && strings.Contains(fields[0], "=") && !strings.HasPrefix(fields[0], "-") {
			env = append(env, fields[0])
			fields = fields[1:]
		}
		switch prog := fields[0]; {
		case prog == "make":
			for _, tgt := range fields[1:] {
				if !targets[tgt] {
					t.Errorf("README runs `make %s`, which the Makefile lacks", tgt)
				}
			}
		case strings.HasPrefix(prog, "bin/"):
			name := strings.TrimPrefix(prog, "bin/")
			bin, ok := bins[name]
			if !ok {
				t.Errorf("README runs %s, which no test builds", prog)
				continue
			}
			if strings.Contains(line, "[") {
				continue // a synopsis, not a command
			}
			checkFlags(t, bin, env, fields[1:], line)
		case prog == "go", prog == "docker", prog == "docker-compose":
			// go run/test lines and compose are covered by CI and composecheck.
		default:
			t.Errorf("README shows %q, which no test checks", line)
		}
	}
}

// checkFlags runs the binary with the README's arguments, pointed at a
// Redis that is not there, and fails if it rejects them as usage (exit 2).
// A command that would serve forever (the dashboard) is stopped after 3 s;
// flags are parsed long before.
func checkFlags(t *testing.T, bin string, env, args []string, line string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "REDIS_URL=redis://127.0.0.1:1", "SMOLVM_BIN=/nonexistent/smolvm",
		"BOTTLEQ_DATA_DIR="+t.TempDir(), "BOTTLEQ_DASHBOARD_ADDR=127.0.0.1:0", "BOTTLEQ_METRICS_ADDR=off")
	for _, e := range env {
		if !strings.HasPrefix(e, "REDIS_URL=") { // never dial the README's Redis
			cmd.Env = append(cmd.Env, e)
		}
	}
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() == 2 {
		t.Errorf("README's %q is rejected:\n%s", line, out)
	}
}
