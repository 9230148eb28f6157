package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

// The tests in this file back sentences of README's Guarantees and
// Security sections that no other test did.

// TestDeleteFailureCounted: a delete smolvm fails once is retried, logged,
// and the VM is gone, uncounted; a delete that fails every try of the
// teardown is logged each time, counted in
// bottleq_vm_delete_failures_total, and the VM left to the reaper, which
// deletes it. The task completes either way, on its first attempt.
func TestDeleteFailureCounted(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		faults  string
		failed  int // delete tries that failed, each logged
		counted int // VMs left to the reaper
	}{
		{"fails once", "delete:1:1", 1, 0},
		{"fails every try", "delete:1:1;delete:2:1;delete:3:1", 3, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, "miniredis", "1.9.3")
			c, insp := s.client()
			w := s.worker("SMOLVM_SIM_FAULTS="+tt.faults, "BOTTLEQ_REAP_INTERVAL=500ms", "BOTTLEQ_REAP_MIN_AGE=1s")
			info := s.submit(c, tasks.AgentRun{Image: "alpine:3", Commit: tasks.Bool(false), Command: []string{"echo", "ok"}}, asynq.MaxRetry(0))
			done := waitState(t, insp, info.Queue, info.ID, asynq.TaskStateCompleted)
			if r := result(t, done); r.Stdout != "ok\n" || done.Retried != 0 {
				t.Errorf("completed with %s after %d retries; want ok on the first attempt", done.Result, done.Retried)
			}
			// The reaper confirms an orphan over 15 s before it deletes it.
			deadline := time.Now().Add(time.Minute)
			for len(s.machines()) != 0 && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if ms := s.machines(); len(ms) != 0 {
				t.Fatalf("VM never deleted: %q\n%s", ms, w.logs)
			}
			var failed, left int
			for _, line := range strings.Split(w.logs.String(), "\n") {
				var l struct {
					Message, Phase, Level string
					TaskID                string `json:"task_id"`
				}
				if json.Unmarshal([]byte(line), &l) != nil || l.TaskID != info.ID || l.Phase != tasks.PhaseDelete {
					continue
				}
				switch l.Message {
				case "delete failed":
					failed++
				case "VM left behind; the reaper will delete it":
					left++
				}
			}
			if failed != tt.failed || left != tt.counted {
				t.Errorf("logged %d failed deletes and %d VMs left behind; want %d and %d\n%s", failed, left, tt.failed, tt.counted, w.logs)
			}
			metrics := w.metrics(t)
			for _, want := range []string{
				fmt.Sprintf("bottleq_vm_delete_failures_total %d", tt.counted),
				fmt.Sprintf("bottleq_reaped_vms_total %d", tt.counted),
				"bottleq_vms_in_flight 0",
			} {
				if !strings.Contains(metrics, want+"\n") {
					t.Errorf("/metrics lacks %s", want)
				}
			}
		})
	}
}

