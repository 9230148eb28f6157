// Package readme keeps README.md honest: it runs the commands README shows.
// `make X` must be a Makefile target (CI runs `make test`, `make fuzz` and
// `make demo`); every other line of a ```sh block runs in a scratch
// directory, with bin/ holding the real commands, against a worker that
// runs on miniredis with the smolvm simulator. A bin/enqueue line must
// succeed, and one with --artifacts-dir leave each artifact there, as it
// says; a server (bin/worker, bin/dashboard) must accept its flags and
// is stopped after a few seconds. A bin/api line starts the API on a free
// port for the curl lines after it, which must succeed against it. The
// simulator walk-through (make sim, a worker, an enqueue) is also run as a
// user would, built by the Makefile. What README says of the data
// directory, the worker's flags and the Makefile's targets must match what
// they are. Its Dependencies table must list each module go.mod requires
// directly, once, at go.mod's version where it names one.
package readme

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/internal/testbin"
	"github.com/bot-bottle/bottleq/internal/testredis"
)

var binDir string

func TestMain(m *testing.M) {
	os.Exit(testbin.Main(m.Run, func(d *testbin.Dir) error {
		binDir = filepath.Join(d.Path(), "bin")
		if err := os.Mkdir(binDir, 0o755); err != nil {
			return err
		}
		for name, pkg := range map[string]string{"worker": "worker", "enqueue": "enqueue", "dashboard": "dashboard", "api": "api", "smolvm": "smolvm-sim", "sim/smolvm": "smolvm-sim"} {
			if _, err := d.Build("github.com/bot-bottle/bottleq/cmd/"+pkg, filepath.Join("bin", name)); err != nil {
				return err
			}
		}
		return nil
	}))
}

// commands returns the lines of README's ```sh blocks, with continuation
// lines joined and comments dropped.
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
	mk, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, m := range target.FindAllStringSubmatch(string(mk), -1) {
		targets[m[1]] = true
	}
	cmds := commands(t)
	if len(cmds) < 8 {
		t.Fatalf("found only %d commands in README.md: is the parser broken?", len(cmds))
	}

	redis := testredis.Mini(t)
	scratch := t.TempDir()
	if err := os.Symlink(binDir, filepath.Join(scratch, "bin")); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	env := append(os.Environ(),
		"REDIS_URL="+redis.URL(), "SMOLVM_BIN="+filepath.Join(binDir, "smolvm"), "SMOLVM_SIM_STATE="+t.TempDir(),
		"BOTTLEQ_DATA_DIR="+dataDir, "BOTTLEQ_METRICS_ADDR=off", "BOTTLEQ_EMBEDDED_REDIS=127.0.0.1:0", "BOTTLEQ_POLL_INTERVAL=20ms")
	worker := exec.Command(filepath.Join(binDir, "worker"))
	worker.Env = env
	workerLog := &lockedBuffer{} // read on failure while the worker writes
	worker.Stdout, worker.Stderr = workerLog, workerLog
	worker.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		worker.Process.Signal(syscall.SIGTERM)
		worker.Wait()
	}()

	// apiAddr is where README's bin/api listens, once a line started it.
	var apiAddr string
	for _, line := range cmds {
		if apiAddr != "" {
			line = strings.ReplaceAll(line, "127.0.0.1:8090", apiAddr)
		}
		fields := strings.Fields(line)
		switch prog := fields[0]; {
		case strings.Contains(line, "bin/api"):
			// It serves the curl lines after it, on a free port.
			apiAddr = startAPI(t, scratch, env, line)
		case prog == "curl":
			if apiAddr == "" {
				t.Errorf("README's %q runs before any bin/api line", line)
				continue
			}
			out, code := run(t, scratch, env, line, 2*time.Minute)
			for _, w := range []struct{ sub, want string }{
				{"/events", "event: stdout\nid: "}, {"/events", `"data":"hello\n"`}, {"/events", "event: done"},
				{"/artifacts/", "X-Checksum-Sha256: "}, {"/v1/runs |", `{"id":"`},
			} {
				if strings.Contains(line, w.sub) && !strings.Contains(out, w.want) {
					t.Errorf("README's %q prints no %q:\n%s", line, w.want, out)
				}
			}
			if code != 0 {
				t.Errorf("README's %q exits %d:\n%s\nworker:\n%s", line, code, out, workerLog.String())
			}
		case prog == "make":
			for _, tgt := range fields[1:] {
				if !targets[tgt] {
					t.Errorf("README runs `make %s`, which the Makefile lacks", tgt)
				}
			}
		case strings.Contains(line, "bin/enqueue"):
			out, code := run(t, scratch, env, line, 2*time.Minute)
			if code != 0 {
				t.Errorf("README's %q exits %d:\n%s\nworker:\n%s", line, code, out, workerLog.String())
			}
			switch {
			case strings.Contains(line, "--artifacts-dir"):
				checkArtifactsDir(t, scratch, line, out)
			case strings.Contains(line, "--artifact"):
				checkArtifactPath(t, out, dataDir)
			}
		case strings.Contains(line, "bin/worker"), strings.Contains(line, "bin/dashboard"):
			// Servers: the README's own REDIS_URL is replaced by the test's.
			line = regexp.MustCompile(`REDIS_URL=\S+ `).ReplaceAllString(line, "")
			// Its fixed listen address gets a free port: a server of the same
			// kind running on this machine must not fail the test.
			line = regexp.MustCompile(`(-addr|-metrics-addr|-embedded-redis|-egress-listen) 127\.0\.0\.1:\d+`).ReplaceAllString(line, "$1 127.0.0.1:0")
			// It serves a queue of its own, so it takes none of the test's tasks.
			serverEnv := append(env, "BOTTLEQ_QUEUES=readme-idle=1")
			if out, code := run(t, scratch, serverEnv, line, 3*time.Second); code == 2 {
				t.Errorf("README's %q is rejected:\n%s", line, out)
			}
		case prog == "printf", prog == "echo":
			if out, code := run(t, scratch, env, line, 10*time.Second); code != 0 {
				t.Errorf("README's %q exits %d: %s", line, code, out)
			}
		default:
			t.Errorf("README shows %q, which no test runs", line)
		}
	}
}

