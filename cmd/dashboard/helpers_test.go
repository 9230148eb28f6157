package main

import (
	"bytes"
	"context"
	"encoding/json"
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
	log = &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	argv := append([]string{"-addr", "127.0.0.1:0", "-redis", redisURL, "-log-format", "json"}, args...)
	go func() { done <- Run(ctx, argv, noEnv, log) }()
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

// testResult is the result completedTask's handler writes.
func testResult(id string) tasks.Result {
	r := tasks.Result{
		State:         tasks.StateDone,
		Phase:         tasks.PhaseDelete,
		ExitCode:      3,
		Stdout:        "agent says hello\n",
		Stderr:        "warning: dry run\n",
		Commit:        "/var/lib/bottleq/commits/" + id + ".smolmachine",
		Host:          "worker-1",
		VM:            "bq-" + id,
		SmolvmVersion: "1.8.0",
		Attempt:       1,
		PackCached:    true,
	}
	r.Add(tasks.PhasePack, 1500*time.Millisecond)
	r.Add(tasks.PhaseExec, 12*time.Second)
	r.Add(tasks.PhaseCommit, 2*time.Second)
	return r
}

// completedTask enqueues an agent:run task with testPayload, runs it with a
// tiny asynq server whose handler writes testResult, and returns its ID
// once the task is completed (and retained).
func completedTask(t *testing.T, redisURL string) string {
	t.Helper()
	opt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClient(opt)
	defer client.Close()
	task, err := tasks.NewAgentRun(testPayload(), asynq.Retention(time.Hour), asynq.MaxRetry(0))
	if err != nil {
		t.Fatal(err)
	}
	info, err := client.Enqueue(task)
	if err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency:       1,
		Queues:            map[string]int{"default": 1},
		TaskCheckInterval: 20 * time.Millisecond,
		LogLevel:          asynq.FatalLevel,
	})
	handler := asynq.HandlerFunc(func(_ context.Context, task *asynq.Task) error {
		data, err := json.Marshal(testResult(task.ResultWriter().TaskID()))
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
	for {
		ti, err := insp.GetTaskInfo(info.Queue, info.ID)
		if err == nil && ti.State == asynq.TaskStateCompleted {
			return info.ID
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not completed within 15s: info %+v, err %v", info.ID, ti, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}
