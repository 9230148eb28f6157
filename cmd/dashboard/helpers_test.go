package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

// syncBuffer is a bytes.Buffer safe for the dashboard goroutine to write
// while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// noEnv is a getenv with nothing set.
func noEnv(string) string { return "" }

// startDashboard runs Run on a free loopback port against redisURL with
// extra args, and returns its base URL and log. At cleanup it cancels Run
// and fails the test unless Run returns 0 promptly.
func startDashboard(t *testing.T, redisURL string, args ...string) (base string, log *syncBuffer) {
	t.Helper()
	return startDashboardEnv(t, noEnv, redisURL, args...)
}

// startDashboardEnv is startDashboard with getenv as the environment.
func startDashboardEnv(t *testing.T, getenv func(string) string, redisURL string, args ...string) (base string, log *syncBuffer) {
	t.Helper()
	log = &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	argv := append([]string{"-addr", "127.0.0.1:0", "-redis", redisURL, "-log-format", "json"}, args...)
	go func() { done <- Run(ctx, argv, getenv, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("Run returned %d after cancel, want 0; log:\n%s", code, log)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of cancel; log:\n%s", log)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(log.String(), "\n") {
			var l struct {
				Message string `json:"message"`
				Addr    string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Message == "dashboard listening" {
				return "http://" + l.Addr, log
			}
		}
		select {
		case code := <-done:
			done <- code
			t.Fatalf("Run returned %d before listening; log:\n%s", code, log)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no \"dashboard listening\" line within 10s; log:\n%s", log)
	return "", nil
}

// testSecret is the env value of completedTask's payload, which the
// dashboard must never show.
const testSecret = "sk-secret-dashboard-7f3a9c"

// testFileContent is the content of completedTask's input file, which the
// dashboard shows only as its size.
const testFileContent = "file content the dashboard must not show"

// testPayload is the payload completedTask enqueues: an env value and a
// file, as a producer would send them.
func testPayload() tasks.AgentRun {
	return tasks.AgentRun{
		Image:   "alpine:3",
		Command: []string{"sh", "-c", "echo hello"},
		Env:     map[string]string{"API_KEY": testSecret},
		Files:   []tasks.File{{Path: "/in/notes.txt", Content: []byte(testFileContent)}},
	}
}

// testKey stands for the worker's file key of a task ID (its slug and a
// hash), which names the task's commit and artifact directory.
func testKey(id string) string { return id + "-1a2b3c4d5e" }

// testResult is the result completedTask's handler writes: a task that
// exited 3 after reaching one host and being refused another, with a
// commit and an artifact, as the worker writes it.
func testResult(id string) tasks.Result {
	r := tasks.Result{
		State:         tasks.StateDone,
		Phase:         tasks.PhaseDelete,
		ExitCode:      3,
		Stdout:        "agent says hello\n",
		Stderr:        "warning: dry run\n",
		Commit:        "/var/lib/bottleq/commits/" + testKey(id) + ".smolmachine",
		Host:          "worker-1",
		VM:            "bq-" + testKey(id) + "-a1",
		SmolvmVersion: "1.8.0",
		Attempt:       1,
		PackCached:    true,
		Artifacts: []tasks.Artifact{
			{Path: "/workspace/out/report.md", Host: "worker-1", HostPath: "/var/lib/bottleq/artifacts/" + testKey(id) + "/0-report.md", Size: 2345},
			{Path: "/workspace/out/trace.json", Error: tasks.ArtifactMissing},
		},
		Egress: &tasks.EgressRecord{Entries: []tasks.EgressEntry{
			{Host: "api.example.com", Port: 443, Allowed: true, Count: 3, BytesUp: 5120, BytesDown: 48128},
			{Host: "evil.example.net", Port: 443, Reason: "not in allow_hosts", Count: 1},
		}},
	}
	for _, p := range []struct {
		name string
		d    time.Duration
	}{
		{tasks.PhasePack, 3 * time.Millisecond},
		{tasks.PhaseCreate, 212 * time.Millisecond},
		{tasks.PhaseStart, 480 * time.Millisecond},
		{tasks.PhaseReady, 1234 * time.Millisecond},
		{tasks.PhaseFiles, 35 * time.Millisecond},
		{tasks.PhaseExec, 12 * time.Second},
		{tasks.PhaseArtifacts, 41 * time.Millisecond},
		{tasks.PhaseStop, 350 * time.Millisecond},
		{tasks.PhaseCommit, 2 * time.Second},
		{tasks.PhaseDelete, 90 * time.Millisecond},
	} {
		r.Add(p.name, p.d)
	}
	return r
}

// completedTask enqueues an agent:run task with testPayload, runs it with a
// tiny asynq server whose handler writes testResult, and returns its ID
// once the task is completed (and retained).
func completedTask(t *testing.T, redisURL string) string {
	t.Helper()
	return completedTasks(t, redisURL, finished{testPayload(), testResult})[0]
}

// finished is a task for completedTasks: its payload and the result its
// handler writes.
type finished struct {
	payload tasks.AgentRun
	result  func(id string) tasks.Result
}

// completedTasks enqueues each task in order, runs them with a tiny asynq
// server whose handler writes each its result, and returns their IDs once
// all are completed (and retained).
func completedTasks(t *testing.T, redisURL string, fs ...finished) []string {
	t.Helper()
	opt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClient(opt)
	defer client.Close()
	results := map[string]func(string) tasks.Result{}
	var ids []string
	for _, f := range fs {
		task, err := tasks.NewAgentRun(f.payload, asynq.Retention(time.Hour), asynq.MaxRetry(0))
		if err != nil {
			t.Fatal(err)
		}
		info, err := client.Enqueue(task)
		if err != nil {
			t.Fatal(err)
		}
		results[info.ID] = f.result
		ids = append(ids, info.ID)
	}
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency:       1,
		Queues:            map[string]int{"default": 1},
		TaskCheckInterval: 20 * time.Millisecond,
		LogLevel:          asynq.FatalLevel,
	})
	handler := asynq.HandlerFunc(func(_ context.Context, task *asynq.Task) error {
		id := task.ResultWriter().TaskID()
		data, err := json.Marshal(results[id](id))
		if err != nil {
			return err
		}
		_, err = task.ResultWriter().Write(data)
		return err
	})
	if err := srv.Start(handler); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()

	insp := asynq.NewInspector(opt)
	defer insp.Close()
	deadline := time.Now().Add(15 * time.Second)
	for _, id := range ids {
		for {
			ti, err := insp.GetTaskInfo("default", id)
			if err == nil && ti.State == asynq.TaskStateCompleted {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s not completed within 15s: info %+v, err %v", id, ti, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return ids
}

// get fetches url and returns the status, Content-Type and body.
func get(t *testing.T, url string) (int, string, string) {
	t.Helper()
	return do(t, http.MethodGet, url)
}

// do sends a body-less request and returns the status, Content-Type and
// body.
func do(t *testing.T, method, url string) (int, string, string) {
	t.Helper()
	return send(t, request{method: method, url: url})
}

// request is an HTTP request as a test sends it, browser headers and all.
type request struct {
	method, url string
	host        string            // the Host header; "" for the URL's
	header      map[string]string // Origin, Sec-Fetch-Site, Content-Type, ...
	body        string            // sent only when not ""
}

// send sends r and returns the status, Content-Type and body.
func send(t *testing.T, r request) (int, string, string) {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, r.url, body)
	if err != nil {
		t.Fatal(err)
	}
	if r.host != "" {
		req.Host = r.host
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(got)
}

// archivedTask enqueues an agent:run task with testPayload and archives
// it, as asynq does with a task out of retries, and returns its ID.
func archivedTask(t *testing.T, redisURL string) string {
	t.Helper()
	id := enqueue(t, redisURL)
	insp := inspector(t, redisURL)
	if err := insp.ArchiveTask("default", id); err != nil {
		t.Fatal(err)
	}
	return id
}

// scheduledTask enqueues an agent:run task with testPayload to run in an
// hour and returns its ID.
func scheduledTask(t *testing.T, redisURL string) string {
	t.Helper()
	return enqueue(t, redisURL, asynq.ProcessIn(time.Hour))
}

// enqueue enqueues an agent:run task with testPayload and opts and returns
// its ID.
func enqueue(t *testing.T, redisURL string, opts ...asynq.Option) string {
	t.Helper()
	opt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClient(opt)
	defer client.Close()
	task, err := tasks.NewAgentRun(testPayload(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	info, err := client.Enqueue(task)
	if err != nil {
		t.Fatal(err)
	}
	return info.ID
}

// inspector returns an asynq Inspector on redisURL, closed at cleanup.
func inspector(t *testing.T, redisURL string) *asynq.Inspector {
	t.Helper()
	opt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(opt)
	t.Cleanup(func() { insp.Close() })
	return insp
}

// taskState returns the state of task id in the default queue, or fails
// the test.
func taskState(t *testing.T, insp *asynq.Inspector, id string) asynq.TaskState {
	t.Helper()
	info, err := insp.GetTaskInfo("default", id)
	if err != nil {
		t.Fatalf("task %s: %v", id, err)
	}
	return info.State
}

// archivedInvalid enqueues payload, as is, as an agent:run task, and has a
// tiny asynq server's handler refuse it with lastErr and asynq.SkipRetry,
// as the worker refuses a payload that does not decode; it returns the
// task's ID once the task is archived.
func archivedInvalid(t *testing.T, redisURL, payload, lastErr string) string {
	t.Helper()
	opt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClient(opt)
	defer client.Close()
	info, err := client.Enqueue(asynq.NewTask(tasks.TypeAgentRun, []byte(payload)), asynq.MaxRetry(5))
	if err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency:       1,
		Queues:            map[string]int{"default": 1},
		TaskCheckInterval: 20 * time.Millisecond,
		LogLevel:          asynq.FatalLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		return fmt.Errorf("%s: %w", lastErr, asynq.SkipRetry)
	})); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	insp := inspector(t, redisURL)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ti, err := insp.GetTaskInfo("default", info.ID)
		if err == nil && ti.State == asynq.TaskStateArchived {
			return info.ID
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not archived within 15s: info %+v, err %v", info.ID, ti, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
