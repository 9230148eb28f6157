//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/tasks"
)

// screenshotsEnv names a directory where TestBrowserPages also writes its
// screenshots, to refresh the ones in docs/:
//
//	BOTTLEQ_SCREENSHOTS=$PWD/docs go test -run TestBrowserPages ./cmd/dashboard
const screenshotsEnv = "BOTTLEQ_SCREENSHOTS"

// TestBrowserPages opens the dashboard's task list, a task page and the
// archived tasks in headless Chromium, as a person would: the pages are a
// client-side app, so only a browser shows whether they render the tasks
// with bottleq's summaries, formatted results and redacted payloads. It
// skips where chromium is not installed (apt-get install chromium).
func TestBrowserPages(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skipf("skipping the browser check: chromium is not on PATH (apt-get install chromium): %v", err)
	}
	redis := testredis.Mini(t)
	ids := completedTasks(t, redis.URL(),
		finished{testPayload(), testResult},
		finished{tasks.AgentRun{Image: "python:3.12-slim", Command: []string{"python", "-m", "pytest", "-q"}, AllowHosts: []string{"pypi.org"}},
			func(id string) tasks.Result {
				r := tasks.Result{State: tasks.StateDone, Phase: tasks.PhaseDelete, Host: "worker-2", Attempt: 1, SmolvmVersion: "1.8.0",
					Commit: "/var/lib/bottleq/commits/" + testKey(id) + ".smolmachine", Stdout: "........\n8 passed in 0.41s\n"}
				r.Add(tasks.PhasePack, 41*time.Second)
				r.Add(tasks.PhaseExec, 3210*time.Millisecond)
				return r
			}},
		finished{tasks.AgentRun{Image: "alpine:3", Command: []string{"sh", "-c", "sleep 600"}, Timeout: tasks.Duration(5 * time.Second), Commit: tasks.Bool(false)},
			func(id string) tasks.Result {
				r := tasks.Result{State: tasks.StateDone, Phase: tasks.PhaseDelete, Host: "worker-1", Attempt: 1, ExitCode: 124, TimedOut: true,
					Stderr: "command timed out after 5000ms\n"}
				r.Add(tasks.PhaseExec, 5002*time.Millisecond)
				return r
			}},
	)
	id := ids[0]
	archived := archivedInvalid(t, redis.URL(),
		`{"image":"alpine:3","command":["sh","-c","curl -H \"Authorization: $API_KEY\" https://api.example.com"],"env":{"API_KEY":"`+testSecret+`"},"timeout":"soon"}`,
		`timeout: "soon" is not a Go duration such as "90s"`)
	base, _ := startDashboard(t, redis.URL())
	dir := t.TempDir()

	for _, page := range []struct {
		name, path string
		height     int
		want       []string
	}{
		{"dashboard-tasks.png", "/queues/default?status=completed", 900, []string{
			"exit code 3 · 16.445 s", "on worker-1, committed, 2 artifacts", "stderr: warning: dry run",
			"exit code 0 · 44.210 s", "stdout: 8 passed in 0.41s",
			"exit code 124, timed out · 5.002 s",
			`env: {"API_KEY":"<redacted>"}`, `files: [{"path":"/in/notes.txt","content":"<40 bytes>"}]`,
		}},
		{"dashboard-task.png", "/queues/default/tasks/" + id, 1500, []string{
			id, "agent:run", "done, exit code 3", "data dir: /var/lib/bottleq", "commits/" + elide(testKey(id), 16) + ".smolmachine",
			"0-report.md (2.3 KiB) ← /workspace/out/report.md", "exec       12.000 s", "create       212 ms",
			"api.example.com:443 ×3, ↑5 KiB ↓47 KiB", `env: {"API_KEY":"<redacted>"}`,
		}},
		{"dashboard-archived.png", "/queues/default?status=archived", 700, []string{
			strings.Split(archived, "-")[0], `env: {"API_KEY":"<redacted>"}`, `timeout: "soon"`, `curl -H \"Authorization: $API_KEY\"`, "is not a Go duration",
		}},
	} {
		t.Run(page.name, func(t *testing.T) {
			url := base + page.path
			size := fmt.Sprintf("--window-size=1440,%d", page.height)
			shot := filepath.Join(dir, page.name)
			chromium(t, bin, dir, size, "--screenshot="+shot, url)
			png, err := os.ReadFile(shot)
			if err != nil {
				t.Fatalf("no screenshot: %v", err)
			}
			if len(png) < 1000 || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
				t.Fatalf("screenshot %s is not a PNG of a page (%d bytes)", shot, len(png))
			}
			if out := os.Getenv(screenshotsEnv); out != "" {
				writeFile(t, filepath.Join(out, page.name), png)
				t.Logf("screenshot of %s: %s (%d bytes)", url, filepath.Join(out, page.name), len(png))
			}

			dom := chromium(t, bin, dir, size, "--dump-dom", url)
			// The syntax highlighting splits text into spans: compare the
			// text without tags.
			text := html.UnescapeString(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(dom, ""))
			for _, want := range page.want {
				if !strings.Contains(text, want) {
					t.Errorf("rendered page lacks %q; its text:\n%s", want, text)
				}
			}
			for _, leak := range []string{testSecret, testFileContent, base64.StdEncoding.EncodeToString([]byte(testFileContent))} {
				if strings.Contains(dom, leak) {
					t.Errorf("rendered page shows %q", leak)
				}
			}
		})
	}
}

