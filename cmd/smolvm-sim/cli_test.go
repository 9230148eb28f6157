package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"0.8.0", "1.0.2", "1.9.3"} {
		for _, flag := range []string{"--version", "-V"} {
			r := newSim(t, v).ok(flag)
			if want := "smolvm " + v + "\n"; r.stdout != want {
				t.Errorf("%s %s: stdout %q; want %q", v, flag, r.stdout, want)
			}
		}
	}
	s := newSim(t, "1.9.3")
	s.version = "" // unset: default
	if r := s.ok("--version"); r.stdout != "smolvm 1.9.3\n" {
		t.Errorf("default version: %q", r.stdout)
	}
}

func TestHelpSaysTestDouble(t *testing.T) {
	t.Parallel()
	r := newSim(t, "1.9.3").ok("--help")
	for _, want := range []string{"TEST DOUBLE", "NO isolation", "SMOLVM_SIM_FAULTS", "SMOLVM_SIM_DELAY", "SMOLVM_SIM_NOT_READY"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestNoteLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		version, exe string
		want         bool
	}{
		{"1.6.0", "smolvm-x", false},
		{"1.7.0", "smolvm", true}, // v1.7.0 flagged every name
		{"1.7.0", "smolvm-x", true},
		{"1.9.3", "smolvm", false},
		{"1.9.3", "smolvm-bin", false},
		{"1.9.3", "smolvm-x", true},
		{"1.9.3", "bottleq-smolvm.sh", true},
	}
	for _, tt := range tests {
		t.Run(tt.version+"/"+tt.exe, func(t *testing.T) {
			t.Parallel()
			s := newSim(t, tt.version)
			if tt.exe != "smolvm" {
				s.bin = filepath.Join(t.TempDir(), tt.exe)
				if err := os.Symlink(simBin, s.bin); err != nil {
					t.Fatal(err)
				}
			}
			r := s.ok("--version")
			stem := strings.TrimSuffix(tt.exe, filepath.Ext(tt.exe))
			note := "note: no packed assets found for '" + stem + "'"
			if got := strings.HasPrefix(r.stderr, note); got != tt.want {
				t.Errorf("stderr %q; want note=%v", r.stderr, tt.want)
			}
		})
	}
}

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
		{"1.0.1", []string{"machine", "delete", "-f"}, "required arguments"},
		{"1.0.2", []string{"machine", "create", "vm1"}, "unexpected argument 'vm1'"},
		{"1.9.3", []string{"machine", "create", "--cpus", "2", "vm1"}, "unexpected argument 'vm1'"},
		{"1.9.3", []string{"machine", "create"}, "--name <NAME>"},
		{"1.9.3", []string{"machine", "delete", "-f", "vm1"}, "unexpected argument 'vm1'"},
		{"1.9.3", []string{"machine", "delete", "-f"}, "--name <NAME>"},
		{"1.9.3", []string{"machine", "exec", "-n", "vm1", "--", "true"}, "unexpected argument '-n'"},
		{"0.8.0", []string{"machine", "exec", "-n", "vm1", "--", "true"}, "unexpected argument '-n'"},
		{"1.9.3", []string{"machine", "exec", "--name", "vm1"}, "<COMMAND>"},
		{"1.9.3", []string{"machine", "exec", "--name", "vm1", "--timeout", "5", "--", "true"}, "time unit needed"},
		{"1.9.3", []string{"machine", "exec", "--name", "vm1", "--timeout", "0s", "--", "true"}, "timeout must be greater than 0 (e.g., 5sec, 30s)"},
		{"1.9.3", []string{"machine", "exec", "--name", "vm1", "-d", "-i", "--", "true"}, "cannot be used with"},
		{"1.2.2", []string{"machine", "exec", "--name", "vm1", "-d", "--", "true"}, "unexpected argument '-d'"},
		{"1.7.0", []string{"machine", "create", "--name", "vm1", "--label", "a=b"}, "unexpected argument '--label'"},
		{"1.9.3", []string{"machine", "create", "--name", "vm1", "--label", "ab"}, "KEY=VALUE"},
		{"1.9.3", []string{"machine", "create", "--name", "vm1", "--allow-cidr", "10.0.0.0/99"}, "invalid value '10.0.0.0/99'"},
		{"1.9.3", []string{"machine", "create", "--name", "vm1", "--allow-cidr", "10.0.0.1", "10.0.0.2"}, "unexpected argument '10.0.0.2'"},
		{"1.9.3", []string{"machine", "create", "--name", "vm1", "--cpus", "256"}, "--cpus"},
		{"1.9.3", []string{"machine", "create", "--name", "vm1", "--memory", "512"}, "unexpected argument '--memory'"},
		{"1.9.3", []string{"machine", "create", "--name", "vm1", "--from", "x", "-I", "alpine"}, "cannot be used with"},
		{"1.9.3", []string{"machine", "create", "--name", "a", "--name", "b"}, "cannot be used multiple times"},
		{"1.9.3", []string{"machine", "bogus"}, "unrecognized subcommand 'bogus'"},
		{"1.9.3", []string{"bogus"}, "unrecognized subcommand 'bogus'"},
		{"1.9.3", []string{"machine"}, "requires a subcommand"},
		{"1.9.3", []string{"machine", "ls", "--bogus"}, "unexpected argument '--bogus'"},
		{"1.9.3", []string{"pack", "create", "-o", "x"}, "--image <IMAGE>"},
		{"1.9.3", []string{"pack", "create", "-I", "a", "--from-vm", "b", "-o", "x"}, "cannot be used with"},
		{"1.9.3", []string{"pack", "create", "-I", "a"}, "--output <OUTPUT>"},
		{"1.3.0", []string{"pack", "create", "--from-vm", "b", "-o", "x", "--rebase-from-image"}, "unexpected argument '--rebase-from-image'"},
		{"1.9.3", []string{"pack", "create", "-I", "a", "-o", "x", "--rebase-from-image"}, "--from-vm"},
		{"1.8.0", []string{"machine", "cp", "--mode", "600", "a", "vm:/b"}, "unexpected argument '--mode'"},
	}
	for _, tt := range tests {
		t.Run(tt.version+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			r := newSim(t, tt.version).fails(2, tt.want, tt.args...)
			if !regexp.MustCompile(`(?m)^error: `).MatchString(r.stderr) {
				t.Errorf("stderr %q does not start with clap's 'error: '", r.stderr)
			}
		})
	}
}

