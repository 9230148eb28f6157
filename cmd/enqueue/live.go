package main

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/tasks"
)

// phaseWhat says what each phase does, after its name in a progress line.
var phaseWhat = map[string]string{
	tasks.PhasePack:      "getting the VM's pack",
	tasks.PhaseCreate:    "creating the VM",
	tasks.PhaseStart:     "starting the VM",
	tasks.PhaseReady:     "waiting for the VM to run commands",
	tasks.PhaseFiles:     "copying files in",
	tasks.PhaseExec:      "running the command",
	tasks.PhaseArtifacts: "copying artifacts out",
	tasks.PhaseStop:      "stopping the VM to commit its state",
	tasks.PhaseCommit:    "committing the VM's state",
	tasks.PhaseDelete:    "deleting the VM",
}

// liveView shows a task's live output as --wait and wait print it: the
// agent's stdout and stderr as they are, and a line on stderr, "bottleq:
// task ID: …", for each phase and each attempt that does not simply go on.
type liveView struct {
	id             string
	mu             *sync.Mutex // shared with the other lines on stderr
	stdout, stderr io.Writer

	// attempt is the attempt under way, 0 before the first; cut says its
	// output was not all streamed.
	attempt int
	cut     bool
	// starts counts the deliveries seen of each attempt.
	starts map[int]int
	// midLine: the agent's stderr so far does not end with a newline.
	midLine bool
}

func newLiveView(id string, mu *sync.Mutex, stdout, stderr io.Writer) *liveView {
	return &liveView{id: id, mu: mu, stdout: stdout, stderr: stderr, starts: map[int]int{}}
}

// say prints one progress line on stderr, on a line of its own.
func (v *liveView) say(format string, a ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.sayLocked(format, a...)
}

func (v *liveView) sayLocked(format string, a ...any) {
	if v.midLine {
		_, _ = io.WriteString(v.stderr, "\n")
		v.midLine = false
	}
	fmt.Fprintf(v.stderr, "bottleq: task %s: "+format+"\n", append([]any{v.id}, a...)...)
}

// show is enqueue.Client.Follow's fn.
func (v *liveView) show(e enqueue.Event) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch e.Type {
	case enqueue.EventAttempt:
		v.attempt, v.cut = e.Attempt, false
		v.starts[e.Attempt]++
		switch {
		case v.starts[e.Attempt] > 1:
			v.sayLocked("attempt %d starts again%s", e.Attempt, onHost(e.Host))
		case e.Attempt > 1:
			v.sayLocked("attempt %d starts%s", e.Attempt, onHost(e.Host))
		}
	case enqueue.EventPhase:
		line := e.Phase
		if what := phaseWhat[e.Phase]; what != "" {
			line += " (" + what + ")"
		}
		if e.Attempt > 1 {
			line += fmt.Sprintf(", attempt %d", e.Attempt)
		}
		v.sayLocked("%s", line)
	case enqueue.EventOutput:
		if e.Stream == enqueue.StreamStderr {
			_, _ = v.stderr.Write(e.Data)
			if len(e.Data) > 0 {
				v.midLine = e.Data[len(e.Data)-1] != '\n'
			}
		} else {
			_, _ = v.stdout.Write(e.Data)
		}
	case enqueue.EventTruncated:
		v.cut = true
		dropped := droppedBytes(e.StdoutDropped, e.StderrDropped)
		if e.Reason == enqueue.ReasonCap {
			v.sayLocked("live output reached the task's cap: no more of its output is shown as it comes (%s dropped so far)", dropped)
		} else {
			v.sayLocked("%s of output not shown: Redis fell behind the agent", dropped)
		}
	case enqueue.EventEnd:
		where := ""
		if e.Phase != "" {
			where = " in phase " + e.Phase
		}
		switch e.Outcome {
		case enqueue.AttemptFailed:
			v.sayLocked("attempt %d failed%s: %s", e.Attempt, where, oneLine(e.Error))
		case enqueue.AttemptStopped:
			v.sayLocked("attempt %d was stopped%s (a cancel, its worker's shutdown, or the task's deadline)", e.Attempt, where)
		}
	}
	return nil
}

func onHost(host string) string {
	if host == "" {
		return ""
	}
	return " on host " + host
}

func droppedBytes(stdout, stderr int64) string {
	var parts []string
	if stdout > 0 {
		parts = append(parts, fmt.Sprintf("%d bytes of stdout", stdout))
	}
	if stderr > 0 {
		parts = append(parts, fmt.Sprintf("%d bytes of stderr", stderr))
	}
	if len(parts) == 0 {
		return "0 bytes"
	}
	return strings.Join(parts, " and ")
}

// streamed tells whether the output of attempt, the one the task's result
// is of, was shown whole as it came: then the result's copy is not
// printed again.
func (v *liveView) streamed(attempt int) (shown, whole bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	shown = v.attempt == attempt && attempt > 0
	return shown, shown && !v.cut
}

// endLine ends the agent's stderr with a newline if it did not, before
// lines that follow the output.
func (v *liveView) endLine() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.midLine {
		_, _ = io.WriteString(v.stderr, "\n")
		v.midLine = false
	}
}
