package main

import (
	"strings"
	"testing"
)

// The tests in this file run the simulator in-process: parsing needs no
// process of its own.

func TestVersion(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"0.8.0", "1.0.2", "1.9.3"} {
		if r := newSim(t, v).ok("--version"); r.stdout != "smolvm "+v+"\n" || r.stderr != "" {
			t.Errorf("%s: stdout %q stderr %q", v, r.stdout, r.stderr)
		}
	}
	s := newSim(t, "") // unset: the default
	if r := s.ok("--version"); r.stdout != "smolvm "+defaultVersion+"\n" {
		t.Errorf("default version: %q", r.stdout)
	}
	newSim(t, "1.9").fails(2, "invalid SMOLVM_SIM_VERSION", "--version")
}

func TestHelpSaysNoIsolation(t *testing.T) {
	t.Parallel()
	r := newSim(t, "1.9.3").ok("--help")
	for _, want := range []string{"TEST DOUBLE", "NO isolation", "SMOLVM_SIM_FAULTS", "SMOLVM_SIM_DELAY", "SMOLVM_SIM_NOT_READY", "SMOLVM_SIM_PACK_BYTES"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// TestNoteLine: from 1.7.0 smolvm run under another name than smolvm or
// smolvm-bin prints a note first (1.7.0 under every name).
func TestNoteLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		version, exe string
		want         bool
	}{
		{"1.6.0", "smolvm-x", false},
		{"1.7.0", "smolvm", true},
		{"1.7.0", "smolvm-x", true},
		{"1.9.3", "/usr/bin/smolvm", false},
		{"1.9.3", "smolvm-bin", false},
		{"1.9.3", "smolvm-x", true},
		{"1.9.3", "bottleq-smolvm.sh", true},
	}
	for _, tt := range tests {
		s := newSim(t, tt.version)
		s.exe = tt.exe
		r := s.ok("--version")
		stem := strings.TrimSuffix(tt.exe[strings.LastIndexByte(tt.exe, '/')+1:], ".sh")
		note := "note: no packed assets found for '" + stem + "'\n"
		if got := r.stderr == note; got != tt.want {
			t.Errorf("%s as %s: stderr %q; want note=%v", tt.version, tt.exe, r.stderr, tt.want)
		}
	}
}

// TestParseErrors: argv smolvm refuses, with clap's shape and exit 2.
func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		version string
		args    []string
		want    string
	}{
		{"1.0.1", []string{"machine", "create", "-n", "vm1"}, "unexpected argument '-n'"},
		{"1.0.1", []string{"machine", "create", "--name", "vm1"}, "unexpected argument '--name'"},
		{"1.0.1", []string{"machine", "delete", "-f", "--name", "vm1"}, "unexpected argument '--name'"},
		{"1.0.1", []string{"machine", "delete", "-f"}, "required arguments were not provided:\n  <NAME>"},
		{"1.0.2", []string{"machine", "create", "vm1"}, "unexpected argument 'vm1'"},
		{"1.9.3", []string{"machine", "create", "--cpus", "2", "vm1"}, "unexpected argument 'vm1'"},
		{"1.9.3", []string{"machine", "create"}, "required arguments were not provided:\n  --name <NAME>"},
		{"1.9.3", []string{"machine", "delete", "-f", "vm1"}, "unexpected argument 'vm1'"},
		{"1.9.3", []string{"machine", "delete", "-f"}, "--name <NAME>"},
		{"1.9.3", []string{"machine", "exec", "-n", "vm1", "--", "true"}, "unexpected argument '-n'"},
		{"0.8.0", []string{"machine", "exec", "-n", "vm1", "--", "true"}, "unexpected argument '-n'"},
		{"1.9.3", []string{"machine", "exec", "--name", "vm1"}, "<COMMAND>"},
		{"1.9.3", []string{"machine", "exec", "--name", "vm1", "--timeout", "5", "--", "true"}, "time unit needed"},
		{"1.9.3", []string{"machine", "exec", "--name", "vm1", "--timeout", "0s", "--", "true"}, "timeout must be greater than 0 (e.g., 5sec, 30s)"},
		{"1.7.0", []string{"machine", "create", "--name", "vm1", "--label", "a=b"}, "unexpected argument '--label'"},
		{"1.9.3", []string{"machine", "create", "--name", "vm1", "--label", "ab"}, "KEY=VALUE"},
		{"1.8.0", []string{"machine", "create", "--name", "vm1", "--dns", "10.0.0.53"}, "unexpected argument '--dns'"},
		{"1.9.3", []string{"machine", "create", "--name", "vm1", "--dns", "resolver"}, "invalid value 'resolver' for '--dns <DNS>'"},
		{"1.9.3", []string{"machine", "create", "--name", "vm1", "--allow-cidr", "10.0.0.0/99"}, "invalid value '10.0.0.0/99'"},
		{"1.9.3", []string{"machine", "create", "--name", "vm1", "--allow-cidr", "10.0.0.1", "10.0.0.2"}, "unexpected argument '10.0.0.2'"},
		{"1.9.3", []string{"machine", "create", "--name", "vm1", "--cpus", "256"}, "--cpus"},
		{"1.9.3", []string{"machine", "create", "--name", "vm1", "--memory", "512"}, "unexpected argument '--memory'"},
		{"1.9.3", []string{"machine", "create", "--name", "a", "--name", "b"}, "cannot be used multiple times"},
		{"1.9.3", []string{"machine", "bogus"}, "unrecognized subcommand 'bogus'"},
		{"1.9.3", []string{"bogus"}, "unrecognized subcommand 'bogus'"},
		{"1.9.3", []string{"machine"}, "requires a subcommand"},
		{"1.9.3", []string{}, "requires a subcommand"},
		{"1.9.3", []string{"machine", "ls", "--json", "--bogus"}, "unexpected argument '--bogus'"},
		{"1.9.3", []string{"pack", "create", "-o", "x"}, "--image <IMAGE>"},
		{"1.9.3", []string{"pack", "create", "--image", "a", "--from-vm", "b", "-o", "x"}, "cannot be used with"},
		{"1.9.3", []string{"pack", "create", "--image", "a"}, "--output <OUTPUT>"},
		{"1.8.0", []string{"machine", "cp", "--mode", "600", "a", "vm:/b"}, "unexpected argument '--mode'"},
		{"1.9.3", []string{"machine", "cp", "--mode", "9", "a", "vm:/b"}, "expected an octal mode"},
		{"1.9.3", []string{"machine", "cp", "a"}, "<SRC> <DST>"},
	}
	for _, tt := range tests {
		t.Run(tt.version+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			r := newSim(t, tt.version).fails(2, tt.want, tt.args...)
			if !isClapError(r.stderr) {
				t.Errorf("stderr %q is not shaped like clap's", r.stderr)
			}
		})
	}
}