func TestCreateAutoName(t *testing.T) {
	t.Parallel()
	s := newSim(t, "0.8.0")
	r := s.ok("machine", "create")
	m := regexp.MustCompile(`Created machine: (vm-[0-9a-f]{8})\n`).FindStringSubmatch(r.stdout)
	if m == nil || !s.exists(m[1]) {
		t.Fatalf("no auto-named machine in %q", r.stdout)
	}
	if !strings.Contains(r.stdout, "  CPUs: 4, Memory: 8192 MiB\n") {
		t.Errorf("stdout %q lacks the CPUs line", r.stdout)
	}
}

func TestCreateErrors(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"0.8.0", "1.9.3"} {
		s := newSim(t, v)
		s.ok(s.create("dup")...)
		want := "Error: config operation failed: create machine: machine 'dup' already exists\n"
		if v == "1.9.3" {
			want = "Error: config operation failed: create machine: machine 'dup' already exists or is being created\n"
		}
		if r := s.run(s.create("dup")...); r.code != 1 || r.stderr != want {
			t.Errorf("%s duplicate: exit %d stderr %q; want 1 %q", v, r.code, r.stderr, want)
		}
		for _, bad := range []string{"a--b", "a-", "_x", "a.b", strings.Repeat("x", 129)} {
			s.fails(1, "Error: config operation failed: create machine: machine name", s.create(bad)...)
		}
		s.fails(1, "Error: config operation failed: create machine:", s.create("c0", "--cpus", "0")...)
		s.fails(1, "Error: config operation failed: create machine:", s.create("m0", "--mem", "0")...)
		s.fails(1, "Error: config operation failed: create from .smolmachine: file not found: /nonexistent.smolmachine",
			s.create("f", "--from", "/nonexistent.smolmachine")...)
		out := filepath.Join(t.TempDir(), "agent")
		s.ok("pack", "create", "-I", "alpine", "-o", out)
		s.fails(1, "Error: config operation failed: create from .smolmachine:", s.create("stub", "--from", out)...)
		for _, n := range []string{"f", "stub", "c0", "m0"} {
			if s.exists(n) {
				t.Errorf("%s: failed create left machine %q", v, n)
			}
		}
	}
}

func TestNotFoundErrors(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"0.8.0", "0.8.1", "1.0.1", "1.9.3"} {
		s := newSim(t, v)
		s.fails(1, "Error: vm not found: ghost\n", "machine", "start", "--name", "ghost")
		s.fails(1, "Error: vm not found: ghost\n", "machine", "exec", "--name", "ghost", "--", "true")
		s.fails(1, "Error: vm not found: ghost\n", s.del("ghost")...)
		s.fails(1, "Error: vm not found: ghost\n", "machine", "status", "-n", "ghost")
		s.fails(1, "Error: config operation failed: machine status: machine 'ghost' not found\n", "machine", "status", "-n", "ghost", "--json")
		s.fails(1, "Error: vm not found: ghost\n", "machine", "cp", "/etc/hostname", "ghost:/x")
		if v == "0.8.0" {
			if r := s.ok("machine", "stop", "-n", "ghost"); r.stdout != "Machine 'ghost' not found or not running\n" {
				t.Errorf("0.8.0 stop unknown: %q", r.stdout)
			}
		} else {
			s.fails(1, "Error: vm not found: ghost\n", "machine", "stop", "-n", "ghost")
		}
	}
}

