package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestMetricsTellAgentFromTask: /metrics has every series an alert may
// name from the start, at 0; a task whose `machine start` fails twice
// counts three attempts and one completed task; an agent that exits 3, or
// that its timeout kills, completes its task and counts as a nonzero or
// timeout exit, not as a success.
func TestMetricsTellAgentFromTask(t *testing.T) {
	t.Parallel()
	s := newStack(t, "redis-server", "1.9.3")
	w := s.worker("SMOLVM_SIM_FAULTS=start:1:1:agent operation failed: start machine: injected;start:2:1:agent operation failed: start machine: injected")

	start := w.metrics(t)
	for _, want := range []string{
		`bottleq_attempts_total{outcome="completed"} 0`,
		`bottleq_attempts_total{outcome="retried"} 0`,
		`bottleq_attempts_total{outcome="failed"} 0`,
		`bottleq_attempts_total{outcome="invalid"} 0`,
		`bottleq_attempts_total{outcome="cancelled"} 0`,
		`bottleq_attempts_total{outcome="requeued"} 0`,
		`bottleq_tasks_total{outcome="completed"} 0`,
		`bottleq_tasks_total{outcome="failed"} 0`,
		`bottleq_tasks_total{outcome="invalid"} 0`,
		`bottleq_tasks_total{outcome="cancelled"} 0`,
		`bottleq_agent_exits_total{exit="zero"} 0`,
		`bottleq_agent_exits_total{exit="nonzero"} 0`,
		`bottleq_agent_exits_total{exit="timeout"} 0`,
		`bottleq_task_agent_exits_total{exit="nonzero"} 0`,
		`bottleq_attempt_failures_total{phase="start"} 0`,
		`bottleq_attempt_failures_total{phase="commit"} 0`,
		`bottleq_pack_cache_total{result="miss"} 0`,
		`bottleq_smolvm_calls_total{op="machine start",result="error"} 0`,
		`bottleq_vm_delete_failures_total 0`,
		`bottleq_reaped_vms_total 0`,
	} {
		if !strings.Contains(start, want+"\n") {
			t.Errorf("/metrics at start lacks %s", want)
		}
	}

	stdout, stderr, code := s.enqueue("--image", "alpine:3", "--max-retry", "3", "--wait", "--", "echo", "survived")
	if code != 0 || stdout != "survived\n" {
		t.Fatalf("exit %d stdout %q stderr %q\n%s", code, stdout, stderr, w.logs)
	}
	if _, _, code := s.enqueue("--image", "alpine:3", "--no-commit", "--wait", "--", "sh", "-c", "exit 3"); code != 3 {
		t.Fatalf("agent exit 3 came back as %d", code)
	}
	if _, stderr, code := s.enqueue("--image", "alpine:3", "--no-commit", "--timeout", "1s", "--wait", "--", "sleep", "30"); code != 124 {
		t.Fatalf("a command over its timeout came back as %d: %s", code, stderr)
	}

	end := w.metrics(t)
	for _, want := range []string{
		`bottleq_attempts_total{outcome="retried"} 2`,
		`bottleq_attempts_total{outcome="completed"} 3`,
		`bottleq_attempts_total{outcome="failed"} 0`,
		`bottleq_tasks_total{outcome="completed"} 3`,
		`bottleq_tasks_total{outcome="failed"} 0`,
		`bottleq_agent_exits_total{exit="zero"} 1`,
		`bottleq_agent_exits_total{exit="nonzero"} 1`,
		`bottleq_agent_exits_total{exit="timeout"} 1`,
		`bottleq_task_agent_exits_total{exit="zero"} 1`,
		`bottleq_task_agent_exits_total{exit="nonzero"} 1`,
		`bottleq_task_agent_exits_total{exit="timeout"} 1`,
		`bottleq_attempt_failures_total{phase="start"} 2`,
		`bottleq_smolvm_calls_total{op="machine start",result="error"} 2`,
		`bottleq_vms_in_flight 0`,
	} {
		if !strings.Contains(end, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// Every smolvm subcommand the worker ran had its series from the start.
	ops := regexp.MustCompile(`bottleq_smolvm_calls_total\{op="([^"]+)"`)
	opsOf := func(text string) []string {
		var out []string
		for _, m := range ops.FindAllStringSubmatch(text, -1) {
			out = append(out, m[1])
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	if before, after := opsOf(start), opsOf(end); !slices.Equal(before, after) {
		t.Errorf("smolvm ops at start %q, after tasks %q: each must exist from the start", before, after)
	}
}

// TestWorkersShareMetricsRange: two workers on one host, with the same
// -metrics-addr range (as the default is), both serve /metrics: each on
// the first port of the range still free, past one another program
// holds.
func TestWorkersShareMetricsRange(t *testing.T) {
	t.Parallel()
	port, held := holdPorts(t, 5)
	for _, ln := range held[1:] { // the workers' ports; port itself stays taken
		ln.Close()
	}
	addr := fmt.Sprintf("BOTTLEQ_METRICS_ADDR=127.0.0.1:%d-%d", port, port+4)
	s := newStack(t, "miniredis", "1.9.3")
	w1 := s.worker(addr)
	w2 := s.worker(addr)
	var got []int
	for _, w := range []*proc{w1, w2} {
		if !strings.Contains(w.metrics(t), `bottleq_tasks_total{outcome="completed"} 0`) {
			t.Errorf("worker's /metrics lacks its series")
		}
		got = append(got, metricsPort(t, w))
	}
	if got[0] == got[1] || slices.ContainsFunc(got, func(p int) bool { return p <= port || p > port+4 }) {
		t.Errorf("metrics ports %v, want two of %d-%d", got, port+1, port+4)
	}
}

// metricsPort returns the port the worker logged its /metrics on.
func metricsPort(t *testing.T, p *proc) int {
	t.Helper()
	for _, line := range strings.Split(p.logs.String(), "\n") {
		var l struct{ Addr, Message string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Message == "metrics at /metrics" {
			_, port, _ := net.SplitHostPort(l.Addr)
			n, _ := strconv.Atoi(port)
			return n
		}
	}
	t.Fatalf("no metrics address in the log:\n%s", p.logs)
	return 0
}

// holdPorts listens on n consecutive loopback ports the system picked
// free, and returns the first and the listeners (closed at cleanup).
func holdPorts(t *testing.T, n int) (int, []net.Listener) {
	t.Helper()
	for try := 0; try < 50; try++ {
		first, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		held := []net.Listener{first}
		for i := 1; i < n; i++ {
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+i)))
			if err != nil {
				break
			}
			held = append(held, ln)
		}
		if len(held) == n {
			t.Cleanup(func() {
				for _, ln := range held {
					ln.Close()
				}
			})
			return port, held
		}
		for _, ln := range held {
			ln.Close()
		}
	}
	t.Fatalf("found no %d consecutive free ports", n)
	return 0, nil
}
