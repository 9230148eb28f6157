package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/internal/testbin"
	"github.com/bot-bottle/bottleq/internal/testredis"
)

// buildServers builds cmd/dashboard and cmd/api, which TestMain does not,
// into a directory removed at cleanup.
func buildServers(t *testing.T) (dashboard, api string) {
	t.Helper()
	d, err := testbin.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	const mod = "github.com/bot-bottle/bottleq/cmd/"
	if dashboard, err = d.Build(mod+"dashboard", "dashboard"); err != nil {
		t.Fatal(err)
	}
	if api, err = d.Build(mod+"api", "api"); err != nil {
		t.Fatal(err)
	}
	return dashboard, api
}

// logLine is one line of a command's JSON log, or Raw alone when the line
// is not JSON.
type logLine struct {
	Raw       string
	JSON      bool
	Level     string
	Component string
	Message   string
	Error     string
}

func parseLog(s string) []logLine {
	var lines []logLine
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := logLine{Raw: sc.Text()}
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			l.JSON = true
			l.Level, _ = m["level"].(string)
			l.Component, _ = m["component"].(string)
			l.Message, _ = m["message"].(string)
			l.Error, _ = m["error"].(string)
		}
		lines = append(lines, l)
	}
	return lines
}

// TestRedisDownAtStart: every command given a Redis that does not answer
// gives up after -redis-wait with one line naming the flag (the URL's
// password replaced), exits 1, and starts nothing: no "worker serving",
// no listener. Its log is JSON, go-redis's own dial errors included.
func TestRedisDownAtStart(t *testing.T) {
	t.Parallel()
	dashboard, api := buildServers(t)
	addr := testredis.RefusedAddr(t)
	url := "redis://:s3cret@" + addr
	shown := "redis://:xxxxx@" + addr
	tokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokens, []byte("# no tokens\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const wait = "3s"
	tests := []struct {
		name string
		argv []string
		env  []string
		// exitLine is the plain line the command ends with, if any, after
		// its JSON log (the worker's, as for its other start failures);
		// a command without a JSON log says it all in that one line.
		exitLine string
		jsonLog  bool
		started  string // what it logs once it serves
	}{
		{"worker", []string{bins.worker, "-redis", url, "-redis-wait", wait, "-log-format", "json"},
			[]string{"SMOLVM_BIN=" + bins.sim, "SMOLVM_SIM_STATE=" + t.TempDir(), "BOTTLEQ_DATA_DIR=" + filepath.Join(t.TempDir(), "data"), "BOTTLEQ_METRICS_ADDR=off"},
			"worker: -redis: " + shown + ": no answer from Redis within " + wait, true, "worker serving"},
		{"dashboard", []string{dashboard, "-redis", url, "-addr", "127.0.0.1:0", "-log-format", "json"},
			[]string{"BOTTLEQ_REDIS_WAIT=" + wait}, "", true, "dashboard listening"},
		{"api", []string{api, "-redis", url, "-redis-wait", wait, "-listen", "127.0.0.1:0", "-tokens", tokens, "-log-format", "json"},
			nil, "", true, "api listening"},
		{"enqueue", []string{bins.enqueue, "--redis", url, "--redis-wait", wait, "--image", "alpine:3", "--", "true"},
			nil, "enqueue: --redis: " + shown + ": no answer from Redis within " + wait, false, ""},
		{"enqueue status", []string{bins.enqueue, "status", "--redis", url, "--redis-wait", wait, "some-task"},
			nil, "enqueue: --redis: " + shown + ": no answer from Redis within " + wait, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, tt.argv[0], tt.argv[1:]...)
			cmd.Env = append(append(os.Environ(), "REDIS_URL=", "BOTTLEQ_REDIS_WAIT="), tt.env...)
			out, _ := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("still waiting a minute later with a wait of %s:\n%s", wait, out)
			}
			if code := cmd.ProcessState.ExitCode(); code != 1 {
				t.Errorf("exit %d, want 1:\n%s", code, out)
			}
			if strings.Contains(string(out), "s3cret") {
				t.Errorf("the URL's password is in the output:\n%s", out)
			}
			if tt.started != "" && strings.Contains(string(out), tt.started) {
				t.Errorf("logged %q with Redis down:\n%s", tt.started, out)
			}
			lines := parseLog(string(out))
			if tt.exitLine != "" {
				if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1].Raw, tt.exitLine) {
					t.Errorf("last line is not %q...:\n%s", tt.exitLine, out)
				}
				lines = lines[:max(len(lines)-1, 0)]
			}
			var errorLines []logLine
			for _, l := range lines {
				if !l.JSON {
					t.Errorf("not a JSON line: %q", l.Raw)
				}
				if l.Level == "error" || l.Level == "warn" {
					errorLines = append(errorLines, l)
				}
			}
			if !tt.jsonLog {
				return
			}
			want := "-redis: " + shown + ": no answer from Redis within " + wait
			if len(errorLines) != 1 || !strings.HasPrefix(errorLines[0].Error, want) {
				t.Errorf("want one warning or error, %q..., got %d:\n%s", want, len(errorLines), out)
			}
		})
	}
}

