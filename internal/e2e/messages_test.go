package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestMessagesTellWhatHappens: the worker's log and enqueue --wait say what
// became of a failed task. A task whose `machine start` always fails, with
// --max-retry 2, is logged "will retry" on its first two attempts and
// "archived" on its last; an image this worker does not pull is logged
// once, as invalid input; asynq's own "Retry exhausted" is no warning;
// --wait's last line is the user's message, without asynq's text.
func TestMessagesTellWhatHappens(t *testing.T) {
	t.Parallel()
	s := newStack(t, "redis-server", "1.9.3")
	w := s.worker("SMOLVM_SIM_FAULTS=start:1+:1:agent operation failed: start machine: kvm not available")

	_, stderr, code := s.enqueue("--task-id", "doomed", "--max-retry", "2", "--wait", "--image", "alpine:3", "--", "true")
	last := lastLine(stderr)
	if code != 1 || !strings.HasPrefix(last, "enqueue: task doomed failed: smolvm machine start ") ||
		!strings.HasSuffix(last, "kvm not available") {
		t.Errorf("exit %d, --wait's last line %q", code, last)
	}
	_, stderr, code = s.enqueue("--task-id", "bad", "--wait", "--image", "evil.example/agent:1", "--", "true")
	want := `enqueue: task bad failed: image: "evil.example/agent:1" is on registry evil.example, which this worker does not pull from; it pulls from docker.io, ghcr.io, quay.io`
	if last := lastLine(stderr); code != 1 || last != want {
		t.Errorf("exit %d, --wait's last line\n%q\nwant\n%q", code, last, want)
	}

	var doomed, bad []string
	for _, line := range strings.Split(strings.TrimSpace(w.logs.String()), "\n") {
		var l struct {
			Level, Message string
			TaskID         string `json:"task_id"`
			Attempt        int
		}
		if json.Unmarshal([]byte(line), &l) != nil {
			continue // not the worker's JSON: the harness's own lines
		}
		switch {
		case strings.Contains(l.Message, "Retry exhausted"):
			t.Errorf("asynq's archive line reached the log: %s", line)
		case l.TaskID == "doomed" && (l.Level == "warn" || l.Level == "error"):
			doomed = append(doomed, fmt.Sprintf("%s %d %s", l.Level, l.Attempt, l.Message))
		case l.TaskID == "bad" && (l.Level == "warn" || l.Level == "error"):
			bad = append(bad, l.Level+" "+l.Message)
		}
	}
	wantDoomed := []string{
		"warn 1 task failed; asynq will retry it (attempt 1 of 3)",
		"warn 2 task failed; asynq will retry it (attempt 2 of 3)",
		"error 3 task failed on its last attempt (3 of 3); archived",
	}
	if strings.Join(doomed, "\n") != strings.Join(wantDoomed, "\n") {
		t.Errorf("the failing task's warnings:\n%s\nwant\n%s", strings.Join(doomed, "\n"), strings.Join(wantDoomed, "\n"))
	}
	if len(bad) != 1 || bad[0] != "warn invalid input; archived without retry" {
		t.Errorf("the invalid task's warnings: %q, want one, invalid input", bad)
	}
}
