package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hibiken/asynqmon"

	"github.com/bot-bottle/bottleq/tasks"
)

// FormatResult renders an agent:run task's result (tasks.Result JSON) as
// short lines for the task detail view: state and exit code first, then
// the commit, where it ran (and whether in a warm VM, which phases that
// skipped), the phases with their durations, and the command's output. Other task types, and results that are not a
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
	if r.Warm {
		line("warm VM: %s skipped", strings.Join(r.SkippedPhases, ", "))
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

// hiddenPayload is what FormatPayload shows for a payload that is not an
// agent:run payload: it may hold anything, so none of it is shown.
const hiddenPayload = "<payload hidden: not an agent:run payload>"

// FormatPayload renders a task's payload for the UI and its /api without
// secrets. An agent:run payload is shown as its JSON with each env value
// replaced by "<redacted>" (the keys are kept) and each file's content by
// its size ("<12 bytes>"); bottleq treats every env value as a secret, and
// file content is bulky and may be one too. Anything else, including a
// payload of another task type and an agent:run payload that does not
// decode, is shown as hiddenPayload, never as is.
//
// As with FormatResult, an empty taskType is taken as "maybe agent:run":
// the payload is shown redacted when it decodes as one with a command.
func FormatPayload(taskType string, payload []byte) string {
	if taskType != tasks.TypeAgentRun && taskType != "" {
		return hiddenPayload
	}
	p, ok := parsePayload(payload)
	if !ok || (taskType == "" && len(p.Command) == 0) {
		return hiddenPayload
	}
	var shown redactedPayload
	if len(p.Env) > 0 {
		shown.Env = make(map[string]string, len(p.Env))
		for k := range p.Env {
			shown.Env[k] = "<redacted>"
		}
	}
	for _, f := range p.Files {
		shown.Files = append(shown.Files, redactedFile{Path: f.Path, Content: fmt.Sprintf("<%d bytes>", len(f.Content)), Mode: f.Mode})
	}
	// The embedded payload keeps no secret even if a method of AgentRun
	// ever took over its JSON.
	p.Env, p.Files = nil, nil
	shown.AgentRun = p
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // "<redacted>", not "\u003credacted\u003e"
	if err := enc.Encode(shown); err != nil {
		return hiddenPayload
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// parsePayload decodes payload as an agent:run payload the way the worker
// does (one JSON object, unknown fields rejected) but without validating
// it, so that an archived invalid task still shows what it asked for.
func parsePayload(payload []byte) (tasks.AgentRun, bool) {
	var p tasks.AgentRun
	if trimmed := bytes.TrimSpace(payload); len(trimmed) == 0 || trimmed[0] != '{' {
		return p, false
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil || dec.More() {
		return tasks.AgentRun{}, false
	}
	return p, true
}

// redactedPayload is an agent:run payload as FormatPayload shows it. Its
// Env and Files hide those of the embedded AgentRun in JSON.
type redactedPayload struct {
	tasks.AgentRun
	Env   map[string]string `json:"env,omitempty"`
	Files []redactedFile    `json:"files,omitempty"`
}

// redactedFile is a tasks.File with its content replaced by its size.
type redactedFile struct {
	Path    string `json:"path"`
	Content string `json:"content"`
	Mode    string `json:"mode,omitempty"`
}