// TestRefusesWhatBottleqNeverSends: smolvm accepts these, the simulator
// does not simulate them and says so as a parse error, so that bottleq
// starting to send one fails loudly.
func TestRefusesWhatBottleqNeverSends(t *testing.T) {
	t.Parallel()
	tests := []struct {
		version string
		args    []string
		want    string
	}{
		{"1.9.3", []string{"machine", "create", "--name", "m", "--image", "alpine"}, "unexpected argument '--image'"},
		{"1.9.3", []string{"machine", "create", "--name", "m", "-v", "/a:/b"}, "unexpected argument '-v'"},
		{"1.9.3", []string{"machine", "create", "--name", "m", "--allow-host", "example.com"}, "unexpected argument '--allow-host'"},
		{"1.9.3", []string{"machine", "create", "--name", "m", "-w", "/srv"}, "unexpected argument '-w'"},
		{"1.9.3", []string{"machine", "create", "--name", "m", "--", "sleep", "1"}, "unexpected argument 'sleep'"},
		{"1.9.3", []string{"machine", "create", "--name", "m", "-e", "BARE"}, "does not simulate an -e value other than KEY=VALUE"},
		{"1.0.1", []string{"machine", "create"}, "does not simulate an unnamed machine"},
		{"1.9.3", []string{"machine", "start"}, "does not simulate a command without --name"},
		{"1.9.3", []string{"machine", "exec", "--", "true"}, "does not simulate a command without --name"},
		{"1.9.3", []string{"machine", "delete", "--name", "m"}, "without -f"},
		{"1.9.3", []string{"machine", "exec", "--name", "m", "-i", "--", "cat"}, "unexpected argument '-i'"},
		{"1.9.3", []string{"machine", "exec", "--name", "m", "-d", "--", "sleep", "1"}, "unexpected argument '-d'"},
		{"1.9.3", []string{"machine", "ls"}, "'machine ls' without --json"},
		{"1.9.3", []string{"machine", "status", "--name", "m"}, "'machine status' without --json"},
		{"1.9.3", []string{"machine", "rm", "--name", "m", "-f"}, "unrecognized subcommand 'rm'"},
		{"1.9.3", []string{"machine", "data-dir", "--name", "m"}, "unrecognized subcommand 'data-dir'"},
		{"1.9.3", []string{"vm", "ls", "--json"}, "unrecognized subcommand 'vm'"},
		{"1.9.3", []string{"pack", "create", "-I", "alpine", "-o", "x"}, "unexpected argument '-I'"},
		{"1.9.3", []string{"pack", "create", "--from-vm", "m", "-o", "x", "--rebase-from-image"}, "unexpected argument '--rebase-from-image'"},
		{"1.9.3", []string{"pack", "inspect", "x"}, "unrecognized subcommand 'inspect'"},
	}
	for _, tt := range tests {
		t.Run(tt.version+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			s := newSim(t, tt.version)
			r := s.fails(2, tt.want, tt.args...)
			if !isClapError(r.stderr) {
				t.Errorf("stderr %q is not shaped like clap's", r.stderr)
			}
			if s.exists("m") {
				t.Error("a refused command created a machine")
			}
		})
	}
}

// isClapError reports whether stderr has clap 4's shape (after 1.7.0's
// note line), which bottleq's client recognises as a usage error.
func isClapError(stderr string) bool {
	if strings.HasPrefix(stderr, "note: ") {
		_, stderr, _ = strings.Cut(stderr, "\n")
	}
	return strings.HasPrefix(stderr, "error: ") && strings.Contains(stderr, "\nUsage: ") &&
		strings.HasSuffix(stderr, "For more information, try '--help'.\n")
}
