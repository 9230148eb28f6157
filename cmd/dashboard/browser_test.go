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
)

// screenshotEnv names a path where TestBrowserTaskDetail also copies its
// screenshot, to refresh docs/dashboard-task.png.
const screenshotEnv = "BOTTLEQ_DASHBOARD_SCREENSHOT"

// TestBrowserTaskDetail opens the task detail page in headless Chromium,
// as a person would: the page is a client-side app, so only a browser
// shows whether it renders the task and its formatted result. It skips
// where chromium is not installed (apt-get install chromium).
func TestBrowserTaskDetail(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skipf("skipping the browser check: chromium is not on PATH (apt-get install chromium): %v", err)
	}
	redis := testredis.Mini(t)
	id := completedTask(t, redis.URL())
	base, _ := startDashboard(t, redis.URL())
	url := base + "/queues/default/tasks/" + id
	dir := t.TempDir()

	shot := filepath.Join(dir, "task.png")
	chromium(t, bin, dir, "--screenshot="+shot, url)
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	if len(png) < 1000 || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot %s is not a PNG of a page (%d bytes)", shot, len(png))
	}
	t.Logf("screenshot of %s: %s (%d bytes; removed with the test's temp dir, set %s=PATH to keep a copy)", url, shot, len(png), screenshotEnv)
	if dst := os.Getenv(screenshotEnv); dst != "" {
		if err := os.WriteFile(dst, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("copied the screenshot to %s", dst)
	}

	dom := chromium(t, bin, dir, "--dump-dom", url)
	// The result's syntax highlighting splits text into spans: compare the
	// text without tags.
	text := regexp.MustCompile(`<[^>]*>`).ReplaceAllString(dom, "")
	for _, want := range []string{id, "agent:run", "exit code 3", "commits/" + elide(testKey(id), 20) + ".smolmachine", "API_KEY", "<redacted>"} {
		if !strings.Contains(html.UnescapeString(text), want) {
			t.Errorf("rendered page lacks %q; its text:\n%s", want, text)
		}
	}
	for _, leak := range []string{testSecret, testFileContent, base64.StdEncoding.EncodeToString([]byte(testFileContent))} {
		if strings.Contains(dom, leak) {
			t.Errorf("rendered page shows %q", leak)
		}
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
		"--window-size=1400,1000", "--virtual-time-budget=5000",
	}, args...)
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