// startAPI starts README's bin/api line in dir on a free port, stopped
// (and checked to exit 0) when the test ends, and returns its address.
func startAPI(t *testing.T, dir string, env []string, line string) string {
	t.Helper()
	line = regexp.MustCompile(`REDIS_URL=\S+ `).ReplaceAllString(line, "")
	line = regexp.MustCompile(` -listen \S+`).ReplaceAllString(line, "") + " -listen 127.0.0.1:0 -log-format json"
	cmd := exec.Command("sh", "-c", "exec "+line)
	cmd.Dir, cmd.Env = dir, env
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("README's %q exits with %v after SIGTERM:\n%s", line, err, log)
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Errorf("README's %q did not stop within 20s of SIGTERM", line)
		}
	})
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, l := range strings.Split(log.String(), "\n") {
			var m struct{ Message, Addr string }
			if json.Unmarshal([]byte(l), &m) == nil && m.Message == "api listening" {
				return m.Addr
			}
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("README's %q exits before it listens: %v\n%s", line, err, log)
		default:
		}
	}
	t.Fatalf("README's %q never listens:\n%s", line, log)
	return ""
}

// lockedBuffer is a bytes.Buffer that a process writes while the test
// reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// run runs line with sh in dir and returns its combined output and exit
// code; after d it is stopped (exit -1).
func run(t *testing.T, dir string, env []string, line string, d time.Duration) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", "exec "+line)
	cmd.Dir, cmd.Env = dir, env
	out, _ := cmd.CombinedOutput()
	return string(out), cmd.ProcessState.ExitCode()
}

// depRow is a row of README's Dependencies table: "| `module` [version] | why |",
// where version is vX.Y.Z or "(pseudo-version)".
var depRow = regexp.MustCompile("^\\| `([^`]+)`(?: (v\\S+|\\(pseudo-version\\)))? \\|")

func TestDependencies(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "\n## Dependencies\n")
	if !ok {
		t.Fatal("README.md has no \"## Dependencies\" section")
	}
	table, _, _ = strings.Cut(table, "\n## ")
	listed := map[string]string{} // module -> version, "" when the row names none
	for _, line := range strings.Split(table, "\n") {
		m := depRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		mod := m[1]
		if _, dup := listed[mod]; dup {
			t.Errorf("README's Dependencies table lists %s twice: merge the rows", mod)
		}
		listed[mod] = strings.TrimPrefix(m[2], "(pseudo-version)")
	}

	gomod, err := os.ReadFile(filepath.Join("..", "..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	direct := map[string]string{}
	in := false
	for _, line := range strings.Split(string(gomod), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "require (":
			in = true
			continue
		case line == ")":
			in = false
			continue
		case strings.HasPrefix(line, "require "):
			line = strings.TrimPrefix(line, "require ")
		case !in:
			continue
		}
		if f := strings.Fields(line); len(f) == 2 {
			direct[f[0]] = f[1] // "// indirect" makes more fields
		}
	}
	if len(direct) < 5 {
		t.Fatalf("found only %d direct requirements in go.mod: is the parser broken?", len(direct))
	}
	for mod, v := range direct {
		lv, ok := listed[mod]
		switch {
		case !ok:
			t.Errorf("go.mod requires %s, which README's Dependencies table lacks", mod)
		case lv != "" && lv != v:
			t.Errorf("README's Dependencies table says %s %s; go.mod requires %s", mod, lv, v)
		}
	}
	for mod := range listed {
		if _, ok := direct[mod]; !ok {
			t.Errorf("README's Dependencies table lists %s, which go.mod does not require directly", mod)
		}
	}
}
