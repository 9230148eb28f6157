package main

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hibiken/asynqmon"

	"github.com/bot-bottle/bottleq/tasks"
)

// lineWidth is about what asynqmon's result and payload boxes (400 px of
// monospace) show without scrolling; the formatters keep their own text
// within it where they can.
const lineWidth = 46

// summaryWidth is what the result column of asynqmon's task list shows of
// a line in a window 1440 px wide.
const summaryWidth = 36

// formatResult renders an agent:run task's result (tasks.Result JSON) as
// short lines. Other task types, and results that are not a tasks.Result,
// are shown as asynqmon shows them by default.
//
// asynqmon v0.7.2 passes the task type from its task lists and an empty
// type from its task detail API, and formatResult uses that: a list row
// gets a summary of two or three lines (exit code, total time, where it
// ran, the error or the output's last line), the task page the whole
// result (see detail). An empty type is also why the result itself must
// look like a tasks.Result to be taken as one.
func formatResult(taskType string, result []byte) string {
	r, ok := parseResult(taskType, result)
	if !ok {
		return asynqmon.DefaultResultFormatter.FormatResult(taskType, result)
	}
	if taskType == "" {
		return detail(r)
	}
	return summary(r)
}

// summary is a result as a task list row shows it.
func summary(r tasks.Result) string {
	var lines []string
	first := "running: " + r.Phase
	if r.State == tasks.StateDone {
		first = fmt.Sprintf("exit code %d", r.ExitCode)
		if r.TimedOut {
			first += ", timed out"
		}
	}
	if len(r.Phases) > 0 {
		first += " · " + formatDuration(total(r.Phases))
	}
	lines = append(lines, first)
	if r.Host != "" {
		where := []string{"on " + elide(r.Host, 16)}
		if r.Commit != "" {
			where = append(where, "committed")
		}
		if n := len(r.Artifacts); n > 0 {
			where = append(where, fmt.Sprintf("%d artifact%s", n, plural(n)))
		}
		lines = append(lines, strings.Join(where, ", "))
	}
	switch {
	case r.Error != "":
		lines = append(lines, "error: "+r.Error)
	case r.ExitCode != 0 && lastLine(r.Stderr) != "":
		lines = append(lines, "stderr: "+lastLine(r.Stderr))
	case lastLine(r.Stdout) != "":
		lines = append(lines, "stdout: "+lastLine(r.Stdout))
	case lastLine(r.Stderr) != "":
		lines = append(lines, "stderr: "+lastLine(r.Stderr))
	}
	for i, l := range lines {
		lines[i] = clipLine(l, summaryWidth)
	}
	return strings.Join(lines, "\n")
}

// detail is a result as the task page shows it: state and exit code
// first, then where it ran, the commit and artifacts, the phases with
// their durations, the egress record and the command's output. Paths on
// the worker are shown relative to its data directory, which is named
// once, and long names (task keys, VM names) lose their middle.
func detail(r tasks.Result) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	switch r.State {
	case tasks.StateDone:
		exit := fmt.Sprintf("exit code %d", r.ExitCode)
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
	var ran []string
	if r.Attempt > 0 {
		ran = append(ran, fmt.Sprintf("attempt %d", r.Attempt))
	}
	if r.Host != "" {
		ran = append(ran, "on "+r.Host)
	}
	ranLine := strings.Join(ran, " ")
	if r.SmolvmVersion != "" {
		ranLine = strings.TrimPrefix(ranLine+", smolvm "+r.SmolvmVersion, ", ")
	}
	if ranLine != "" {
		line("%s", ranLine)
	}
	if r.VM != "" {
		line("vm: %s", elide(r.VM, 24))
	}
	if r.Warm {
		line("warm VM: %s skipped", strings.Join(r.SkippedPhases, ", "))
	}
	data := dataDir(r)
	if data != "" {
		line("data dir: %s", shortenPath(data, ""))
	}
	switch {
	case r.Commit != "":
		line("commit: %s", shortenPath(r.Commit, data))
	case r.State == tasks.StateDone:
		line("commit: none")
	}
	artifacts(r.Artifacts, data, line)
	if len(r.Phases) > 0 {
		pack := "pack built"
		if r.PackCached {
			pack = "pack cached"
		}
		line("phases, %s in total (%s):", formatDuration(total(r.Phases)), pack)
		names, times := 0, 0
		for _, p := range r.Phases {
			names = max(names, len(p.Name))
			times = max(times, len(formatDuration(seconds(p.Seconds))))
		}
		for _, p := range r.Phases {
			line("  %-*s  %*s", names, p.Name, times, formatDuration(seconds(p.Seconds)))
		}
	}
	egress(r.Egress, line)
	output("stdout", r.Stdout, r.StdoutOmitted, line)
	output("stderr", r.Stderr, r.StderrOmitted, line)
	return strings.TrimSuffix(b.String(), "\n")
}

// artifacts adds one line per artifact: the file it became (in the
// directory named in the heading), its size and its guest path, or its
// guest path and why it was not kept.
func artifacts(as []tasks.Artifact, data string, line func(string, ...any)) {
	if len(as) == 0 {
		return
	}
	dir := ""
	for _, a := range as {
		if a.HostPath != "" {
			dir = path.Dir(a.HostPath)
			break
		}
	}
	if dir != "" {
		line("artifacts, in %s/:", shortenPath(dir, data))
	} else {
		line("artifacts:")
	}
	for _, a := range as {
		guest := shortenPath(a.Path, "")
		switch {
		case a.Error != "":
			line("  %s: %s", guest, a.Error)
		case path.Dir(a.HostPath) == dir:
			line("  %s (%s) ← %s", elide(path.Base(a.HostPath), 24), formatSize(a.Size), guest)
		default:
			line("  %s (%s) ← %s", shortenPath(a.HostPath, data), formatSize(a.Size), guest)
		}
	}
}