// TestShutdownLetsTaskFinish: SIGTERM while a task runs, with a
// -shutdown-timeout longer than the task needs, stops the worker taking
// tasks (one enqueued after the signal stays in its queue, no VM made for
// it) and lets the running one finish: completed on its first attempt,
// not requeued, its VM deleted, and only then does the worker exit 0.
func TestShutdownLetsTaskFinish(t *testing.T) {
	t.Parallel()
	s := newStack(t, "redis-server", "1.9.3")
	c, insp := s.client()
	marks := t.TempDir()
	w := s.worker("BOTTLEQ_SHUTDOWN_TIMEOUT=1m", "BOTTLEQ_CONCURRENCY=2")
	info := s.submit(c, tasks.AgentRun{Image: "alpine:3", Command: []string{"sh", "-c",
		fmt.Sprintf("touch %s/started; sleep 3; echo finished", marks)}}, asynq.MaxRetry(3))
	waitFile(t, filepath.Join(marks, "started"))
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// asynq's processor logs this once it has stopped taking tasks.
	waitLog(t, w, "Processor done")
	late := s.submit(c, tasks.AgentRun{Image: "alpine:3", Command: []string{"echo", "late"}})
	select {
	case err := <-w.done:
		w.done <- err
		if err != nil {
			t.Fatalf("worker exit after SIGTERM: %v\n%s", err, w.logs)
		}
	case <-time.After(time.Minute):
		t.Fatalf("worker still running a minute after SIGTERM\n%s", w.logs)
	}
	got, err := insp.GetTaskInfo(info.Queue, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != asynq.TaskStateCompleted || got.Retried != 0 {
		t.Fatalf("after the worker exited the task is %v after %d retries, want completed on its first attempt", got.State, got.Retried)
	}
	if r := result(t, got); r.Stdout != "finished\n" || r.ExitCode != 0 {
		t.Errorf("result %s, want the agent run to its end", got.Result)
	}
	if got, err := insp.GetTaskInfo(late.Queue, late.ID); err != nil || got.State != asynq.TaskStatePending {
		t.Errorf("the task enqueued after SIGTERM is not pending (%v): %+v", err, got)
	}
	if n := len(s.calls(func(c call) bool { return c.Op == "machine create" })); n != 1 {
		t.Errorf("%d machine creates, want 1: the stopping worker took a task", n)
	}
	if ms := s.machines(); len(ms) != 0 {
		t.Errorf("machines left: %q", ms)
	}
}

// TestFinishedTaskProxyIsClosed: a task's credentials on the bundled
// proxy are valid while it runs and answered 407 once it has ended, for
// the host it was allowed.
func TestFinishedTaskProxyIsClosed(t *testing.T) {
	t.Parallel()
	// 127.0.0.2, not 127.0.0.1: NO_PROXY lists 127.0.0.1 (the VM itself).
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	var hits atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	target := ln.Addr().String()

	s := newStack(t, "miniredis", "1.9.3")
	w := s.worker("BOTTLEQ_EGRESS_LISTEN=127.0.0.1:0", "BOTTLEQ_EGRESS_ALLOW_LOOPBACK_FOR_TESTS=true", "BOTTLEQ_METRICS_ADDR=off")
	script := fmt.Sprintf(`printf '%%s ' "$HTTPS_PROXY"; curl -s -o /dev/null -w "%%{http_code}" http://%s/`, target)
	stdout, stderr, code := s.enqueue("--image", "alpine:3", "--no-commit", "--allow-host", target, "--wait", "--", "sh", "-c", script)
	proxyURL, status, _ := strings.Cut(stdout, " ")
	if code != 0 || status != "200" || !strings.HasPrefix(proxyURL, "http://task:") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want the task's proxy URL and 200\n%s", code, stdout, stderr, w.logs)
	}
	pu, err := url.Parse(proxyURL)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}, Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + target + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusProxyAuthRequired || hits.Load() != 1 {
		t.Errorf("the finished task's credentials got %d (server hits %d), want 407 and only the task's own request", resp.StatusCode, hits.Load())
	}
}

// TestHostileAgentSecrets: an agent that prints its env value on stdout
// and stderr, ends with smolvm's own error line holding it, and exits 1,
// gets back what it printed in its result's stdout and stderr (the agent's
// own output, returned as it printed it) and nowhere else: not in the rest
// of the result, its error, or the worker's log at debug level. The same
// holds when its output is cut to the result's cap.
func TestHostileAgentSecrets(t *testing.T) {
	t.Parallel()
	const secret = "sk-live-5ec7e7a9b1"
	s := newStack(t, "miniredis", "1.9.3")
	c, insp := s.client()
	w := s.worker()
	for _, tt := range []struct{ name, script string }{
		{"prints it", `echo "key=$API_KEY"; echo "key=$API_KEY" >&2; echo "Error: vm not found: $API_KEY" >&2; exit 1`},
		{"floods with it", `for i in $(seq 5000); do echo "$API_KEY $API_KEY $API_KEY"; echo "Error: $API_KEY" >&2; done; exit 1`},
	} {
		info := s.submit(c, tasks.AgentRun{Image: "alpine:3", Workdir: "/workspace", Env: map[string]string{"API_KEY": secret},
			Artifacts: []string{"/workspace/none.txt"}, Command: []string{"sh", "-c", tt.script}}, asynq.MaxRetry(3))
		done := waitState(t, insp, info.Queue, info.ID, asynq.TaskStateCompleted)
		r := result(t, done)
		if r.ExitCode != 1 || done.Retried != 0 || !strings.Contains(r.Stdout, secret) || !strings.Contains(r.Stderr, secret) {
			t.Errorf("%s: retried %d, result %s; want the agent's exit 1 and its own output", tt.name, done.Retried, done.Result)
		}
		r.Stdout, r.Stderr = "", ""
		rest, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		for what, text := range map[string]string{"result beyond stdout and stderr": string(rest), "task's error": done.LastErr} {
			if strings.Contains(text, secret) {
				t.Errorf("%s: the secret is in the %s: %s", tt.name, what, text)
			}
		}
	}
	if strings.Contains(w.logs.String(), secret) {
		t.Errorf("the secret is in the worker's log:\n%s", w.logs)
	}
}

