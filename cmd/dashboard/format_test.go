package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/tasks"
)

// testID is a task ID as asynq makes them.
const testID = "260007ec-3411-4bb7-b827-7c17d091febe"

func marshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFormatResultDetail(t *testing.T) {
	t.Parallel()
	timedOut := tasks.Result{State: tasks.StateDone, Phase: tasks.PhaseDelete, ExitCode: 124, TimedOut: true,
		Stdout: "head...tail", StdoutOmitted: 4096, Attempt: 2, Host: "w"}
	timedOut.Add(tasks.PhaseExec, 30*time.Second)
	running := tasks.Result{State: tasks.StateRunning, Phase: tasks.PhaseExec, Attempt: 2,
		Error: "smolvm exec: exit status 1", SmolvmVersion: "1.9.3"}
	elsewhere := tasks.Result{State: tasks.StateDone, Phase: tasks.PhaseDelete, Host: "h",
		Commit: "/srv/bq/commits/k.smolmachine",
		Artifacts: []tasks.Artifact{
			{Path: "/o/a", HostPath: "/srv/bq/artifacts/k/0-a", Size: 5},
			{Path: "/o/b", HostPath: "/tmp/elsewhere/1-b", Size: 3 << 20},
			{Path: "/o/c", Size: 9 << 20, Error: "over this worker's cap of 8 MiB per artifact"},
		},
		Egress: &tasks.EgressRecord{Truncated: 7, Invalid: 1}}
	warm := tasks.Result{State: tasks.StateDone, Phase: tasks.PhaseDelete, VM: "bq-d-warm_0a_1b", Warm: true,
		SkippedPhases: []string{"create", "start", "ready"}, Attempt: 1}

	for _, tt := range []struct {
		name   string
		result tasks.Result
		want   string
	}{
		{"a finished task with everything", testResult(testID), `done, exit code 3
attempt 1 on worker-1, smolvm 1.8.0
vm: bq-260007ec-…2b3c4d5e-a1
data dir: /var/lib/bottleq
commit: commits/260007ec…b3c4d5e.smolmachine
artifacts, in artifacts/260007ec…b3c4d5e/:
  0-report.md (2.3 KiB) ← /workspace/out/report.md
  /workspace/out/trace.json: missing
phases, 16.445 s in total (pack cached):
  pack           3 ms
  create       212 ms
  start        480 ms
  ready       1.234 s
  files         35 ms
  exec       12.000 s
  artifacts     41 ms
  stop         350 ms
  commit      2.000 s
  delete        90 ms
egress allowed:
  api.example.com:443 ×3, ↑5 KiB ↓47 KiB
egress refused:
  evil.example.net:443 ×1: not in allow_hosts
stdout:
agent says hello
stderr:
warning: dry run`},
		{"timed out, no commit, output cut", timedOut, `done, exit code 124 (timed out)
attempt 2 on w
commit: none
phases, 30.000 s in total (pack built):
  exec  30.000 s
stdout (4 KiB omitted from the middle):
head...tail`},
		{"running with an error", running, `running, phase: exec
error: smolvm exec: exit status 1
attempt 2, smolvm 1.9.3`},
		{"an artifact outside the task's directory, one over a cap", elsewhere, `done, exit code 0
on h
data dir: /srv/bq
commit: commits/k.smolmachine
artifacts, in artifacts/k/:
  0-a (5 B) ← /o/a
  /tmp/elsewhere/1-b (3 MiB) ← /o/b
  /o/c: over this worker's cap of 8 MiB per artifact
egress refused 1 request to invalid host names
egress: 7 more attempts not listed`},
		{"a warm VM", warm, `done, exit code 0
attempt 1
vm: bq-d-warm_0a_1b
warm VM: create, start, ready skipped
commit: none`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := formatResult("", []byte(marshal(t, tt.result))); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestFormatResultSummary(t *testing.T) {
	t.Parallel()
	ok := tasks.Result{State: tasks.StateDone, Phase: tasks.PhaseDelete, Host: "worker-1",
		Stdout: "step 1\n\x1b[32mall 12 checks passed, report written to /workspace/out/report.md\x1b[0m\r\n\n", Stderr: "noise\n",
		Artifacts: []tasks.Artifact{{Path: "/a"}}}
	ok.Add(tasks.PhaseExec, 1500*time.Millisecond)
	timedOut := tasks.Result{State: tasks.StateDone, Phase: tasks.PhaseDelete, ExitCode: 124, TimedOut: true,
		Stderr: "killed\n"}
	failing := tasks.Result{State: tasks.StateRunning, Phase: tasks.PhaseStart, Error: "smolvm start: machine did not start", Stderr: "x\n"}

	for _, tt := range []struct {
		name   string
		result tasks.Result
		want   string
	}{
		{"exit 3: stderr's last line", testResult(testID), "exit code 3 · 16.445 s\non worker-1, committed, 2 artifacts\nstderr: warning: dry run"},
		{"exit 0: stdout's last line, clipped, without colours", ok, "exit code 0 · 1.500 s\non worker-1, 1 artifact\nstdout: all 12 checks passed, repor…"},
		{"timed out, no phases, no host", timedOut, "exit code 124, timed out\nstderr: killed"},
		{"an error wins over output", failing, "running: start\nerror: smolvm start: machine did no…"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := formatResult(tasks.TypeAgentRun, []byte(marshal(t, tt.result)))
			if got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
			for _, l := range strings.Split(got, "\n") {
				if n := len([]rune(l)); n > summaryWidth {
					t.Errorf("line of %d runes, over %d: %q", n, summaryWidth, l)
				}
			}
		})
	}
}

func TestFormatResultNotOurs(t *testing.T) {
	t.Parallel()
	done := marshal(t, testResult("t1"))
	for _, tt := range []struct {
		name     string
		taskType string
		result   string
	}{
		{"other task type", "email:send", done},
		{"not JSON", tasks.TypeAgentRun, "plain text"},
		{"JSON but not a Result", "", `{"ok":true}`},
		{"unknown state", "", `{"state":"weird","phase":"exec"}`},
		{"no phase", tasks.TypeAgentRun, `{"state":"done"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := formatResult(tt.taskType, []byte(tt.result)); got != tt.result {
				t.Errorf("got %q, want the result as is", got)
			}
		})
	}
	if got := formatResult(tasks.TypeAgentRun, []byte{0xff, 0x00}); got != "non-printable bytes" {
		t.Errorf("binary result: got %q, want asynqmon's default", got)
	}
}

func TestFormatDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		0:                      "0 ms",
		-time.Second:           "0 ms",
		400 * time.Microsecond: "<1 ms",
		time.Millisecond:       "1 ms",
		12*time.Millisecond + 400*time.Microsecond:  "12 ms",
		999 * time.Millisecond:                      "999 ms",
		time.Second:                                 "1.000 s",
		1234 * time.Millisecond:                     "1.234 s",
		59999 * time.Millisecond:                    "59.999 s",
		time.Minute:                                 "1 min 00 s",
		125*time.Second + 600*time.Millisecond:      "2 min 06 s",
		time.Hour + 29*time.Minute + 31*time.Second: "1 h 30 min",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 10 << 10: "10 KiB", 48128: "47 KiB",
		3 << 20: "3 MiB", 5<<30 + 1<<29: "5.5 GiB",
	} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestShortenPath(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ path, dir, want string }{
		{"/var/lib/bottleq/commits/k.smolmachine", "/var/lib/bottleq", "commits/k.smolmachine"},
		{"/var/lib/bottleq/commits/k.smolmachine", "", "/var/lib/bottleq/commits/k.smolmachine"},
		{"/var/lib/bottleqx/commits/k.smolmachine", "/var/lib/bottleq", "/var/lib/bottleqx/commits/k.smolmachine"},
		{"commits/" + testKey(testID) + ".smolmachine", "", "commits/260007ec…b3c4d5e.smolmachine"},
		{"/out/" + strings.Repeat("a", 30) + ".tar.gz", "", "/out/aaaaaaaa…aaa.tar.gz" /* only the last extension is kept aside */},
		{"/out/" + strings.Repeat("b", 25) + ".averyveryverylongext", "", "/out/bbbbbbbb…longext" /* an extension this long is part of the name */},
		{"/workspace/project/src/internal/pkg/module/sub/dir/file.go", "", "/workspace/…/pkg/module/sub/dir/file.go"},
		{"/" + strings.Repeat("a", 30) + "/" + strings.Repeat("b", 30) + "/" + strings.Repeat("c", 30) + "/" + strings.Repeat("d", 30), "",
			"/aaaaaaaa…aaaaaaa/…/cccccccc…ccccccc/dddddddd…ddddddd" /* never fewer than the last two */},
		{"/a/b", "", "/a/b"},
		{"relative", "", "relative"},
	} {
		if got := shortenPath(tt.path, tt.dir); got != tt.want {
			t.Errorf("shortenPath(%q, %q) = %q, want %q", tt.path, tt.dir, got, tt.want)
		}
	}
}