// writeFile writes data to name under a temporary name, then renames it.
func writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-"+filepath.Base(name)+"-*")
	if err != nil {
		t.Fatal(err)
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), name)
	}
	if err != nil {
		os.Remove(tmp.Name())
		t.Fatal(err)
	}
}

// TestBrowserCrossOrigin attacks a -writable dashboard from a page of
// another origin in headless Chromium, as a site the operator visits
// would: it makes the browser POST to the run and archive endpoints in
// every way a page may without asking first, and reads a task's result
// through a name re-pointed at the dashboard (DNS rebinding). The tasks
// must stay as they were and the result unread.
func TestBrowserCrossOrigin(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skipf("skipping the browser check: chromium is not on PATH (apt-get install chromium): %v", err)
	}
	redis := testredis.Mini(t)
	archived := archivedTask(t, redis.URL())
	scheduled := scheduledTask(t, redis.URL())
	completed := completedTask(t, redis.URL())
	insp := inspector(t, redis.URL())
	base, log := startDashboard(t, redis.URL(), "-writable", "-log-level", "debug")
	api := base + "/api/queues/default"

	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><title>attack</title><body>
<iframe name="sink"></iframe>
<form id="f" method="POST" enctype="text/plain" action="%[1]s/archived_tasks:run_all" target="sink"><input name="a" value="b"></form>
<script>
document.getElementById("f").submit();
Promise.allSettled([
  fetch("%[1]s/archived_tasks/%[2]s:run", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: "{}"}),
  fetch("%[1]s/archived_tasks:batch_run", {method: "POST", mode: "no-cors", body: '{"task_ids":["%[2]s"]}'}),
  fetch("%[1]s/scheduled_tasks/%[3]s:archive", {method: "POST", mode: "no-cors"}),
]).then(() => { document.body.append("attack-done"); });
</script>`, api, archived, scheduled)
	}))
	defer attacker.Close()

	dir := t.TempDir()
	dom := chromium(t, bin, dir, "--dump-dom", attacker.URL)
	if !strings.Contains(dom, "attack-done") {
		t.Fatalf("the attack page did not finish its requests:\n%s", dom)
	}
	if got := taskState(t, insp, archived); got != asynq.TaskStateArchived {
		t.Errorf("archived task is now %v", got)
	}
	if got := taskState(t, insp, scheduled); got != asynq.TaskStateScheduled {
		t.Errorf("scheduled task is now %v", got)
	}
	// Refused, not lost on the way: the dashboard saw each request.
	if n := strings.Count(log.String(), `"status":403`); n < 4 {
		t.Errorf("dashboard refused %d cross-origin requests with 403, want 4; log:\n%s", n, log)
	}

	_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
	rebound := "http://rebind.test:" + port + "/api/queues/default/tasks/" + completed
	dom = chromium(t, bin, dir, "--host-resolver-rules=MAP rebind.test 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--dump-dom", rebound)
	if strings.Contains(dom, "exit code") || !strings.Contains(dom, "not a name of this dashboard") {
		t.Errorf("%s through a rebound name shows:\n%s", rebound, dom)
	}
}

// chromium runs headless Chromium on url with extra flags and returns its
// stdout. It resolves no host name but loopback (the UI links web fonts,
// which must not leave the machine) unless args hold other
// --host-resolver-rules, and is killed, with its helpers, after a minute.
func chromium(t *testing.T, bin, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rules := "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
	args = slices.DeleteFunc(args, func(a string) bool {
		if strings.HasPrefix(a, "--host-resolver-rules=") {
			rules = a
			return true
		}
		return false
	})
	argv := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-extensions", "--disable-default-apps", "--no-default-browser-check",
		rules,
		"--user-data-dir=" + filepath.Join(dir, "profile"),
		"--virtual-time-budget=5000",
	}, args...)
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--window-size=") }) {
		argv = append(argv, "--window-size=1400,1000")
	}
	cmd := exec.CommandContext(ctx, bin, argv...)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}
