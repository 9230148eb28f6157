//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"html"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

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
	for _, want := range []string{id, "agent:run", "exit code: 3", "commits/" + id + ".smolmachine", "API_KEY", "<redacted>"} {
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

// chromium runs headless Chromium on url with extra flags and returns its
// stdout. It resolves no host name but loopback (the UI links web fonts,
// which must not leave the machine) and is killed, with its helpers, after
// a minute.
func chromium(t *testing.T, bin, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	argv := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-extensions", "--disable-default-apps", "--no-default-browser-check",
		"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
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
