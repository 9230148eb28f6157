package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/bot-bottle/bottleq/internal/testredis"
)

func TestDashboard(t *testing.T) {
	redis := testredis.Mini(t)
	id := completedTask(t, redis.URL())
	base, _ := startDashboard(t, redis.URL())

	t.Run("UI", func(t *testing.T) {
		for _, path := range []string{"/", "/queues/default/tasks/" + id} {
			code, ctype, body := get(t, base+path)
			if code != 200 || !strings.HasPrefix(ctype, "text/html") {
				t.Errorf("GET %s: %d %q, want 200 text/html", path, code, ctype)
			}
			for _, want := range []string{"<title>Asynq - Monitoring</title>", `<div id="root">`, `window.FLAG_READ_ONLY="true"`} {
				if !strings.Contains(body, want) {
					t.Errorf("GET %s: body lacks %q", path, want)
				}
			}
		}
	})

	t.Run("task API shows the formatted result", func(t *testing.T) {
		code, _, body := get(t, base+"/api/queues/default/tasks/"+id)
		if code != 200 {
			t.Fatalf("GET task: %d %s", code, body)
		}
		var task struct {
			ID     string `json:"id"`
			State  string `json:"state"`
			Result string `json:"result"`
		}
		if err := json.Unmarshal([]byte(body), &task); err != nil {
			t.Fatalf("task JSON: %v\n%s", err, body)
		}
		if task.ID != id || task.State != "completed" {
			t.Errorf("task id %q state %q, want %q completed", task.ID, task.State, id)
		}
		for _, want := range []string{
			"done, exit code 3\n",
			"data dir: /var/lib/bottleq\n",
			"commit: commits/" + elide(testKey(id), 16) + ".smolmachine\n",
			"  exec       12.000 s\n",
			"  create       212 ms\n",
		} {
			if !strings.Contains(task.Result, want) {
				t.Errorf("result lacks %q:\n%s", want, task.Result)
			}
		}
	})

	t.Run("task list shows a summary", func(t *testing.T) {
		code, _, body := get(t, base+"/api/queues/default/completed_tasks")
		if code != 200 {
			t.Fatalf("GET completed tasks: %d %s", code, body)
		}
		var listed struct {
			Tasks []struct {
				Result string `json:"result"`
			} `json:"tasks"`
		}
		if err := json.Unmarshal([]byte(body), &listed); err != nil || len(listed.Tasks) != 1 {
			t.Fatalf("list JSON: %v\n%s", err, body)
		}
		want := "exit code 3 · 16.445 s\non worker-1, committed, 2 artifacts\nstderr: warning: dry run"
		if got := listed.Tasks[0].Result; got != want {
			t.Errorf("listed result:\n%s\nwant:\n%s", got, want)
		}
	})

	t.Run("task API hides env values and file content", func(t *testing.T) {
		leaks := []string{testSecret, testFileContent, base64.StdEncoding.EncodeToString([]byte(testFileContent))}
		code, _, detail := get(t, base+"/api/queues/default/tasks/"+id)
		if code != 200 {
			t.Fatalf("GET task: %d %s", code, detail)
		}
		var task struct {
			Payload string `json:"payload"`
		}
		if err := json.Unmarshal([]byte(detail), &task); err != nil {
			t.Fatalf("task JSON: %v\n%s", err, detail)
		}
		code, _, list := get(t, base+"/api/queues/default/completed_tasks")
		if code != 200 {
			t.Fatalf("GET completed tasks: %d %s", code, list)
		}
		var listed struct {
			Tasks []struct {
				ID      string `json:"id"`
				Payload string `json:"payload"`
			} `json:"tasks"`
		}
		if err := json.Unmarshal([]byte(list), &listed); err != nil {
			t.Fatalf("list JSON: %v\n%s", err, list)
		}
		if len(listed.Tasks) != 1 || listed.Tasks[0].ID != id {
			t.Fatalf("completed tasks %+v, want just %s", listed.Tasks, id)
		}
		for name, body := range map[string]string{"task": detail, "list": list} {
			for _, leak := range leaks {
				if strings.Contains(body, leak) {
					t.Errorf("%s JSON shows %q:\n%s", name, leak, body)
				}
			}
		}
		for name, payload := range map[string]string{"task": task.Payload, "list": listed.Tasks[0].Payload} {
			for _, want := range []string{`env: {"API_KEY":"<redacted>"}`, `files: [{"path":"/in/notes.txt","content":"<40 bytes>"}]`, `image: "alpine:3"`} {
				if !strings.Contains(payload, want) {
					t.Errorf("%s payload lacks %s: %s", name, want, payload)
				}
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		code, ctype, body := get(t, base+"/metrics")
		if code != 200 || !strings.HasPrefix(ctype, "text/plain") {
			t.Fatalf("GET /metrics: %d %q", code, ctype)
		}
		for _, want := range []string{
			`asynq_tasks_enqueued_total{queue="default",state="completed"} 1`,
			`asynq_queue_size{queue="default"} 1`,
			`asynq_tasks_processed_total{queue="default"} 1`,
			"go_goroutines ",
			"process_cpu_seconds_total ",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	})

	t.Run("an archived invalid payload is shown redacted", func(t *testing.T) {
		payload := `{"image":"alpine:3","command":["sh","-c","curl $API"],"env":{"API_KEY":"` + testSecret + `"},"token":"` + testSecret + `"}`
		archived := archivedInvalid(t, redis.URL(), payload, `payload: json: unknown field "token"`)
		code, _, detail := get(t, base+"/api/queues/default/tasks/"+archived)
		if code != 200 {
			t.Fatalf("GET task: %d %s", code, detail)
		}
		code, _, list := get(t, base+"/api/queues/default/archived_tasks")
		if code != 200 {
			t.Fatalf("GET archived tasks: %d %s", code, list)
		}
		var task struct {
			Payload string `json:"payload"`
			LastErr string `json:"error_message"`
		}
		var listed struct {
			Tasks []struct {
				Payload string `json:"payload"`
			} `json:"tasks"`
		}
		if err := json.Unmarshal([]byte(detail), &task); err != nil {
			t.Fatalf("task JSON: %v\n%s", err, detail)
		}
		if err := json.Unmarshal([]byte(list), &listed); err != nil || len(listed.Tasks) != 1 {
			t.Fatalf("list JSON: %v\n%s", err, list)
		}
		want := "image: \"alpine:3\"\ncommand: [\"sh\",\"-c\",\"curl $API\"]\nenv: {\"API_KEY\":\"<redacted>\"}\ntoken: \"<redacted>\""
		for name, got := range map[string]string{"task": task.Payload, "list": listed.Tasks[0].Payload} {
			if got != want {
				t.Errorf("%s payload:\n%s\nwant:\n%s", name, got, want)
			}
		}
		if !strings.Contains(task.LastErr, `unknown field "token"`) {
			t.Errorf("task's error %q, want the handler's", task.LastErr)
		}
		for name, body := range map[string]string{"task": detail, "list": list} {
			if strings.Contains(body, testSecret) {
				t.Errorf("%s JSON shows the secret:\n%s", name, body)
			}
		}
	})
}

func TestRedisPasswordNotLogged(t *testing.T) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	m.RequireAuth("s3cret-pw")
	url := "redis://:s3cret-pw@" + m.Addr()
	id := completedTask(t, url)
	base, log := startDashboard(t, url)

	if code, _, body := get(t, base+"/api/queues/default/tasks/"+id); code != 200 {
		t.Errorf("GET task with a password: %d %s", code, body)
	}
	if !strings.Contains(log.String(), `"redis":"redis://:xxxxx@`+m.Addr()+`"`) {
		t.Errorf("start line lacks the redacted Redis URL:\n%s", log)
	}
	if strings.Contains(log.String(), "s3cret-pw") {
		t.Errorf("log holds the Redis password:\n%s", log)
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want string // in the one-line message
	}{
		{"unknown flag", []string{"-bogus"}, nil, "-bogus"},
		{"missing value", []string{"-addr"}, nil, "-addr"},
		{"addr not host:port", []string{"-addr", "8080"}, nil, "-addr"},
		{"writable not a bool", []string{"-writable=maybe"}, nil, "-writable"},
		{"read-only is gone", []string{"-read-only"}, nil, "-read-only"},
		{"allowed host a URL", []string{"-allowed-hosts", "https://dash.example.com/"}, nil, "-allowed-hosts"},
		{"allowed host a wildcard", []string{"-allowed-hosts", "localhost,*.example.com"}, nil, `"*.example.com"`},
		{"allowed host with a space", []string{"-allowed-hosts", "dash example"}, nil, "-allowed-hosts"},
		{"redis scheme", []string{"-redis", "http://:pw@h:1"}, nil, "-redis"},
		{"redis wait negative", []string{"-redis-wait", "-1s"}, nil, "-redis-wait"},
		{"env redis wait", nil, map[string]string{"BOTTLEQ_REDIS_WAIT": "soon"}, "BOTTLEQ_REDIS_WAIT"},
		{"log level", []string{"-log-level", "loud"}, nil, "-log-level"},
		{"log format", []string{"-log-format", "xml"}, nil, "-log-format"},
		{"argument", []string{"extra"}, nil, `"extra"`},
		{"env writable", nil, map[string]string{"BOTTLEQ_DASHBOARD_WRITABLE": "maybe"}, "BOTTLEQ_DASHBOARD_WRITABLE"},
		{"env allowed hosts", nil, map[string]string{"BOTTLEQ_DASHBOARD_HOSTS": "http://x"}, "BOTTLEQ_DASHBOARD_HOSTS"},
		{"env redis", nil, map[string]string{"REDIS_URL": "http://:pw@h:1"}, "REDIS_URL"},
		{"env addr", nil, map[string]string{"BOTTLEQ_DASHBOARD_ADDR": "nowhere"}, "BOTTLEQ_DASHBOARD_ADDR"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stderr syncBuffer
			// Never the default 127.0.0.1:8080, should a bad value be taken.
			getenv := func(k string) string {
				if v, ok := tt.env[k]; ok || k != "BOTTLEQ_DASHBOARD_ADDR" {
					return v
				}
				return "127.0.0.1:0"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if code := Run(ctx, tt.args, getenv, &stderr); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			out := stderr.String()
			if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "dashboard: ") || !strings.Contains(out, tt.want) {
				t.Errorf("stderr = %q, want one line \"dashboard: ...\" naming %s", out, tt.want)
			}
			if strings.Contains(out, "pw@") {
				t.Errorf("stderr echoes a Redis password: %q", out)
			}
		})
	}
}

func TestFlagBeatsEnv(t *testing.T) {
	env := map[string]string{"BOTTLEQ_DASHBOARD_ADDR": "nowhere", "BOTTLEQ_DASHBOARD_WRITABLE": "true", "BOTTLEQ_DASHBOARD_HOSTS": "env.example"}
	c, err := parseFlags([]string{"-addr", "127.0.0.1:9", "-allowed-hosts", "a.example,B.example:443", "-allowed-hosts", "[fd00::1]"},
		func(k string) string { return env[k] }, &syncBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.addr != "127.0.0.1:9" || !c.writable || c.redisURL != "redis://127.0.0.1:6379" {
		t.Errorf("config = %+v, want addr from the flag, writable from env, default redis", c)
	}
	if want := []string{"a.example", "b.example", "fd00::1"}; !slices.Equal(c.allowedHosts, want) {
		t.Errorf("allowed hosts = %q, want %q from the flags, not the env", c.allowedHosts, want)
	}
}

func TestHelp(t *testing.T) {
	var stderr syncBuffer
	if code := Run(context.Background(), []string{"-h"}, noEnv, &stderr); code != 0 {
		t.Errorf("-h: exit code %d, want 0", code)
	}
	for _, e := range envFallbacks {
		if !strings.Contains(stderr.String(), "-"+e[0]+" ["+e[1]+"]") {
			t.Errorf("usage lacks -%s [%s]:\n%s", e[0], e[1], stderr.String())
		}
	}
}

func TestListenError(t *testing.T) {
	redis := testredis.Mini(t)
	base, _ := startDashboard(t, redis.URL())
	var stderr syncBuffer
	addr := strings.TrimPrefix(base, "http://")
	if code := Run(context.Background(), []string{"-addr", addr, "-redis", redis.URL()}, noEnv, &stderr); code != 1 {
		t.Errorf("second dashboard on %s: exit code %d, want 1; stderr:\n%s", addr, code, stderr.String())
	}
}