func TestStartStop(t *testing.T) {
	t.Parallel()
	s := newSim(t, "1.9.3")
	s.ok(s.create("m")...)
	if r := s.ok("machine", "stop", "-n", "m"); r.stdout != "Machine 'm' is not running (state: created)\n" {
		t.Errorf("stop of created: %q", r.stdout)
	}
	r := s.ok("machine", "start", "-n", "m")
	pid := s.record("m").PID
	if want := "Machine 'm' running (PID: "; !strings.HasPrefix(r.stdout, want) || r.stderr != "Starting machine 'm'...\n" || pid == 0 {
		t.Errorf("start: stdout %q stderr %q pid %d", r.stdout, r.stderr, pid)
	}
	if r := s.ok("machine", "start", "-n", "m"); !strings.Contains(r.stdout, "Machine 'm' already running (PID: ") {
		t.Errorf("second start: %q", r.stdout)
	}
	s.fails(1, "Error: agent operation failed: pack from VM: VM 'm' is running. Stop it first with: smolvm machine stop --name m\n",
		"pack", "create", "--from-vm", "m", "-o", filepath.Join(t.TempDir(), "x"))
	if err := os.MkdirAll(filepath.Join(s.root("m"), "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	if r := s.ok("machine", "stop", "-n", "m"); r.stdout != "Stopping machine 'm'...\nStopped machine: m\n" {
		t.Errorf("stop: %q", r.stdout)
	}
	if _, err := os.Stat(filepath.Join(s.root("m"), "tmp")); !os.IsNotExist(err) {
		t.Errorf("stop kept the guest's /tmp: %v", err)
	}
	if r := s.ok("machine", "stop", "-n", "m"); r.stdout != "Machine 'm' is not running (state: stopped)\n" {
		t.Errorf("second stop: %q", r.stdout)
	}
	// start with no name auto-creates "default".
	s.ok("machine", "start")
	if m := s.record("default"); m.State != stateRunning {
		t.Errorf("default machine state %q", m.State)
	}
}

func TestPackErrors(t *testing.T) {
	t.Parallel()
	s := newSim(t, "1.9.3")
	dir := t.TempDir()
	s.fails(1, "Error: agent operation failed: pack from VM: VM 'nope' not found\n", "pack", "create", "--from-vm", "nope", "-o", filepath.Join(dir, "x"))
	s.ok(s.create("fresh")...)
	s.fails(1, "The VM may not have been started yet.", "pack", "create", "--from-vm", "fresh", "-o", filepath.Join(dir, "x"))

	// v1.7.0 rejects -o X.smolmachine; v1.6.0 accepted it.
	newSim(t, "1.6.0").ok("pack", "create", "-I", "alpine", "-o", filepath.Join(dir, "old.smolmachine"))
	newSim(t, "1.7.0").fails(1, "Error: config operation failed: pack:", "pack", "create", "-I", "alpine", "-o", filepath.Join(dir, "new.smolmachine"))
	if _, err := os.Stat(filepath.Join(dir, "new.smolmachine")); !os.IsNotExist(err) {
		t.Errorf("rejected pack wrote its output")
	}

	// --single-file writes only OUT.
	single := filepath.Join(dir, "single")
	r := s.ok("pack", "create", "-I", "alpine", "-o", single, "--single-file")
	if _, err := os.Stat(single + ".smolmachine"); !os.IsNotExist(err) || !strings.Contains(r.stdout, "Packed: "+single) {
		t.Errorf("--single-file: sidecar err %v, stdout %q", err, r.stdout)
	}
	if info, err := os.Stat(single); err != nil || info.Mode().Perm() != 0o755 {
		t.Errorf("stub: %v %v", info, err)
	}
}

func TestLsStatus(t *testing.T) {
	t.Parallel()
	s := newSim(t, "1.9.3")
	if r := s.ok("machine", "ls"); r.stdout != "No machines found\n" {
		t.Errorf("empty ls: %q", r.stdout)
	}
	if r := s.ok("machine", "list", "--json"); r.stdout != "[]\n" {
		t.Errorf("empty ls --json: %q", r.stdout)
	}
	long := "a-very-long-machine-name-indeed"
	s.ok(s.create(long, "--cpus", "2", "--mem", "512", "--label", "team=q", "-v", t.TempDir()+":/data", "-p", "8080:80")...)
	s.ok(s.create("b")...)
	s.ok("machine", "start", "--name", "b")
	r := s.ok("machine", "ls")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if got := strings.Join(strings.Fields(lines[0]), " "); got != "NAME STATE CPUS MEMORY MOUNTS PORTS STORAGE OVERLAY" || len(lines) != 3 {
		t.Fatalf("ls text: %q", r.stdout)
	}
	if !strings.HasPrefix(lines[1], long[:18]+" ") {
		t.Errorf("name not truncated to 18 chars: %q", lines[1])
	}
	var views []map[string]any
	if err := json.Unmarshal([]byte(s.ok("machine", "ls", "--json").stdout), &views); err != nil || len(views) != 2 {
		t.Fatalf("ls --json: %v %v", views, err)
	}
	v := views[0]
	for _, key := range []string{"name", "state", "cpus", "memory_mib", "pid", "mounts", "ports", "created_at", "storage_gb", "overlay_gb",
		"image", "entrypoint", "cmd", "ephemeral", "gpu", "gpu_vram_mib", "restart_policy", "restart_max_retries", "restart_count",
		"health_cmd", "health_interval_secs", "health_timeout_secs", "health_retries", "health_startup_grace_secs", "network",
		"cuda", "forkable", "cuda_fork_pool_size", "cuda_vram_limit_mib", "forkpoint_held", "labels"} {
		if _, ok := v[key]; !ok {
			t.Errorf("ls --json lacks %q", key)
		}
	}
	if v["name"] != long || v["state"] != "created" || v["cpus"] != 2.0 || v["memory_mib"] != 512.0 || v["pid"] != nil ||
		v["mounts"] != 1.0 || v["ports"] != 1.0 || v["labels"].(map[string]any)["team"] != "q" {
		t.Errorf("ls --json element: %v", v)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(s.ok("machine", "status", "--name", "b", "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st["state"] != "running" || st["pid"] == nil {
		t.Errorf("status --json: %v", st)
	}
	if r := s.ok("machine", "status", "-n", "b"); !strings.HasPrefix(r.stdout, "Machine 'b': running (PID: ") {
		t.Errorf("status running: %q", r.stdout)
	}
	s.ok("machine", "stop", "-n", "b")
	if r := s.ok("machine", "status", "-n", "b"); r.stdout != "Machine 'b': stopped\n" {
		t.Errorf("status stopped: %q", r.stdout)
	}

	old := newSim(t, "0.8.0")
	old.ok(old.create("b")...)
	if r := old.ok("machine", "status", "-n", "b"); r.stdout != "Machine 'b': not running\n" {
		t.Errorf("0.8.0 status: %q", r.stdout)
	}
	var oldView map[string]any
	if err := json.Unmarshal([]byte(old.ok("machine", "status", "-n", "b", "--json").stdout), &oldView); err != nil {
		t.Fatal(err)
	}
	if _, ok := oldView["labels"]; ok {
		t.Errorf("0.8.0 JSON has v1.9 fields: %v", oldView)
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	tests := []struct {
		version, stdin string
		code           int
		deleted        bool
		stdout         string
	}{
		{"1.9.3", "y\n", 0, true, "Cleaning up data directory for vm: m\nDeleted machine: m\n"},
		{"1.9.3", "yes\n", 0, true, "Cleaning up data directory for vm: m\nDeleted machine: m\n"},
		{"1.9.3", "n\n", 0, false, "Cancelled\n"},
		{"1.9.3", "", 0, false, "Cancelled\n"},
		{"0.8.0", "", 0, false, "Cancelled\n"},
		{"1.16.0", "", 0, false, "Cancelled\n"},
		{"1.17.0", "y\n", 1, false, ""}, // non-TTY stdin: refused before reading
	}
	for _, tt := range tests {
		t.Run(tt.version+" "+strings.TrimSpace(tt.stdin), func(t *testing.T) {
			t.Parallel()
			s := newSim(t, tt.version)
			s.running("m")
			args := []string{"machine", "rm", "--name", "m"}
			if !s.named() {
				args = []string{"machine", "delete", "m"}
			}
			r := s.runIn(strings.NewReader(tt.stdin), args...)
			if r.code != tt.code || r.stdout != tt.stdout || s.exists("m") == tt.deleted {
				t.Errorf("exit %d stdout %q exists %v; want %d %q deleted=%v (stderr %q)", r.code, r.stdout, s.exists("m"), tt.code, tt.stdout, tt.deleted, r.stderr)
			}
			if tt.code == 0 && !strings.Contains(r.stderr, "Delete machine 'm'? [y/N] ") {
				t.Errorf("no prompt on stderr: %q", r.stderr)
			}
			if tt.deleted {
				if _, err := os.Stat(s.root("m")); !os.IsNotExist(err) {
					t.Errorf("guest root kept: %v", err)
				}
			}
		})
	}
}
