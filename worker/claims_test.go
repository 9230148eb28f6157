package worker

import (
	"context"
	"testing"

	"github.com/bot-bottle/bottleq/tasks"
)

// TestSimSecondRunWins: through the real client and simulator, the same
// attempt run twice after one another, as asynq's at-least-once delivery
// may, leaves one commit, the second run's: a task from it reads what the
// second run wrote.
func TestSimSecondRunWins(t *testing.T) {
	t.Parallel()
	h, _, _ := simHandler(t, nil)
	var commits []string
	for _, word := range []string{"first", "second"} {
		p := tasks.AgentRun{Image: "alpine:3", Workdir: "/work", Command: []string{"sh", "-c", "echo " + word + " > run.txt"}}
		var w results
		if err := h.Run(context.Background(), Meta{ID: "twice"}, payload(t, p), &w); err != nil {
			t.Fatalf("%s run: %v", word, err)
		}
		commits = append(commits, w.result(t).Commit)
	}
	if commits[0] == "" || commits[0] != commits[1] {
		t.Fatalf("commits %q: want both runs to commit to one path", commits)
	}
	var w results
	p := tasks.AgentRun{From: "task:twice", Workdir: "/work", Commit: tasks.Bool(false), Command: []string{"cat", "run.txt"}}
	if err := h.Run(context.Background(), Meta{ID: "reader"}, payload(t, p), &w); err != nil {
		t.Fatal(err)
	}
	if got := w.result(t).Stdout; got != "second\n" {
		t.Errorf("a task from the commit read %q, want the second run's %q", got, "second\n")
	}
}
