package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/internal/api"
	"github.com/bot-bottle/bottleq/internal/testbin"
	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/tasks"
)

// bins are the real commands the end-to-end tests run, built once.
var bins struct{ api, worker, sim string }

func TestMain(m *testing.M) {
	os.Exit(testbin.Main(m.Run, func(d *testbin.Dir) (err error) {
		const mod = "github.com/bot-bottle/bottleq/cmd/"
		if bins.sim, err = d.Build(mod+"smolvm-sim", "smolvm"); err != nil {
			return err
		}
		if bins.worker, err = d.Build(mod+"worker", "worker"); err != nil {
			return err
		}
		bins.api, err = d.Build(mod+"api", "api")
		return err
	}))
}

// stack is a real redis-server, a real worker on the smolvm simulator and
// the real API binary, sharing a data directory.
type stack struct {
	t        *testing.T
	redis    *testredis.Server
	simState string
	dataDir  string
	tokens   string
	api      *proc
	base     string
}

// proc is a running command.
type proc struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

func newStack(t *testing.T) *stack {
	t.Helper()
	s := &stack{t: t, redis: testredis.Real(t), simState: t.TempDir(), dataDir: t.TempDir()}
	s.tokens = filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, s.tokens, map[string]string{"tok-acme": "acme *", "tok-globex": "globex default"})
	t.Cleanup(func() {
		if ms := s.machines(); len(ms) != 0 {
			t.Errorf("machines left in the simulator: %q", ms)
		}
	})
	w := exec.Command(bins.worker, "-log-format", "json")
	w.Env = append(os.Environ(), s.simEnv()...)
	w.Env = append(w.Env, "REDIS_URL="+s.redis.URL(), "SMOLVM_BIN="+bins.sim, "BOTTLEQ_DATA_DIR="+s.dataDir,
		"BOTTLEQ_POLL_INTERVAL=20ms", "BOTTLEQ_METRICS_ADDR=off", "BOTTLEQ_RETRY_BASE=50ms", "BOTTLEQ_RETRY_MAX=200ms",
		"BOTTLEQ_SHUTDOWN_TIMEOUT=2s", "BOTTLEQ_HOST=e2e-host")
	s.start(w, "worker serving")
	a := exec.Command(bins.api, "-listen", "127.0.0.1:0", "-tokens", s.tokens, "-data-dir", s.dataDir,
		"-events-poll", "50ms", "-log-format", "json", "-log-level", "debug")
	a.Env = append(os.Environ(), "REDIS_URL="+s.redis.URL())
	s.api = s.start(a, `"message":"api listening"`)
	done := make(chan int)
	s.base = "http://" + listening(t, s.api.logs, done)
	return s
}

func (s *stack) simEnv() []string {
	return []string{"SMOLVM_SIM_STATE=" + s.simState, "SMOLVM_SIM_VERSION=1.9.3"}
}

