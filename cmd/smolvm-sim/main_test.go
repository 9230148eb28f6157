package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// simBin is the simulator built once by TestMain, named "smolvm".
var simBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "smolvm-sim-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	simBin = filepath.Join(dir, "smolvm")
	build := exec.Command("go", "build", "-o", simBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building smolvm-sim:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sim runs the simulator binary against a private state directory.
type sim struct {
	t       *testing.T
	bin     string
	state   string
	version string
	env     []string
}

func newSim(t *testing.T, version string, env ...string) *sim {
	t.Helper()
	return &sim{t: t, bin: simBin, state: t.TempDir(), version: version, env: env}
}

type result struct {
	code           int
	stdout, stderr string
}

func (s *sim) environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SMOLVM_SIM_") {
			env = append(env, kv)
		}
	}
	env = append(env, "SMOLVM_SIM_STATE="+s.state, "SMOLVM_SIM_VERSION="+s.version)
	return append(env, s.env...)
}

func (s *sim) command(stdin io.Reader, args ...string) *exec.Cmd {
	cmd := exec.Command(s.bin, args...)
	cmd.Env = s.environ()
	cmd.Stdin = stdin
	return cmd
}

// runIn runs the simulator with stdin and returns its exit code and output.
func (s *sim) runIn(stdin io.Reader, args ...string) result {
	s.t.Helper()
	cmd := s.command(stdin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		s.t.Errorf("running %v: %v", args, err) // not Fatal: may run off the test goroutine
		return result{code: -1}
	}
	return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

func (s *sim) run(args ...string) result {
	s.t.Helper()
	return s.runIn(nil, args...)
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
func (s *sim) running(name string) {
	s.t.Helper()
	s.ok(s.create(name)...)
	s.ok("machine", "start", "--name", name)
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