// server is a dashboard (or any command) running for a test, its log
// collected.
type server struct {
	logs *syncBuffer
	done chan error
}

// startServer starts argv and waits until it logs ready, whose "addr"
// it returns. It is stopped with SIGTERM at cleanup and must exit 0.
func startServer(t *testing.T, ready string, argv ...string) (*server, string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	s := &server{logs: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("%s exit: %v\n%s", argv[0], err, s.logs)
			}
		case <-time.After(30 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Errorf("%s did not exit within 30s of SIGTERM", argv[0])
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range parseLog(s.logs.String()) {
			var m struct{ Addr, Message string }
			if json.Unmarshal([]byte(l.Raw), &m) == nil && m.Message == ready {
				return s, m.Addr
			}
		}
		select {
		case err := <-s.done:
			t.Fatalf("%s exited before %q: %v\n%s", argv[0], ready, err, s.logs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("%s never logged %q:\n%s", argv[0], ready, s.logs)
	return nil, ""
}

// TestRedisOutageLogs: Redis stops for a few seconds under a running
// worker and a dashboard that is being read. Both ride it out; what they
// log meanwhile is JSON lines only — go-redis's and asynq's messages
// included — and few: repeated errors are written once per 5 s, so at
// most 2 warnings and errors a second of outage.
func TestRedisOutageLogs(t *testing.T) {
	t.Parallel()
	dashboard, _ := buildServers(t)
	s := &stack{t: t, version: "1.9.3", simState: t.TempDir(), dataDir: t.TempDir()}
	s.redis = testredis.Real(t)
	t.Cleanup(func() {
		if ms := s.machines(); len(ms) != 0 {
			t.Errorf("machines left: %q", ms)
		}
	})
	cmd := exec.Command(bins.worker, "-log-format", "json")
	cmd.Env = append(os.Environ(), s.simEnv()...)
	cmd.Env = append(cmd.Env, "REDIS_URL="+s.redisURL(), "SMOLVM_BIN="+bins.sim, "BOTTLEQ_DATA_DIR="+s.dataDir,
		"BOTTLEQ_POLL_INTERVAL=100ms", "BOTTLEQ_METRICS_ADDR=off", "BOTTLEQ_SHUTDOWN_TIMEOUT=2s")
	w := s.startProc(cmd)
	dash, dashAddr := startServer(t, "dashboard listening", dashboard, "-redis", s.redisURL(), "-addr", "127.0.0.1:0", "-log-format", "json")
	if out, errOut, code := s.enqueue("--image", "alpine:3", "--wait", "--", "echo", "before"); code != 0 || out != "before\n" {
		t.Fatalf("before the outage: exit %d, %q %q", code, out, errOut)
	}

	// The dashboard's pages and a scraper keep reading it, as they would.
	stopReading := make(chan struct{})
	var reading sync.WaitGroup
	reading.Add(1)
	go func() {
		defer reading.Done()
		for {
			for _, path := range []string{"/metrics", "/api/queues"} {
				if resp, err := http.Get("http://" + dashAddr + path); err == nil {
					resp.Body.Close()
				}
			}
			select {
			case <-stopReading:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stopReading); reading.Wait() }()

	wFrom, dFrom := len(parseLog(w.logs.String())), len(parseLog(dash.logs.String()))
	began := time.Now()
	s.redis.Stop()
	time.Sleep(5 * time.Second)
	s.redis.Restart(t)
	outage := time.Since(began)

	if out, errOut, code := s.enqueue("--image", "alpine:3", "--wait", "--", "echo", "after"); code != 0 || out != "after\n" {
		t.Fatalf("after the outage: exit %d, %q %q\nworker:\n%s", code, out, errOut, w.logs)
	}
	for _, c := range []struct {
		name  string
		logs  *syncBuffer
		from  int
		fails string // the component whose lines show the outage was seen
	}{
		{"worker", w.logs, wFrom, "asynq"},
		{"dashboard", dash.logs, dFrom, "redis"},
	} {
		lines := parseLog(c.logs.String())[c.from:]
		var trouble []string
		seen := false
		for _, l := range lines {
			if !l.JSON {
				t.Errorf("%s: not a JSON line: %q", c.name, l.Raw)
			}
			if l.Level == "warn" || l.Level == "error" {
				trouble = append(trouble, l.Raw)
				seen = seen || l.Component == c.fails
			}
		}
		t.Logf("%s: %d warnings and errors in a %.1fs outage (%d lines in all):\n%s", c.name, len(trouble), outage.Seconds(), len(lines), strings.Join(trouble, "\n"))
		if !seen {
			t.Errorf("%s: no %s line about the outage: did Redis stop?\n%s", c.name, c.fails, strings.Join(trouble, "\n"))
		}
		if limit := int(2 * outage.Seconds()); len(trouble) > limit {
			t.Errorf("%s: %d warnings and errors in a %.1fs outage, want at most %d:\n%s", c.name, len(trouble), outage.Seconds(), limit, strings.Join(trouble, "\n"))
		}
	}
	for name, done := range map[string]chan error{"worker": w.done, "dashboard": dash.done} {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("the %s exited with Redis away: %v", name, err)
		default:
		}
	}
}
