package smolvm

import (
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The functions in this file build smolvm's argv (without the binary) from
// input that has already been validated. They are pure: no I/O, no process,
// deterministic output. Each flag that repeats is written once per value,
// because clap takes one value per occurrence.

func packImageArgv(image, out string) []string {
	return []string{"pack", "create", "--image", image, "-o", out}
}

func packFromVMArgv(name, out string) []string {
	return []string{"pack", "create", "--from-vm", name, "-o", out}
}

// createArgv writes create's options in one fixed order: --name, --from,
// resources, egress (--net, --allow-cidr..., --outbound-localhost-only,
// --dns), --label... and -e... sorted by key, then the positional name in
// the positional dialect.
func createArgv(d Dialect, name string, o CreateOptions) []string {
	argv := []string{"machine", "create"}
	if d == DialectNamed {
		argv = append(argv, "--name", name)
	}
	if o.From != "" {
		argv = append(argv, "--from", o.From)
	}
	if o.CPUs > 0 {
		argv = append(argv, "--cpus", strconv.Itoa(o.CPUs))
	}
	if o.MemoryMiB > 0 {
		argv = append(argv, "--mem", strconv.Itoa(o.MemoryMiB))
	}
	// --net is explicit: smolvm before 1.8.0 does not derive it from
	// --allow-cidr when --from is set.
	if len(o.AllowCIDRs) > 0 {
		argv = append(argv, "--net")
	}
	for _, p := range o.AllowCIDRs {
		argv = append(argv, "--allow-cidr", p.String())
	}
	if o.LocalhostOnly {
		argv = append(argv, "--outbound-localhost-only")
	}
	if o.DNS.IsValid() {
		argv = append(argv, "--dns", o.DNS.String())
	}
	argv = appendPairs(argv, "--label", o.Labels)
	argv = appendEnv(argv, o.Env)
	if d == DialectPositional {
		argv = append(argv, name)
	}
	return argv
}

func startArgv(name string) []string { return []string{"machine", "start", "--name", name} }

func stopArgv(name string) []string { return []string{"machine", "stop", "--name", name} }

// deleteArgv always passes -f: without it smolvm asks for confirmation on
// stdin, and a non-TTY answer keeps the machine (≤ 1.16) or fails (≥ 1.17).
func deleteArgv(d Dialect, name string) []string {
	if d == DialectPositional {
		return []string{"machine", "delete", "-f", name}
	}
	return []string{"machine", "delete", "--name", name, "-f"}
}

// execArgv puts every option before "--": the command is clap's trailing
// var-arg, so anything after it that looks like a flag stays the guest's.
// exec's --name has no -n short form in any release.
func execArgv(name string, command []string, o ExecOptions) []string {
	argv := []string{"machine", "exec", "--name", name}
	argv = appendEnv(argv, o.Env)
	if o.Workdir != "" {
		argv = append(argv, "-w", o.Workdir)
	}
	if o.Timeout > 0 {
		argv = append(argv, "--timeout", formatDuration(o.Timeout))
	}
	if o.Stream {
		argv = append(argv, "--stream")
	}
	argv = append(argv, "--")
	return append(argv, command...)
}

func cpArgv(src, dst string) []string { return []string{"machine", "cp", src, dst} }

// copyInArgv uploads host to MACHINE:GUEST. smolvm ≥ 1.9.3 sets the file's
// mode with --mode OCTAL (options before SRC DST); older releases have no
// such flag and get the plain form.
func copyInArgv(v Version, name, host, guest string, mode fs.FileMode) []string {
	if v.Supports(FeatureCpMode) {
		return []string{"machine", "cp", "--mode", formatMode(mode), host, name + ":" + guest}
	}
	return cpArgv(host, name+":"+guest)
}

// copyOutArgv downloads MACHINE:GUEST to host.
func copyOutArgv(name, guest, host string) []string { return cpArgv(name+":"+guest, host) }

// formatMode writes permission bits as four octal digits, "0644", the form
// smolvm's --mode and chmod read.
func formatMode(m fs.FileMode) string { return fmt.Sprintf("%04o", uint32(m.Perm())) }

func lsArgv() []string { return []string{"machine", "ls", "--json"} }

func statusArgv(name string) []string {
	return []string{"machine", "status", "--name", name, "--json"}
}

// appendEnv writes -e KEY=VALUE per entry, sorted by key so the argv is
// deterministic.
func appendEnv(argv []string, env map[string]string) []string { return appendPairs(argv, "-e", env) }

// appendPairs writes flag KEY=VALUE per entry of m, sorted by key.
func appendPairs(argv []string, flag string, m map[string]string) []string {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		argv = append(argv, flag, k+"="+m[k])
	}
	return argv
}

// formatDuration writes d in the humantime form smolvm's --timeout parses:
// whole seconds as "30s", anything else as milliseconds rounded up ("1500ms").
// smolvm rejects a bare number and zero, so the result is at least "1ms".
func formatDuration(d time.Duration) string {
	if d > 0 && d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return fmt.Sprintf("%dms", max(ms, 1))
}

// redact returns a copy of argv with the value of every -e KEY=VALUE
// replaced, so an argv can go into errors and logs.
func redact(argv []string) []string {
	out := slices.Clone(argv)
	for i := 1; i < len(out) && out[i-1] != "--"; i++ {
		if out[i-1] == "-e" || out[i-1] == "--env" {
			if k, _, ok := strings.Cut(out[i], "="); ok {
				out[i] = k + "=<redacted>"
			}
		}
	}
	return out
}