// TestUnenforcedEgressIsLoud: on a smolvm that ignores --allow-cidr for
// VMs created from a pack, -allow-unenforced-egress lets the worker start
// with a proxy, and it says so in an error line.
func TestUnenforcedEgressIsLoud(t *testing.T) {
	t.Parallel()
	s := newStack(t, "miniredis", "1.7.0")
	// Nothing listens there: no test dials it.
	w := s.worker("BOTTLEQ_PROXY=http://127.0.0.9:3128", "BOTTLEQ_ALLOW_UNENFORCED_EGRESS=true")
	var loud bool
	for _, line := range strings.Split(w.logs.String(), "\n") {
		var l struct{ Level, Message, Smolvm string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Level == "error" && strings.HasPrefix(l.Message, "EGRESS IS NOT RESTRICTED") && l.Smolvm == "1.7.0" {
			loud = true
		}
	}
	if !loud {
		t.Errorf("no error line saying egress is not restricted:\n%s", w.logs)
	}
}

// waitLog waits until the worker's log holds text.
func waitLog(t *testing.T, p *proc, text string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(p.logs.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("the worker never logged %q:\n%s", text, p.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBundledProxyHoldsAFlood: the worker's bundled proxy, with its
// default caps, holds at most 256 client connections from one source and
// 1024 in all, answering 503 at once to the rest, and the worker still
// runs tasks meanwhile; a held connection that sends no request is closed
// 10 s after it came, which frees its slot.
func TestBundledProxyHoldsAFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: waits out the proxy's 10 s header timeout")
	}
	t.Parallel()
	s := newStack(t, "miniredis", "1.9.3")
	w := s.worker("BOTTLEQ_EGRESS_LISTEN=127.0.0.1:0", "BOTTLEQ_METRICS_ADDR=off")
	var addr string
	for _, line := range strings.Split(w.logs.String(), "\n") {
		var l struct{ Addr, Message string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Message == "bundled egress proxy serving" {
			addr = l.Addr
		}
	}
	if addr == "" {
		t.Fatalf("no proxy address in the worker's log:\n%s", w.logs)
	}
	dial := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", addr)
		if errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Skipf("cannot use %s as a source address here: %v", src, err)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// refused reads the proxy's answer to a connection that sent nothing:
	// a 503 naming why, at once.
	refused := func(c net.Conn, why string) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		if !strings.HasPrefix(string(b), "HTTP/1.1 503 ") || !strings.Contains(string(b), why) {
			t.Errorf("a connection past the cap got %q (%v), want a 503 saying %q", b, err, why)
		}
	}
	start := time.Now()
	first := dial("127.0.0.1")
	same := []net.Conn{first}
	for range 255 {
		same = append(same, dial("127.0.0.1"))
	}
	refused(dial("127.0.0.1"), "too many connections from one source (max 256)")
	for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		for range 256 {
			dial(src)
		}
	}
	refused(dial("127.0.0.5"), "too many client connections (max 1024)")
	if time.Since(start) > 8*time.Second {
		t.Fatalf("the flood took %v: the proxy's 10 s header timeout may have closed some of it", time.Since(start))
	}
	if stdout, stderr, code := s.enqueue("--image", "alpine:3", "--no-commit", "--wait", "--", "echo", "still here"); code != 0 || stdout != "still here\n" {
		t.Errorf("a task during the flood: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// The first connection was accepted no sooner than it was dialed.
	_ = first.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(first); err != nil {
		t.Fatalf("an idle connection was not closed: %v", err)
	}
	if held := time.Since(start); held < 10*time.Second || held > 20*time.Second {
		t.Errorf("an idle connection was closed after %v, want 10 s", held)
	}
	// Once the others from that source are closed too (each its 10 s
	// after it was dialed), a slot is free: a request without credentials
	// is answered 407, not 503.
	for _, c := range same[1:] {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("an idle connection was not closed: %v", err)
		}
	}
	c := dial("127.0.0.1")
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusProxyAuthRequired {
		t.Errorf("after the flood timed out a new connection got %v (%v), want 407", resp, err)
	}
}