// egress adds the egress record: the hosts reached, then those refused,
// one line per host:port.
func egress(e *tasks.EgressRecord, line func(string, ...any)) {
	if e == nil {
		return
	}
	for _, allowed := range []bool{true, false} {
		heading := false
		for _, en := range e.Entries {
			if en.Allowed != allowed {
				continue
			}
			if !heading {
				line("egress %s:", map[bool]string{true: "allowed", false: "refused"}[allowed])
				heading = true
			}
			if allowed {
				line("  %s:%d ×%d, ↑%s ↓%s", en.Host, en.Port, en.Count, formatSize(en.BytesUp), formatSize(en.BytesDown))
			} else {
				line("  %s:%d ×%d: %s", en.Host, en.Port, en.Count, en.Reason)
			}
		}
	}
	if e.Invalid > 0 {
		line("egress refused %d request%s to invalid host names", e.Invalid, plural(e.Invalid))
	}
	if e.Truncated > 0 {
		line("egress: %d more attempt%s not listed", e.Truncated, plural(e.Truncated))
	}
}

// output adds a stream's head and tail under a heading, or nothing when the
// stream was empty.
func output(name, text string, omitted int64, line func(string, ...any)) {
	if text == "" && omitted == 0 {
		return
	}
	if omitted > 0 {
		line("%s (%s omitted from the middle):", name, formatSize(omitted))
	} else {
		line("%s:", name)
	}
	line("%s", strings.TrimSuffix(text, "\n"))
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

// dataDir is the worker's data directory, as the result's commit or
// artifact paths show it (DIR/commits/..., DIR/artifacts/...), or "".
func dataDir(r tasks.Result) string {
	under := func(p, sub string) string {
		if i := strings.LastIndex(p, "/"+sub+"/"); i > 0 {
			return p[:i]
		}
		return ""
	}
	if d := under(r.Commit, "commits"); d != "" {
		return d
	}
	for _, a := range r.Artifacts {
		if d := under(a.HostPath, "artifacts"); d != "" {
			return d
		}
	}
	return ""
}

// shortenPath returns p relative to dir when it lies under it, with each
// long element shortened by elide (keeping a file's extension), and with
// middle elements dropped ("/a/…/y/z") while it is still over lineWidth.
func shortenPath(p, dir string) string {
	if dir != "" && strings.HasPrefix(p, dir+"/") {
		p = p[len(dir)+1:]
	}
	elems := strings.Split(p, "/")
	for i, e := range elems {
		ext := path.Ext(e)
		if len(ext) > 13 || ext == e {
			ext = ""
		}
		elems[i] = elide(strings.TrimSuffix(e, ext), 16) + ext
	}
	short := strings.Join(elems, "/")
	// Keep the first element (after the root) and at least the last two.
	head := 1
	if elems[0] == "" {
		head = 2
	}
	for tail := len(elems) - head - 1; utf8.RuneCountInString(short) > lineWidth && tail >= 2; tail-- {
		short = strings.Join(append(append(elems[:head:head], "…"), elems[len(elems)-tail:]...), "/")
	}
	return short
}

// elide shortens s to n runes by replacing its middle with "…".
func elide(s string, n int) string {
	r := []rune(s)
	if len(r) <= n || n < 3 {
		return s
	}
	head := n / 2
	tail := n - 1 - head
	return string(r[:head]) + "…" + string(r[len(r)-tail:])
}

// formatDuration shows d in milliseconds under a second ("12 ms"), in
// seconds with milliseconds under a minute ("1.234 s"), and in minutes
// and seconds from there ("2 min 05 s").
func formatDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0 ms"
	case d < time.Millisecond:
		return "<1 ms"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Round(time.Millisecond)/time.Millisecond)
	case d < time.Minute:
		return fmt.Sprintf("%.3f s", d.Seconds())
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%d min %02d s", d/time.Minute, d%time.Minute/time.Second)
	default:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%d h %02d min", d/time.Hour, d%time.Hour/time.Minute)
	}
}

// seconds converts a phase's float seconds to a Duration.
func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// total is the sum of the phases' durations.
func total(ps []tasks.PhaseTime) time.Duration {
	var t time.Duration
	for _, p := range ps {
		t += seconds(p.Seconds)
	}
	return t
}

// formatSize shows n bytes compactly: "512 B", "1.5 KiB", "40 MiB".
func formatSize(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n), ""
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v, unit = v/1024, u
		if v < 1024 {
			break
		}
	}
	if v < 10 {
		return strings.TrimSuffix(fmt.Sprintf("%.1f", v), ".0") + " " + unit
	}
	return fmt.Sprintf("%.0f %s", v, unit)
}

// lastLine is the last non-blank line of s, without control characters
// (an agent's colours and carriage returns).
func lastLine(s string) string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(strings.Map(func(r rune) rune {
			if r == '\t' {
				return ' '
			}
			if unicode.IsControl(r) {
				return -1
			}
			return r
		}, stripANSI(lines[i])))
		if l != "" {
			return l
		}
	}
	return ""
}

// stripANSI removes ANSI escape sequences (ESC [ ... letter) from s.
func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && !(s[j] >= 0x40 && s[j] <= 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// clipLine cuts s to n runes, ending it with "…" when cut.
func clipLine(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return strings.TrimRight(string(r[:n-1]), " ") + "…"
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