// start runs cmd until the test ends (SIGTERM, then it must exit 0), and
// waits for ready in its output.
func (s *stack) start(cmd *exec.Cmd, ready string) *proc {
	s.t.Helper()
	p := &proc{cmd: cmd, logs: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	name := filepath.Base(cmd.Path)
	s.t.Cleanup(func() {
		if err := p.stop(); err != nil {
			s.t.Errorf("%s exit: %v\n%s", name, err, p.logs)
		} else if s.t.Failed() {
			s.t.Logf("%s log:\n%s", name, p.logs)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.logs.String(), ready) {
		select {
		case err := <-p.done:
			p.done <- err
			s.t.Fatalf("%s exited before it was ready: %v\n%s", name, err, p.logs)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s did not start:\n%s", name, p.logs)
		}
	}
	return p
}

// stop sends SIGTERM and waits for the exit.
func (p *proc) stop() error {
	select {
	case err := <-p.done:
		p.done <- err
		return err
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(60 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		return errors.New("no exit within 60s of SIGTERM")
	}
}

// machines lists the simulator's machines.
func (s *stack) machines() []string {
	s.t.Helper()
	cmd := exec.Command(bins.sim, "machine", "ls", "--json")
	cmd.Env = append(os.Environ(), s.simEnv()...)
	out, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("machine ls: %v", err)
	}
	var ms []struct{ Name string }
	if err := json.Unmarshal(out, &ms); err != nil {
		s.t.Fatalf("machine ls: %v: %s", err, out)
	}
	var names []string
	for _, m := range ms {
		names = append(names, m.Name)
	}
	return names
}

// call sends a request and returns the status, headers and body.
func (s *stack) call(method, path, token, body string, headers ...string) (int, http.Header, []byte) {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, s.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func (s *stack) runOf(b []byte) api.Run {
	s.t.Helper()
	var r api.Run
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
		s.t.Fatalf("not a run: %s", b)
	}
	return r
}

func (s *stack) waitState(token, id, want string) api.Run {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, _, b := s.call("GET", "/v1/runs/"+id, token, "")
		if code == 200 && s.runOf(b).State == want {
			return s.runOf(b)
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("run %s never became %s: %d %s", id, want, code, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// events reads a run's event stream to its end: "name id" per event, with
// only the phase part of the id (ATTEMPT-INDEX, the part before "/"), the
// done event's data, the agent's stdout from the stdout events, and how
// the stream ended.
func (s *stack) events(token, id, lastID string) (evs []string, done []byte, stdout string, err error) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.base+"/v1/runs/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		s.t.Fatalf("events: %d %s", resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var name, eid, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "" && name != "":
			phase, _, _ := strings.Cut(eid, "/")
			evs = append(evs, name+" "+phase)
			switch name {
			case api.EventDone:
				done = []byte(data)
			case api.EventStdout:
				var o api.OutputEvent
				if err := json.Unmarshal([]byte(data), &o); err != nil || o.Attempt != 1 || o.DataBase64 != "" {
					s.t.Errorf("stdout event %s: %v", data, err)
				}
				stdout += o.Data
			}
			name, eid, data = "", "", ""
		case strings.HasPrefix(line, "event: "):
			name = line[7:]
		case strings.HasPrefix(line, "id: "):
			eid = line[4:]
		case strings.HasPrefix(line, "data: "):
			data = line[6:]
		}
	}
	return evs, done, stdout, sc.Err()
}

// TestEndToEnd: the real API, worker and simulator: a run with a file and
// an artifact, followed over SSE to done, its artifact downloaded and
// checked; a running run cancelled (VM deleted, state cancelled); another
// tenant kept out; the tokens reloaded on SIGHUP; an open stream ended
// cleanly by SIGTERM.
func TestEndToEnd(t *testing.T) {
	s := newStack(t)
	in := base64.StdEncoding.EncodeToString([]byte("hello e2e\n"))
	body := `{"image":"alpine:3","workdir":"/workspace","files":[{"path":"/workspace/in/a.txt","content":"` + in + `"}],` +
		`"command":["sh","-c","mkdir -p out && tr a-z A-Z < in/a.txt > out/A.txt && echo ran"],"artifacts":["/workspace/out/A.txt"]}`
	code, h, b := s.call("POST", "/v1/runs", "tok-acme", body, "Idempotency-Key: e2e-1")
	if code != 201 || h.Get("Location") == "" {
		t.Fatalf("POST: %d %s", code, b)
	}
	run := s.runOf(b)
	if code, _, b := s.call("POST", "/v1/runs", "tok-acme", body, "Idempotency-Key: e2e-1"); code != 200 || s.runOf(b).ID != run.ID {
		t.Errorf("POST again with the key: %d %s", code, b)
	}

	evs, done, stdout, err := s.events("tok-acme", run.ID, "")
	if err != nil {
		t.Errorf("the stream ended with %v", err)
	}
	var final api.Run
	if json.Unmarshal(done, &final) != nil || final.State != api.StateCompleted {
		t.Fatalf("events %q, done %s", evs, done)
	}
	var res tasks.Result
	if err := json.Unmarshal(final.Result, &res); err != nil || res.ExitCode != 0 || res.Stdout != "ran\n" || res.Tenant != "acme" {
		t.Fatalf("result %s", final.Result)
	}
	// The phases, with the agent's output, from the worker's live output
	// stream, in exec.
	var want []string
	for i, p := range res.Phases {
		want = append(want, fmt.Sprintf("phase 1-%d", i))
		if p.Name == tasks.PhaseExec {
			want = append(want, fmt.Sprintf("stdout 1-%d", i))
		}
	}
	want = append(want, "done done")
	if strings.Join(evs, ",") != strings.Join(want, ",") || stdout != "ran\n" {
		t.Errorf("events %q, stdout %q; want %q and \"ran\\n\" (phases %+v)", evs, stdout, want, res.Phases)
	}
	// Resumed from the middle: the rest only.
	if evs, _, _, _ := s.events("tok-acme", run.ID, "1-3"); strings.Join(evs, ",") != strings.Join(want[4:], ",") {
		t.Errorf("events after 1-3: %q, want %q", evs, want[4:])
	}

	code, h, b = s.call("GET", "/v1/runs/"+run.ID+"/artifacts/0", "tok-acme", "")
	sum := sha256.Sum256(b)
	if code != 200 || string(b) != "HELLO E2E\n" || h.Get("X-Checksum-Sha256") != hex.EncodeToString(sum[:]) || res.Artifacts[0].SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("artifact: %d %q, X-Checksum-Sha256 %q", code, b, h.Get("X-Checksum-Sha256"))
	}
	for _, p := range []string{"", "/events", "/artifacts/0"} {
		if code, _, b := s.call("GET", "/v1/runs/"+run.ID+p, "tok-globex", ""); code != 404 {
			t.Errorf("globex GET %s of acme's run: %d %s", p, code, b)
		}
	}

	t.Run("cancel a running run", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "started")
		code, _, b := s.call("POST", "/v1/runs", "tok-acme", `{"image":"alpine:3","command":["sh","-c","touch `+marker+` && exec sleep 120"]}`)
		if code != 201 {
			t.Fatalf("POST: %d %s", code, b)
		}
		id := s.runOf(b).ID
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
			if _, err := os.Stat(marker); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the command never started")
			}
		}
		if got := s.waitState("tok-acme", id, api.StateActive); got.Attempts != 1 {
			t.Errorf("running run %+v", got)
		}
		code, _, b = s.call("POST", "/v1/runs/"+id+"/cancel", "tok-acme", "")
		if code != 200 && code != 202 {
			t.Fatalf("cancel: %d %s", code, b)
		}
		got := s.waitState("tok-acme", id, api.StateCancelled)
		var r tasks.Result
		if json.Unmarshal(got.Result, &r) != nil || r.State != tasks.StateCancelled || r.Phase != tasks.PhaseExec {
			t.Errorf("cancelled run's result %s", got.Result)
		}
		if ms := s.machines(); len(ms) != 0 {
			t.Errorf("machines left after the cancel: %q", ms)
		}
		if evs, done, _, _ := s.events("tok-acme", id, ""); len(evs) == 0 || evs[len(evs)-1] != "done done" || !bytes.Contains(done, []byte(`"state":"cancelled"`)) {
			t.Errorf("events of the cancelled run %q %s", evs, done)
		}
	})

	t.Run("SIGHUP reloads the tokens", func(t *testing.T) {
		writeTokens(t, s.tokens, map[string]string{"tok-acme": "acme *", "tok-initech": "initech default"})
		s.api.cmd.Process.Signal(syscall.SIGHUP)
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(s.api.logs.String(), `"message":"tokens reloaded"`); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no reload in the log:\n%s", s.api.logs)
			}
		}
		if code, _, _ := s.call("GET", "/v1/runs/"+run.ID, "tok-initech", ""); code != 404 {
			t.Errorf("the new token: %d, want 404 (a run of another tenant)", code)
		}
		if code, _, _ := s.call("GET", "/v1/runs/"+run.ID, "tok-globex", ""); code != 401 {
			t.Errorf("the removed token: %d, want 401", code)
		}
	})

	t.Run("SIGTERM ends open streams cleanly", func(t *testing.T) {
		code, _, b := s.call("POST", "/v1/runs", "tok-acme", `{"image":"alpine:3","command":["true"],"queue":"nobody-serves"}`)
		if code != 201 {
			t.Fatalf("POST: %d %s", code, b)
		}
		id := s.runOf(b).ID
		type result struct {
			evs []string
			err error
		}
		ended := make(chan result, 1)
		go func() {
			req, _ := http.NewRequest("GET", s.base+"/v1/runs/"+id+"/events", nil)
			req.Header.Set("Authorization", "Bearer tok-acme")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				ended <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			ended <- result{evs: strings.Split(strings.TrimSpace(string(b)), "\n\n"), err: err}
		}()
		for deadline := time.Now().Add(10 * time.Second); ; {
			code, _, m := s.call("GET", "/metrics", "", "")
			if code == 200 && bytes.Contains(m, []byte("bottleq_api_event_streams 1")) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the stream never opened")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := s.api.stop(); err != nil {
			t.Errorf("api exit after SIGTERM: %v", err)
		}
		select {
		case r := <-ended:
			if r.err != nil || len(r.evs) != 2 || !strings.HasPrefix(r.evs[1], ": the API is shutting down") {
				t.Errorf("stream %q, %v", r.evs, r.err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the stream outlived the API")
		}
		if strings.Contains(s.api.logs.String(), "tok-acme") {
			t.Error("the API logged a token")
		}
	})
}

// TestPythonExample runs examples/python/bottleq_client.py against the
// real API, worker and Redis.
func TestPythonExample(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must run the Python example: %v", err)
		}
		t.Skipf("skipping: python3 is not installed: %v", err)
	}
	s := newStack(t)
	script, err := filepath.Abs(filepath.Join("..", "..", "examples", "python", "bottleq_client.py"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BOTTLEQ_API="+s.base, "BOTTLEQ_TOKEN=tok-acme", "BOTTLEQ_KEY=python-1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3 bottleq_client.py: %v\n%s", err, out)
	}
	// The agent's output comes as stdout events in exec, before its result.
	for _, want := range []string{"] pack\n", "] exec\nhello from python\n", "exit code 0, stdout: hello from python", "artifact 0: hello.txt, sha256 "} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "hello.txt")); err != nil || string(b) != "hello from python\n" {
		t.Errorf("hello.txt: %q %v", b, err)
	}
}
