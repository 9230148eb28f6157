package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/internal/testbin"
)

// simBin is the simulator built once by TestMain, named "smolvm", for the
// tests where the process boundary matters: guests, signals, and state
// shared by concurrent processes.
var simBin string

func TestMain(m *testing.M) {
	os.Exit(testbin.Main(m.Run, func(d *testbin.Dir) (err error) {
		simBin, err = d.Build("github.com/bot-bottle/bottleq/cmd/smolvm-sim", "smolvm")
		return err
	}))
}

// sim runs the simulator against a private state directory: in this
// process through run, or as the built binary.
type sim struct {
	t       *testing.T
	state   string
	version string
	env     []string
	bin     string // "" runs in-process
	exe     string // argv[0] in-process
}

// newSim returns an in-process simulator impersonating version.
func newSim(t *testing.T, version string, env ...string) *sim {
	t.Helper()
	return &sim{t: t, state: t.TempDir(), version: version, env: env, exe: "smolvm"}
}

// newProcSim returns a simulator that runs as a process of its own.
func newProcSim(t *testing.T, version string, env ...string) *sim {
	s := newSim(t, version, env...)
	s.bin = simBin
	return s
}

type result struct {
	code           int
	stdout, stderr string
}

func (s *sim) environ() []string {
	env := []string{"SMOLVM_SIM_STATE=" + s.state, "SMOLVM_SIM_VERSION=" + s.version}
	if s.bin != "" {
		var host []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "SMOLVM_SIM_") {
				host = append(host, kv)
			}
		}
		env = append(host, env...)
	}
	return append(env, s.env...)
}

// command returns the simulator process for args.
func (s *sim) command(args ...string) *exec.Cmd {
	cmd := exec.Command(s.bin, args...)
	cmd.Env = s.environ()
	return cmd
}

// run runs the simulator and returns its exit code and output.
func (s *sim) run(args ...string) result {
	s.t.Helper()
	var out, errb bytes.Buffer
	if s.bin == "" {
		code := run(append([]string{s.exe}, args...), s.environ(), &out, &errb)
		return result{code, out.String(), errb.String()}
	}
	cmd := s.command(args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		s.t.Errorf("running %v: %v", args, err) // not Fatal: may run off the test goroutine
		return result{code: -1}
	}
	return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

// ok runs the simulator and fails the test unless it exits 0.
func (s *sim) ok(args ...string) result {
	s.t.Helper()
	r := s.run(args...)
	if r.code != 0 {
		s.t.Fatalf("%v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

// fails runs the simulator and checks the exit code and that stderr contains want.
func (s *sim) fails(code int, want string, args ...string) result {
	s.t.Helper()
	r := s.run(args...)
	if r.code != code || !strings.Contains(r.stderr, want) {
		s.t.Fatalf("%v: got exit %d stderr %q; want exit %d and stderr containing %q", args, r.code, r.stderr, code, want)
	}
	return r
}

func (s *sim) named() bool {
	v, err := parseSemver(s.version)
	if err != nil {
		s.t.Fatal(err)
	}
	return v.atLeast(1, 0, 2)
}

// create returns dialect-correct `machine create` argv.
func (s *sim) create(name string, opts ...string) []string {
	if s.named() {
		return append([]string{"machine", "create", "--name", name}, opts...)
	}
	return append(append([]string{"machine", "create"}, opts...), name)
}

// del returns dialect-correct `machine delete -f` argv.
func (s *sim) del(name string) []string {
	if s.named() {
		return []string{"machine", "delete", "--name", name, "-f"}
	}
	return []string{"machine", "delete", "-f", name}
}

// running creates and starts a bare machine.
func (s *sim) running(name string, opts ...string) {
	s.t.Helper()
	s.ok(s.create(name, opts...)...)
	s.ok("machine", "start", "--name", name)
}

// pack packs an image and returns the .smolmachine file.
func (s *sim) pack(image string) string {
	s.t.Helper()
	out := filepath.Join(s.t.TempDir(), "p")
	s.ok("pack", "create", "--image", image, "-o", out)
	return out + ".smolmachine"
}

func (s *sim) record(name string) machine {
	s.t.Helper()
	data, err := os.ReadFile(filepath.Join(s.state, "machines", name+".json"))
	if err != nil {
		s.t.Fatal(err)
	}
	var m machine
	if err := json.Unmarshal(data, &m); err != nil {
		s.t.Fatal(err)
	}
	return m
}

func (s *sim) exists(name string) bool {
	_, err := os.Stat(filepath.Join(s.state, "machines", name+".json"))
	return err == nil
}

func (s *sim) root(name string) string { return filepath.Join(s.state, "roots", name) }

func (s *sim) calls() []callRecord {
	s.t.Helper()
	f, err := os.Open(filepath.Join(s.state, "calls.jsonl"))
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	var out []callRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var c callRecord
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			s.t.Fatalf("calls.jsonl line %q: %v", sc.Text(), err)
		}
		out = append(out, c)
	}
	return out
}

// alive reports whether pid is a live (non-zombie) process.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(fields) == 0 || fields[0] != "Z"
}

// waitGone waits (generously) for pid to die.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !alive(pid) {
			return
		}
	}
	t.Fatalf("process %d still alive", pid)
}

// readPID waits for a guest to write its pid into path.
func readPID(t *testing.T, path string) int {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		data, err := os.ReadFile(path)
		var pid int
		if err == nil {
			if _, err := fmt.Sscanf(string(data), "%d", &pid); err == nil && pid > 0 {
				return pid
			}
		}
	}
	t.Fatalf("no pid in %s", path)
	return 0
}
