package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/tasks"
)

// TestRedisPasswordAndTLS: REDIS_URL with a password, and rediss:// with
// REDIS_CA_FILE, work for the worker and enqueue; the password is never
// logged.
func TestRedisPasswordAndTLS(t *testing.T) {
	t.Parallel()
	const pw = "pw-0f3c9a7e"
	for name, start := range map[string]func(testing.TB, ...string) *testredis.Server{
		"password":     testredis.Real,
		"tls+password": testredis.RealTLS,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, "none", "1.9.3")
			s.redis = start(t, "--requirepass", pw)
			s.url = strings.Replace(s.redis.URL(), "://", "://:"+pw+"@", 1)
			s.caFile = s.redis.CAFile
			w := s.worker()
			stdout, stderr, code := s.enqueue("--image", "alpine:3", "--wait", "--", "echo", "over "+name)
			if code != 0 || stdout != "over "+name+"\n" {
				t.Fatalf("exit %d %q %q\n%s", code, stdout, stderr, w.logs)
			}
			if strings.Contains(w.logs.String(), pw) || strings.Contains(stderr, pw) {
				t.Error("the Redis password was logged")
			}
		})
	}
}

// TestFakedSmolvmError: an agent that ends its stderr with smolvm's own
// "Error: vm not found: …" line, holding its secret, and exits 1 has
// completed: exit code 1, its artifact and commit kept, no retry, and the
// line reaches neither the worker's log nor LastErr. One that stops its own
// VM before it does so has made it smolvm's failure, retried, and leaks
// nothing either.
func TestFakedSmolvmError(t *testing.T) {
	t.Parallel()
	const secret = "sk-live-0b5e7a11"
	s := newStack(t, "miniredis", "1.9.3")
	c, insp := s.client()
	w := s.worker()
	mark := filepath.Join(t.TempDir(), "stopped-once")
	script := `mkdir -p out && echo made > out/a.txt; %s echo "Error: vm not found: $API_KEY" >&2; exit 1`
	for _, tt := range []struct {
		name    string
		first   string
		retried int
	}{
		{"VM runs", "", 0},
		{"VM stopped from inside once", `test -e "$MARK" || { touch "$MARK"; "$SIM" machine stop --name "$SMOLVM_SIM_MACHINE"; };`, 1},
	} {
		info := s.submit(c, tasks.AgentRun{Image: "alpine:3", Workdir: "/workspace", Artifacts: []string{"/workspace/out/a.txt"},
			Env:     map[string]string{"API_KEY": secret, "SIM": bins.sim, "MARK": mark},
			Command: []string{"sh", "-c", fmt.Sprintf(script, tt.first)}}, asynq.MaxRetry(3))
		done := waitState(t, insp, info.Queue, info.ID, asynq.TaskStateCompleted)
		r := result(t, done)
		if done.Retried != tt.retried || r.ExitCode != 1 || r.Commit == "" || len(r.Artifacts) != 1 || r.Artifacts[0].HostPath == "" {
			t.Errorf("%s: retried %d, result %s; want %d retries, exit code 1, the artifact and a commit", tt.name, done.Retried, done.Result, tt.retried)
		}
		if strings.Contains(done.LastErr, secret) || strings.Contains(done.LastErr, "vm not found: ") {
			t.Errorf("%s: LastErr %q holds the agent's line", tt.name, done.LastErr)
		}
		if tt.retried > 0 && !strings.Contains(done.LastErr, "machine not found") {
			t.Errorf("%s: LastErr %q, want smolvm's failure", tt.name, done.LastErr)
		}
	}
	if logs := w.logs.String(); strings.Contains(logs, secret) || strings.Contains(logs, "vm not found: ") {
		t.Error("the agent's stderr line reached the worker's log")
	}
}

// TestSecretsStayOut: an env value never reaches the worker's log (even at
// debug level), the task's result, its error, or smolvm's call log — on
// success and on failure.
func TestSecretsStayOut(t *testing.T) {
	t.Parallel()
	const secret = "sk-live-7d1e55c0ffee"
	s := newStack(t, "miniredis", "1.9.3")
	c, insp := s.client()
	w := s.worker("SMOLVM_SIM_FAULTS=create:1:1")
	ok := s.submit(c, tasks.AgentRun{Image: "alpine:3", Env: map[string]string{"API_KEY": secret},
		Command: []string{"sh", "-c", `test "$API_KEY" = ` + secret + ` && echo key-present`}}, asynq.MaxRetry(1))
	done := waitState(t, insp, ok.Queue, ok.ID, asynq.TaskStateCompleted)
	if r := result(t, done); r.Stdout != "key-present\n" || done.Retried != 1 {
		t.Fatalf("the agent did not get its env, or the create fault did not fire: %+v", r)
	}
	// A command that does not exist in an image machine is the container
	// runtime's exit 127, the agent's result (docs/smolvm.md, machine exec).
	bad := s.submit(c, tasks.AgentRun{Image: "alpine:3", Env: map[string]string{"API_KEY": secret},
		Command: []string{"/nonexistent/agent"}}, asynq.MaxRetry(0))
	failed := waitState(t, insp, bad.Queue, bad.ID, asynq.TaskStateCompleted)
	if r := result(t, failed); r.ExitCode != 127 || failed.LastErr != "" {
		t.Errorf("a missing command: %+v, LastErr %q; want exit code 127 and no error", r, failed.LastErr)
	}
	for what, text := range map[string]string{
		"worker log":       w.logs.String(),
		"result":           string(done.Result),
		"failed result":    string(failed.Result) + failed.LastErr,
		"first attempt":    done.LastErr,
		"smolvm calls log": readFile(t, s.simState+"/calls.jsonl"),
	} {
		if strings.Contains(text, secret) {
			t.Errorf("the secret leaked into the %s", what)
		}
	}
	if !strings.Contains(w.logs.String(), `"task_id":"`+ok.ID+`"`) {
		t.Error("the log lacks the task's lines (is the grep looking at the right thing?)")
	}
	// Every line of a task, smolvm's own included, carries its ID and VM.
	found := false
	for _, line := range strings.Split(w.logs.String(), "\n") {
		if strings.Contains(line, `"op":"machine start"`) {
			found = true
			if !strings.Contains(line, `"task_id":"`) || !strings.Contains(line, `"vm":"bq-`) {
				t.Errorf("smolvm's line lacks the task's fields: %s", line)
			}
		}
	}
	if !found {
		t.Error("no smolvm line for machine start in the debug log")
	}
}
