package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseFaults(t *testing.T) {
	t.Parallel()
	rules, err := parseFaults("create:2:1; start:3+:7:agent operation failed: x: y ;exec:p0.25:9;*:1:4")
	if err != nil {
		t.Fatal(err)
	}
	want := []faultRule{
		{op: "create", nth: 2, exit: 1},
		{op: "start", nth: 3, orLater: true, exit: 7, msg: "agent operation failed: x: y"},
		{op: "exec", prob: 0.25, isProb: true, exit: 9},
		{op: "*", nth: 1, exit: 4},
	}
	if !reflect.DeepEqual(rules, want) {
		t.Fatalf("got %+v\nwant %+v", rules, want)
	}
	if !rules[0].fires(2, nil, 0) || rules[0].fires(3, nil, 0) || rules[1].fires(2, nil, 1) || !rules[1].fires(9, nil, 1) {
		t.Error("N / N+ rules fire on the wrong calls")
	}
	for _, bad := range []string{"create:2", "nope:1:1", "create:0:1", "create:x:1", "create:p2:1", "create:1:256"} {
		if _, err := parseFaults(bad); err == nil {
			t.Errorf("parseFaults(%q) succeeded", bad)
		}
	}
}

func TestFaultNth(t *testing.T) {
	t.Parallel()
	s := newSim(t, "1.9.3", "SMOLVM_SIM_FAULTS=create:2:1")
	s.ok(s.create("a")...)
	if r := s.run(s.create("b")...); r.code != 1 || r.stderr != "Error: agent operation failed: injected fault (create call 2)\n" {
		t.Errorf("2nd create: exit %d stderr %q", r.code, r.stderr)
	}
	if s.exists("b") {
		t.Error("a faulted create changed state")
	}
	s.ok(s.create("b")...)
	var faults []string
	for _, c := range s.calls() {
		if c.Fault {
			faults = append(faults, c.Op+" "+c.Name)
		}
	}
	if len(faults) != 1 || faults[0] != "machine create b" {
		t.Errorf("faulted calls in the log: %v", faults)
	}
}

func TestFaultFromNthWithMessage(t *testing.T) {
	t.Parallel()
	s := newSim(t, "1.9.3", "SMOLVM_SIM_FAULTS=start:2+:7:agent operation failed: start machine: kvm not available: nope")
	s.running("a")
	s.ok(s.create("b")...)
	for i := 0; i < 3; i++ {
		s.fails(7, "Error: agent operation failed: start machine: kvm not available: nope\n", "machine", "start", "--name", "b")
	}
	if s.record("b").State != stateCreated {
		t.Error("faulted start changed state")
	}
}

func TestFaultExecBeforeGuest(t *testing.T) {
	t.Parallel()
	s := newProcSim(t, "1.9.3", "SMOLVM_SIM_FAULTS=exec:1:1")
	s.running("m")
	s.fails(1, "injected fault (exec call 1)", "machine", "exec", "--name", "m", "--", "touch", "ran")
	if _, err := os.Stat(filepath.Join(s.root("m"), "ran")); !os.IsNotExist(err) {
		t.Error("the guest ran despite the fault")
	}
	s.ok("machine", "exec", "--name", "m", "--", "touch", "ran")
}

func TestFaultPackKinds(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "p")
	s := newSim(t, "1.9.3", "SMOLVM_SIM_FAULTS=pack-vm:1+:3")
	s.ok("pack", "create", "--image", "alpine", "-o", out)
	s.running("m")
	s.ok("machine", "stop", "--name", "m")
	s.fails(3, "injected fault (pack-vm call 1)", "pack", "create", "--from-vm", "m", "-o", out+"vm")

	s = newSim(t, "1.9.3", "SMOLVM_SIM_FAULTS=pack:1:4")
	s.fails(4, "Error: ", "pack", "create", "--image", "alpine", "-o", out+"x")
	if _, err := os.Stat(out + "x"); !os.IsNotExist(err) {
		t.Error("faulted pack wrote its output")
	}

	s = newSim(t, "1.9.3", "SMOLVM_SIM_FAULTS=*:2:5")
	s.ok("machine", "ls", "--json")
	s.fails(5, "Error: ", "machine", "status", "--name", "x", "--json")
	s.fails(1, "machine 'x' not found", "machine", "status", "--name", "x", "--json")
}

