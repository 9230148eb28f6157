package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hibiken/asynqmon"

	"github.com/bot-bottle/bottleq/tasks"
)

// FormatResult renders an agent:run task's result (tasks.Result JSON) as
// short lines for the task detail view: state and exit code first, then
// the commit, where it ran, the phases with their durations, and the
// command's output. Other task types, and results that are not a
// tasks.Result, are shown as asynqmon shows them by default.
//
// asynqmon v0.7.2 passes an empty taskType from its task detail API (only
// its task lists pass the type), so an empty type is taken as "maybe
// agent:run" and the result itself must look like a tasks.Result.
func FormatResult(taskType string, result []byte) string {
	r, ok := parseResult(taskType, result)
	if !ok {
		return asynqmon.DefaultResultFormatter.FormatResult(taskType, result)
	}
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	switch r.State {
	case tasks.StateDone:
		exit := fmt.Sprintf("exit code: %d", r.ExitCode)
		if r.TimedOut {
			exit += " (timed out)"
		}
		line("done, %s", exit)
	default:
		line("running, phase: %s", r.Phase)
	}
	if r.Error != "" {
		line("error: %s", r.Error)
	}
	if r.Commit != "" {
		line("commit: %s", r.Commit)
	} else if r.State == tasks.StateDone {
		line("commit: none")
	}
	if r.Host != "" {
		line("host: %s", r.Host)
	}
	if r.VM != "" {
		line("vm: %s", r.VM)
	}
	if r.SmolvmVersion != "" {
		line("smolvm: %s", r.SmolvmVersion)
	}
	pack := "built"
	if r.PackCached {
		pack = "cached"
	}
	line("attempt: %d, pack: %s", r.Attempt, pack)
	if len(r.Phases) > 0 {
		var total float64
		for _, p := range r.Phases {
			total += p.Seconds
		}
		line("phases (total %.1fs):", total)
		for _, p := range r.Phases {
			line("  %-7s %7.1fs", p.Name, p.Seconds)
		}
	}
	output("stdout", r.Stdout, r.StdoutOmitted, line)
	output("stderr", r.Stderr, r.StderrOmitted, line)
	return strings.TrimSuffix(b.String(), "\n")
}

// parseResult decodes result as a tasks.Result when it is one.
func parseResult(taskType string, result []byte) (tasks.Result, bool) {
	var r tasks.Result
	if taskType != tasks.TypeAgentRun && taskType != "" {
		return r, false
	}
	if err := json.Unmarshal(result, &r); err != nil {
		return r, false
	}
	switch r.State {
	case tasks.StateDone, tasks.StateRunning:
		return r, r.Phase != ""
	}
	return r, false
}

// output adds a stream's head and tail under a heading, or nothing when the
// stream was empty.
func output(name, text string, omitted int64, line func(string, ...any)) {
	if text == "" && omitted == 0 {
		return
	}
	if omitted > 0 {
		line("%s (%d bytes omitted from the middle):", name, omitted)
	} else {
		line("%s:", name)
	}
	line("%s", strings.TrimSuffix(text, "\n"))
}
