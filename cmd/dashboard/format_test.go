package main

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/bot-bottle/bottleq/tasks"
)

func TestFormatResult(t *testing.T) {
	done, err := json.Marshal(testResult("t1"))
	if err != nil {
		t.Fatal(err)
	}
	timedOut, _ := json.Marshal(tasks.Result{State: tasks.StateDone, Phase: tasks.PhaseDelete, ExitCode: 124, TimedOut: true,
		Stdout: "head...tail", StdoutOmitted: 4096})
	running, _ := json.Marshal(tasks.Result{State: tasks.StateRunning, Phase: tasks.PhaseExec, Attempt: 2,
		Error: "smolvm exec: exit status 1"})
	warm, _ := json.Marshal(tasks.Result{State: tasks.StateDone, Phase: tasks.PhaseDelete, VM: "bq-d-warm_0a_1b", Warm: true,
		SkippedPhases: []string{"create", "start", "ready"}, Attempt: 1})

	for _, tt := range []struct {
		name     string
		taskType string
		result   string
		want     []string // lines or parts of lines, in order
		wantRaw  bool     // shown as is
	}{
		{name: "done, from the task list", taskType: tasks.TypeAgentRun, result: string(done), want: []string{
			"done, exit code: 3\n",
			"commit: /var/lib/bottleq/commits/t1.smolmachine\n",
			"host: worker-1\n", "vm: bq-t1\n", "smolvm: 1.8.0\n",
			"attempt: 1, pack: cached\n",
			"phases (total 15.5s):\n", "  pack        1.5s\n", "  exec       12.0s\n", "  commit      2.0s\n",
			"stdout:\nagent says hello\n",
			"stderr:\nwarning: dry run",
		}},
		{name: "done, from the detail view (no type)", taskType: "", result: string(done), want: []string{"done, exit code: 3\n", "commit: /var/lib/bottleq/commits/t1.smolmachine\n"}},
		{name: "timed out, no commit", taskType: tasks.TypeAgentRun, result: string(timedOut), want: []string{
			"done, exit code: 124 (timed out)\n", "commit: none\n", "attempt: 0, pack: built\n",
			"stdout (4096 bytes omitted from the middle):\nhead...tail",
		}},
		{name: "running with an error", taskType: "", result: string(running), want: []string{
			"running, phase: exec\n", "error: smolvm exec: exit status 1\n", "attempt: 2, pack: built",
		}},
		{name: "warm", taskType: tasks.TypeAgentRun, result: string(warm), want: []string{
			"vm: bq-d-warm_0a_1b\n", "warm VM: create, start, ready skipped\n", "attempt: 1",
		}},
		{name: "other task type", taskType: "email:send", result: string(done), wantRaw: true},
		{name: "not JSON", taskType: tasks.TypeAgentRun, result: "plain text", wantRaw: true},
		{name: "JSON but not a Result", taskType: "", result: `{"ok":true}`, wantRaw: true},
		{name: "unknown state", taskType: "", result: `{"state":"weird","phase":"exec"}`, wantRaw: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := FormatResult(tt.taskType, []byte(tt.result))
			if tt.wantRaw {
				if got != tt.result {
					t.Errorf("got %q, want the result as is", got)
				}
				return
			}
			rest := got
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("lacks %q (in order); got:\n%s", w, got)
				}
				rest = rest[i+len(w):]
			}
		})
	}
	if got := FormatResult(tasks.TypeAgentRun, []byte{0xff, 0x00}); got != "non-printable bytes" {
		t.Errorf("binary result: got %q, want asynqmon's default", got)
	}
}

func TestFormatPayload(t *testing.T) {
	const secret = "sk-secret-format-test"
	content := []byte("file content, not for the UI")
	withSecrets := `{"image":"alpine:3","command":["sh","-c","echo hi"],"timeout":"90s",` +
		`"env":{"API_KEY":"` + secret + `","B":"<b>"},` +
		`"files":[{"path":"/in/a.txt","content":"` + base64.StdEncoding.EncodeToString(content) + `","mode":"0600"},{"path":"/in/empty","content":""}]}`
	const redacted = `{"image":"alpine:3","command":["sh","-c","echo hi"],"timeout":"1m30s",` +
		`"env":{"API_KEY":"<redacted>","B":"<redacted>"},` +
		`"files":[{"path":"/in/a.txt","content":"<28 bytes>","mode":"0600"},{"path":"/in/empty","content":"<0 bytes>"}]}`

	for _, tt := range []struct {
		name     string
		taskType string
		payload  string
		want     string
	}{
		{"agent:run", tasks.TypeAgentRun, withSecrets, redacted},
		{"no type, an agent:run payload", "", withSecrets, redacted},
		{"no env, no files", tasks.TypeAgentRun, `{"from":"task:t1","command":["true"],"commit":false}`,
			`{"from":"task:t1","command":["true"],"commit":false}`},
		{"decodes but invalid: shown, so its archived error makes sense", tasks.TypeAgentRun,
			`{"image":"alpine:3","command":["x"],"env":{"K":"` + secret + `"},"files":[{"path":"relative","content":""}]}`,
			`{"image":"alpine:3","command":["x"],"env":{"K":"<redacted>"},"files":[{"path":"relative","content":"<0 bytes>"}]}`},
		{"other task type", "email:send", withSecrets, hiddenPayload},
		{"no type, JSON without a command", "", `{"env":{"K":"` + secret + `"}}`, hiddenPayload},
		{"no type, other JSON", "", `{"password":"` + secret + `"}`, hiddenPayload},
		{"unknown field", tasks.TypeAgentRun, `{"command":["x"],"token":"` + secret + `"}`, hiddenPayload},
		{"data after the object", tasks.TypeAgentRun, `{"command":["x"]} {"env":{"K":"` + secret + `"}}`, hiddenPayload},
		{"bad timeout", tasks.TypeAgentRun, `{"command":["x"],"env":{"K":"` + secret + `"},"timeout":"soon"}`, hiddenPayload},
		{"env value not a string", tasks.TypeAgentRun, `{"command":["x"],"env":{"K":["` + secret + `"]}}`, hiddenPayload},
		{"not JSON", tasks.TypeAgentRun, secret, hiddenPayload},
		{"JSON null", tasks.TypeAgentRun, "null", hiddenPayload},
		{"JSON string", tasks.TypeAgentRun, `"` + secret + `"`, hiddenPayload},
		{"empty", tasks.TypeAgentRun, "", hiddenPayload},
		{"binary", tasks.TypeAgentRun, "\xff\x00" + secret, hiddenPayload},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := FormatPayload(tt.taskType, []byte(tt.payload))
			if got != tt.want {
				t.Errorf("FormatPayload(%q, %s)\n got: %s\nwant: %s", tt.taskType, tt.payload, got, tt.want)
			}
			for _, leak := range []string{secret, string(content), base64.StdEncoding.EncodeToString(content)} {
				if strings.Contains(got, leak) {
					t.Errorf("shows %q: %s", leak, got)
				}
			}
		})
	}
}