func TestFaultProbability(t *testing.T) {
	t.Parallel()
	pattern := func(env ...string) string {
		s := newSim(t, "1.9.3", env...)
		var b strings.Builder
		for i := 0; i < 20; i++ {
			fmt.Fprint(&b, s.run("machine", "ls", "--json").code)
		}
		return b.String()
	}
	if got := pattern("SMOLVM_SIM_FAULTS=ls:p1:9"); got != strings.Repeat("9", 20) {
		t.Errorf("p1: %s", got)
	}
	if got := pattern("SMOLVM_SIM_FAULTS=ls:p0:9"); got != strings.Repeat("0", 20) {
		t.Errorf("p0: %s", got)
	}
	a := pattern("SMOLVM_SIM_FAULTS=ls:p0.5:9", "SMOLVM_SIM_SEED=42")
	b := pattern("SMOLVM_SIM_FAULTS=ls:p0.5:9", "SMOLVM_SIM_SEED=42")
	if a != b || !strings.Contains(a, "0") || !strings.Contains(a, "9") {
		t.Errorf("seeded p0.5 patterns %s and %s: want equal and mixed", a, b)
	}
}

func TestBadFaultSpec(t *testing.T) {
	t.Parallel()
	newSim(t, "1.9.3", "SMOLVM_SIM_FAULTS=create:zero:1").fails(2, "SMOLVM_SIM_FAULTS", "machine", "ls", "--json")
	newSim(t, "1.9.3", "SMOLVM_SIM_DELAY=start=fast").fails(2, "SMOLVM_SIM_DELAY", "machine", "ls", "--json")
}

// TestFaultCounterAcrossProcesses: the Nth create is counted over every process.
func TestFaultCounterAcrossProcesses(t *testing.T) {
	t.Parallel()
	s := newProcSim(t, "1.9.3", "SMOLVM_SIM_FAULTS=create:5:1")
	codes := parallel(10, func(i int) result { return s.run(s.create(fmt.Sprintf("m%d", i))...) })
	if n := count(codes, 1); n != 1 {
		t.Errorf("%d creates failed; want exactly 1", n)
	}
}

// TestDelayOutsideLock: injected latency and a running guest do not hold the lock.
func TestDelayOutsideLock(t *testing.T) {
	t.Parallel()
	s := newProcSim(t, "1.9.3", "SMOLVM_SIM_DELAY=start=2s")
	s.ok(s.create("m")...)
	start := time.Now()
	slow := background(t, s.command("machine", "start", "--name", "m"))
	s.ok("machine", "ls", "--json") // would wait for the lock if the delay held it
	select {
	case <-slow:
		t.Error("start finished before a concurrent ls")
	default:
	}
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("start with a 2s delay took %v", d)
	}

	guest := background(t, s.command("machine", "exec", "--name", "m", "--", "sleep", "3"))
	s.ok(s.create("n")...)
	select {
	case <-guest:
		t.Error("exec finished before a concurrent create")
	default:
	}
	if err := <-guest; err != nil {
		t.Fatal(err)
	}
}

// background starts cmd and delivers its Wait result.
func background(t *testing.T, cmd *exec.Cmd) <-chan error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return done
}

func TestConcurrentCreates(t *testing.T) {
	t.Parallel()
	s := newProcSim(t, "1.9.3")
	codes := parallel(20, func(i int) result { return s.run(s.create(fmt.Sprintf("w%02d", i))...) })
	if n := count(codes, 0); n != 20 {
		t.Errorf("%d of 20 distinct creates succeeded", n)
	}
	if r := s.ok("machine", "ls", "--json"); strings.Count(r.stdout, `"name": "w`) != 20 {
		t.Errorf("ls lists:\n%s", r.stdout)
	}
	same := parallel(10, func(int) result { return s.run(s.create("same")...) })
	if n := count(same, 0); n != 1 {
		t.Errorf("%d of 10 same-name creates succeeded; want 1", n)
	}
	for _, r := range same {
		if r.code == 1 && !strings.Contains(r.stderr, "machine 'same' already exists") {
			t.Errorf("loser stderr %q", r.stderr)
		}
	}
}

func TestCallsLogHasNoEnvValues(t *testing.T) {
	t.Parallel()
	s := newProcSim(t, "1.9.3")
	s.ok(s.create("m", "-e", "API_KEY=hunter2secret")...)
	s.ok("machine", "start", "--name", "m")
	s.ok("machine", "exec", "--name", "m", "-e", "TOKEN=hunter2secret", "--", "true")
	data, err := os.ReadFile(filepath.Join(s.state, "calls.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "hunter2secret") {
		t.Errorf("calls.jsonl leaks an env value:\n%s", data)
	}
	calls := s.calls()
	if len(calls) != 3 || calls[2].Op != "machine exec" || calls[2].Name != "m" || calls[2].Exit != 0 || calls[2].PID == 0 {
		t.Errorf("calls: %+v", calls)
	}
}

// parallel runs n simulator invocations at once and returns their results.
func parallel(n int, f func(i int) result) []result {
	out := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = f(i)
		}()
	}
	wg.Wait()
	return out
}

func count(rs []result, code int) int {
	n := 0
	for _, r := range rs {
		if r.code == code {
			n++
		}
	}
	return n
}
