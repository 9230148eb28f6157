package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// The tests in this file run the simulator in-process: none of them starts
// a guest. Exec, signals and concurrency are in exec_test.go and
// faults_test.go; the behaviour shared with a real smolvm is checked by the
// conformance suite in smolvm/conformance_test.go.

func TestCreate(t *testing.T) {
	t.Parallel()
	s := newSim(t, "1.9.3")
	r := s.ok(s.create("m", "--cpus", "2", "--mem", "512", "--allow-cidr", "10.0.0.1", "--label", "team=q",
		"--dns", "10.0.0.53", "-e", "A=1", "-e", "B=x=y")...)
	want := "Created machine: m\n  CPUs: 2, Memory: 512 MiB\n\n" +
		"Use 'smolvm machine start --name m' to start the machine.\nThen 'smolvm machine exec --name m -- <command>' to run commands.\n"
	if r.stdout != want {
		t.Errorf("stdout %q; want %q", r.stdout, want)
	}
	m := s.record("m")
	if m.State != stateCreated || m.CPUs != 2 || m.MemoryMiB != 512 || !m.Network || !reflect.DeepEqual(m.AllowedCIDRs, []string{"10.0.0.1/32"}) ||
		m.Labels["team"] != "q" || m.DNS != "10.0.0.53" || !reflect.DeepEqual(m.Env, []string{"A=1", "B=x=y"}) {
		t.Errorf("record %+v", m)
	}
	if info, err := os.Stat(s.root("m")); err != nil || !info.IsDir() {
		t.Errorf("guest root: %v", err)
	}
	s.ok(s.create("bare")...)
	if m := s.record("bare"); m.CPUs != defaultCPUs || m.MemoryMiB != defaultMemoryMiB || m.Network {
		t.Errorf("defaults: %+v", m)
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
		s.fails(2, "error: invalid value '256' for '--cpus <CPUS>'", s.create("c0", "--cpus", "256")...)
		s.fails(2, "error: invalid value '4294967296' for '--mem <MEM>'", s.create("m0", "--mem", "4294967296")...)
		s.fails(1, "Error: config operation failed: create from .smolmachine: file not found: /nonexistent.smolmachine",
			s.create("f", "--from", "/nonexistent.smolmachine")...)
		stub := strings.TrimSuffix(s.pack("alpine"), ".smolmachine")
		s.fails(1, "Error: config operation failed: create from .smolmachine:", s.create("stub", "--from", stub)...)
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
		s.fails(1, "Error: config operation failed: machine status: machine 'ghost' not found\n", "machine", "status", "--name", "ghost", "--json")
		s.fails(1, "Error: vm not found: ghost\n", "machine", "cp", "/etc/hostname", "ghost:/x")
		s.fails(1, "Error: agent operation failed: pack from VM: VM 'ghost' not found\n",
			"pack", "create", "--from-vm", "ghost", "-o", filepath.Join(t.TempDir(), "x"))
		if v == "0.8.0" {
			if r := s.ok("machine", "stop", "--name", "ghost"); r.stdout != "Machine 'ghost' not found or not running\n" {
				t.Errorf("0.8.0 stop unknown: %q", r.stdout)
			}
		} else {
			s.fails(1, "Error: vm not found: ghost\n", "machine", "stop", "--name", "ghost")
		}
	}
}

func TestStartStop(t *testing.T) {
	t.Parallel()
	s := newSim(t, "1.9.3")
	s.ok(s.create("m")...)
	if r := s.ok("machine", "stop", "--name", "m"); r.stdout != "Machine 'm' is not running (state: created)\n" {
		t.Errorf("stop of created: %q", r.stdout)
	}
	r := s.ok("machine", "start", "--name", "m")
	pid := s.record("m").PID
	if want := "Machine 'm' running (PID: "; !strings.HasPrefix(r.stdout, want) || r.stderr != "Starting machine 'm'...\n" || pid == 0 {
		t.Errorf("start: stdout %q stderr %q pid %d", r.stdout, r.stderr, pid)
	}
	if r := s.ok("machine", "start", "--name", "m"); !strings.Contains(r.stdout, "Machine 'm' already running (PID: ") {
		t.Errorf("second start: %q", r.stdout)
	}
	for _, d := range []string{"tmp", "run", "dev/shm", "workspace"} {
		if err := os.MkdirAll(filepath.Join(s.root("m"), d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if r := s.ok("machine", "stop", "--name", "m"); r.stdout != "Stopping machine 'm'...\nStopped machine: m\n" {
		t.Errorf("stop: %q", r.stdout)
	}
	for d, kept := range map[string]bool{"tmp": false, "run": false, "dev/shm": false, "workspace": true} {
		if _, err := os.Stat(filepath.Join(s.root("m"), d)); (err == nil) != kept {
			t.Errorf("after stop /%s: %v; want kept=%v", d, err, kept)
		}
	}
	if r := s.ok("machine", "stop", "--name", "m"); r.stdout != "Machine 'm' is not running (state: stopped)\n" {
		t.Errorf("second stop: %q", r.stdout)
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"0.8.0", "1.0.1", "1.9.3"} {
		s := newSim(t, v)
		s.running("m")
		if r := s.ok(s.del("m")...); r.stdout != "Cleaning up data directory for vm: m\nDeleted machine: m\n" {
			t.Errorf("%s delete stdout %q", v, r.stdout)
		}
		if _, err := os.Stat(s.root("m")); s.exists("m") || !os.IsNotExist(err) {
			t.Errorf("%s: machine or guest root kept (%v)", v, err)
		}
	}
}

func TestPackCreate(t *testing.T) {
	t.Parallel()
	s := newSim(t, "1.9.3")
	out := filepath.Join(t.TempDir(), "agent")
	if r := s.ok("pack", "create", "--image", "alpine:3", "-o", out); r.stdout != "Packed: "+out+"\n  Assets: "+out+".smolmachine\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if info, err := os.Stat(out); err != nil || info.Mode().Perm() != 0o755 {
		t.Errorf("stub: %v %v", info, err)
	}
	if m, err := readManifest(out + ".smolmachine"); err != nil || m.Image != "alpine:3" || m.Network || m.CPUs != defaultCPUs || m.Mem != defaultMemoryMiB {
		t.Errorf("manifest %+v, %v", m, err)
	}
	s.ok("pack", "create", "--image", "alpine:3", "--cpus", "3", "--mem", "3072", "-o", out+"-r")
	if m, err := readManifest(out + "-r.smolmachine"); err != nil || m.CPUs != 3 || m.Mem != 3072 {
		t.Errorf("pack --cpus 3 --mem 3072: manifest %+v, %v", m, err)
	}
	s.fails(2, "error: invalid value '256' for '--cpus <CPUS>'", "pack", "create", "--image", "alpine", "--cpus", "256", "-o", out+"-x")

	s.ok(s.create("fresh")...)
	s.fails(1, "The VM may not have been started yet.", "pack", "create", "--from-vm", "fresh", "-o", out+"-x")
	s.ok("machine", "start", "--name", "fresh")
	s.fails(1, "Error: agent operation failed: pack from VM: VM 'fresh' is running. Stop it first with: smolvm machine stop --name fresh\n",
		"pack", "create", "--from-vm", "fresh", "-o", out+"-x")
	if _, err := os.Stat(out + "-x.smolmachine"); !os.IsNotExist(err) {
		t.Errorf("a refused pack wrote its output: %v", err)
	}

	// From 1.7.0 -o must not end in .smolmachine.
	dir := t.TempDir()
	newSim(t, "1.6.0").ok("pack", "create", "--image", "alpine", "-o", filepath.Join(dir, "old.smolmachine"))
	newSim(t, "1.7.0").fails(1, "Error: config operation failed: pack:", "pack", "create", "--image", "alpine", "-o", filepath.Join(dir, "new.smolmachine"))
	if _, err := os.Stat(filepath.Join(dir, "new.smolmachine")); !os.IsNotExist(err) {
		t.Errorf("rejected pack wrote its output")
	}
}

// TestPackBytes: SMOLVM_SIM_PACK_BYTES makes `pack create --image` that
// many bytes bigger, the same bytes for the same image, without putting
// them in the root of a machine created from the pack or in its commit.
func TestPackBytes(t *testing.T) {
	t.Parallel()
	const n = 3<<20 + 5
	s := newSim(t, "1.9.3", "SMOLVM_SIM_PACK_BYTES="+strconv.Itoa(n))
	plain := newSim(t, "1.9.3").pack("alpine:3")
	a, b, other := s.pack("alpine:3"), s.pack("alpine:3"), s.pack("busybox:1")
	size := func(p string) int64 {
		t.Helper()
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return info.Size()
	}
	if got := size(a) - size(plain); got < n || got > n+2048 {
		t.Errorf("the pack grew by %d bytes, want %d plus a tar header", got, n)
	}
	ab, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	ob, _ := os.ReadFile(other)
	if !bytes.Equal(ab, bb) {
		t.Error("two packs of one image differ")
	}
	if bytes.Equal(ab[len(ab)-n/2:], ob[len(ob)-n/2:]) {
		t.Error("the packs of two images end with the same filler")
	}
	if m, err := readManifest(a); err != nil || m.Image != "alpine:3" {
		t.Errorf("manifest %+v, %v", m, err)
	}

	s.running("m", "--from", a)
	ents, err := os.ReadDir(s.root("m"))
	if err != nil || len(ents) != 0 {
		t.Errorf("the machine's root holds %v (%v), want nothing", ents, err)
	}
	s.ok("machine", "stop", "--name", "m")
	commit := filepath.Join(t.TempDir(), "c")
	s.ok("pack", "create", "--from-vm", "m", "-o", commit)
	if got := size(commit + ".smolmachine"); got > 64<<10 {
		t.Errorf("the commit of an empty machine is %d bytes: it carries the filler", got)
	}

	for _, bad := range []string{"-1", "1MiB", "x"} {
		newSim(t, "1.9.3", "SMOLVM_SIM_PACK_BYTES="+bad).fails(2, "invalid SMOLVM_SIM_PACK_BYTES", "pack", "create", "--image", "alpine", "-o", filepath.Join(t.TempDir(), "p"))
	}
}

// TestCommitCarriesFiles: pack --from-vm archives the stopped machine's
// files (not its tmpfs) and its env and --net; a machine created from the
// commit gets them, at create from 1.0.0 and at its first start before.
func TestCommitCarriesFiles(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"0.9.0", "1.0.0", "1.9.3"} {
		s := newSim(t, v)
		s.running("src", "--from", s.pack("img:1"), "--net", "-e", "K=v")
		for path, body := range map[string]string{"workspace/state.txt": "committed", "tmp/scratch": "lost"} {
			p := filepath.Join(s.root("src"), path)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		s.ok("machine", "stop", "--name", "src")
		commit := filepath.Join(t.TempDir(), "commit")
		s.ok("pack", "create", "--from-vm", "src", "-o", commit)
		s.ok(s.create("dst", "--from", commit+".smolmachine")...)
		if m := s.record("dst"); !m.Network || m.Image != "img:1" || !reflect.DeepEqual(m.Env, []string{"K=v"}) {
			t.Errorf("%s: machine from the commit %+v", v, m)
		}
		state := filepath.Join(s.root("dst"), "workspace", "state.txt")
		if _, err := os.Stat(state); (err == nil) != (v != "0.9.0") {
			t.Errorf("%s: committed file after create: %v", v, err)
		}
		s.ok("machine", "start", "--name", "dst")
		if data, err := os.ReadFile(state); err != nil || string(data) != "committed" {
			t.Errorf("%s: committed file %q, %v", v, data, err)
		}
		if info, err := os.Stat(state); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: committed file mode %v, %v", v, info, err)
		}
		if _, err := os.Stat(filepath.Join(s.root("dst"), "tmp", "scratch")); !os.IsNotExist(err) {
			t.Errorf("%s: the commit carried /tmp: %v", v, err)
		}
	}
}

// TestFromAllowCIDR: --allow-cidr is dropped on the --from path before
// 1.8.0 (no allow-list, no implied network) and applied from 1.8.0;
// without --from it always applies and implies network.
func TestFromAllowCIDR(t *testing.T) {
	t.Parallel()
	tests := []struct {
		version string
		net     bool
		cidrs   []string
	}{
		{"0.8.0", false, nil},
		{"1.0.2", false, nil},
		{"1.7.0", false, nil},
		{"1.8.0", true, []string{"10.1.2.3/32"}},
		{"1.9.3", true, []string{"10.1.2.3/32"}},
	}
	for _, tt := range tests {
		s := newSim(t, tt.version)
		pack := s.pack("alpine")
		s.ok(s.create("from", "--from", pack, "--allow-cidr", "10.1.2.3")...)
		if m := s.record("from"); m.Network != tt.net || !reflect.DeepEqual(m.AllowedCIDRs, tt.cidrs) {
			t.Errorf("%s --from: network=%v cidrs=%v; want %v %v", tt.version, m.Network, m.AllowedCIDRs, tt.net, tt.cidrs)
		}
		s.ok(s.create("netted", "--from", pack, "--net", "--allow-cidr", "10.1.2.3")...)
		if m := s.record("netted"); !m.Network || !reflect.DeepEqual(m.AllowedCIDRs, tt.cidrs) {
			t.Errorf("%s --from --net: network=%v cidrs=%v; want true %v", tt.version, m.Network, m.AllowedCIDRs, tt.cidrs)
		}
		s.ok(s.create("bare", "--allow-cidr", "10.0.0.0/8")...)
		if m := s.record("bare"); !m.Network || !reflect.DeepEqual(m.AllowedCIDRs, []string{"10.0.0.0/8"}) {
			t.Errorf("%s without --from: network=%v cidrs=%v", tt.version, m.Network, m.AllowedCIDRs)
		}
	}
}

// TestManifestInheritance: a machine created --from a pack takes its
// image, env (create's -e after it), network, and cpus and mem unless the
// flags differ from smolvm's defaults: --cpus 4 and --mem 8192 cannot
// override a pack that says otherwise.
func TestManifestInheritance(t *testing.T) {
	t.Parallel()
	s := newSim(t, "1.9.3")
	pack := filepath.Join(t.TempDir(), "p.smolmachine")
	src := &manifest{Format: manifestFormat, Image: "img", Env: []string{"P=pack", "Q=pack"}, CPUs: 2, Mem: 512, Network: true}
	if err := writeSmolmachine(pack, src, "", 0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		flags     []string
		cpus, mem int
	}{
		{nil, 2, 512},
		{[]string{"--cpus", "4", "--mem", "8192"}, 2, 512}, // the defaults do not override
		{[]string{"--cpus", "1", "--mem", "1024"}, 1, 1024},
		{[]string{"--cpus", "8", "--mem", "8192"}, 8, 512},
	}
	for i, tt := range tests {
		name := "m" + string(rune('0'+i))
		s.ok(s.create(name, append([]string{"--from", pack, "-e", "Q=create"}, tt.flags...)...)...)
		m := s.record(name)
		if m.CPUs != tt.cpus || m.MemoryMiB != tt.mem || m.Image != "img" || !m.Network || !reflect.DeepEqual(m.Env, []string{"P=pack", "Q=pack", "Q=create"}) {
			t.Errorf("%v: %+v; want cpus %d mem %d", tt.flags, m, tt.cpus, tt.mem)
		}
	}
}

// hungryPack makes, as a test would with smolvm itself, a pack whose
// manifest says network on, 255 CPUs and 1 TiB: a commit (pack --from-vm
// --cpus 255 --mem 1048576) of a machine created with --net.
func hungryPack(s *sim) string {
	s.t.Helper()
	s.running("hungry-src", "--from", s.pack("alpine:3"), "--net")
	s.ok("machine", "stop", "--name", "hungry-src")
	out := filepath.Join(s.t.TempDir(), "hungry")
	s.ok("pack", "create", "--from-vm", "hungry-src", "--cpus", "255", "--mem", "1048576", "-o", out)
	s.ok(s.del("hungry-src")...)
	return out + ".smolmachine"
}

// TestHungryPack: a networked commit packed with --cpus 255 --mem 1048576
// gives machines created from it without flags a network, 255 CPUs and
// 1 TiB; --cpus/--mem other than the defaults override the resources;
// --outbound-localhost-only restricts the network from 1.8.0 and is dropped
// before, where nothing takes the pack's network away.
func TestHungryPack(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"0.8.0", "1.7.0", "1.8.0", "1.9.3"} {
		s := newSim(t, v)
		pack := hungryPack(s)
		if m, err := readManifest(pack); err != nil || !m.Network || m.CPUs != 255 || m.Mem != 1<<20 || m.Image != "alpine:3" {
			t.Fatalf("%s: manifest %+v, %v", v, m, err)
		}
		s.ok(s.create("plain", "--from", pack)...)
		if m := s.record("plain"); !m.Network || m.CPUs != 255 || m.MemoryMiB != 1<<20 || len(m.AllowedCIDRs) != 0 {
			t.Errorf("%s: no flags: %+v; want the pack's network, 255 CPUs, 1 TiB", v, m)
		}
		s.ok(s.create("capped", "--from", pack, "--cpus", "2", "--mem", "2048")...)
		if m := s.record("capped"); m.CPUs != 2 || m.MemoryMiB != 2048 {
			t.Errorf("%s: --cpus 2 --mem 2048: %+v", v, m)
		}
		s.ok(s.create("dflt", "--from", pack, "--cpus", "4", "--mem", "8192")...)
		if m := s.record("dflt"); m.CPUs != 255 || m.MemoryMiB != 1<<20 {
			t.Errorf("%s: --cpus 4 --mem 8192 overrode the pack: %+v", v, m)
		}
		s.ok(s.create("local", "--from", pack, "--cpus", "2", "--mem", "2048", "--outbound-localhost-only")...)
		var want []string
		if v == "1.8.0" || v == "1.9.3" {
			want = []string{"127.0.0.0/8", "::1/128"}
		}
		if m := s.record("local"); !m.Network || !reflect.DeepEqual(m.AllowedCIDRs, want) {
			t.Errorf("%s: --outbound-localhost-only: network %v cidrs %v; want true %v", v, m.Network, m.AllowedCIDRs, want)
		}
	}
}

// TestLocalhostOnly: --outbound-localhost-only makes the allow-list
// 127.0.0.0/8 and ::1/128 and gives the machine a network, except on the
// --from path before 1.8.0, which drops it; the calls log records what
// create made, allow-list included.
func TestLocalhostOnly(t *testing.T) {
	t.Parallel()
	loop := []string{"127.0.0.0/8", "::1/128"}
	for _, tt := range []struct {
		version string
		net     bool
		cidrs   []string
	}{{"0.8.0", false, nil}, {"1.7.0", false, nil}, {"1.8.0", true, loop}, {"1.9.3", true, loop}} {
		s := newSim(t, tt.version)
		s.ok(s.create("from", "--from", s.pack("alpine"), "--outbound-localhost-only")...)
		if m := s.record("from"); m.Network != tt.net || !reflect.DeepEqual(m.AllowedCIDRs, tt.cidrs) {
			t.Errorf("%s --from: network %v cidrs %v; want %v %v", tt.version, m.Network, m.AllowedCIDRs, tt.net, tt.cidrs)
		}
		s.ok(s.create("bare", "--outbound-localhost-only")...)
		if m := s.record("bare"); !m.Network || !reflect.DeepEqual(m.AllowedCIDRs, loop) {
			t.Errorf("%s without --from: network %v cidrs %v", tt.version, m.Network, m.AllowedCIDRs)
		}
		var logged []*createdRecord
		for _, c := range s.calls() {
			if c.Op == "machine create" {
				logged = append(logged, c.Created)
			}
		}
		want := []*createdRecord{
			{CPUs: defaultCPUs, MemoryMiB: defaultMemoryMiB, Network: tt.net, AllowedCIDRs: tt.cidrs},
			{CPUs: defaultCPUs, MemoryMiB: defaultMemoryMiB, Network: true, AllowedCIDRs: loop},
		}
		if !reflect.DeepEqual(logged, want) {
			t.Errorf("%s calls log: %+v; want %+v", tt.version, logged, want)
		}
	}
}

// TestDNS: --dns takes an IPv4 address only (from 1.9.3 in the simulator);
// it turns a network on without --from, and not on the --from path.
func TestDNS(t *testing.T) {
	t.Parallel()
	s := newSim(t, "1.9.3")
	s.fails(2, "error: invalid value '::1' for '--dns <DNS>': invalid IPv4 address syntax", s.create("v6", "--dns", "::1")...)
	s.fails(2, "error: invalid value 'dns.example' for '--dns <DNS>'", s.create("name", "--dns", "dns.example")...)
	s.ok(s.create("from", "--from", s.pack("alpine"), "--dns", "192.0.2.1")...)
	if m := s.record("from"); m.Network || m.DNS != "192.0.2.1" {
		t.Errorf("--from --dns: %+v; want no network", m)
	}
	s.ok(s.create("bare", "--dns", "192.0.2.1")...)
	if m := s.record("bare"); !m.Network {
		t.Errorf("--dns without --from: %+v; want a network", m)
	}
	old := newSim(t, "1.8.0")
	old.fails(2, "error: unexpected argument '--dns' found", old.create("d", "--dns", "192.0.2.1")...)
}

// TestFromSourceLifetime: ≤ 0.9.0 reads the .smolmachine at every start;
// 1.0.0+ copies it at create.
func TestFromSourceLifetime(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		version string
		needs   bool
	}{{"0.9.0", true}, {"1.0.0", false}} {
		s := newSim(t, tt.version)
		pack := s.pack("alpine")
		s.ok(s.create("m", "--from", pack)...)
		if err := os.Remove(pack); err != nil {
			t.Fatal(err)
		}
		if tt.needs {
			s.fails(1, "source .smolmachine not found: "+pack, "machine", "start", "--name", "m")
		} else {
			s.ok("machine", "start", "--name", "m")
		}
	}
}

func TestLsStatus(t *testing.T) {
	t.Parallel()
	s := newSim(t, "1.9.3")
	if r := s.ok("machine", "ls", "--json"); r.stdout != "[]\n" {
		t.Errorf("empty ls --json: %q", r.stdout)
	}
	s.ok(s.create("a", "--cpus", "2", "--mem", "512", "--label", "team=q")...)
	s.running("b", "--from", s.pack("alpine:3"), "--net")
	var views []map[string]any
	if err := json.Unmarshal([]byte(s.ok("machine", "ls", "--json").stdout), &views); err != nil || len(views) != 2 {
		t.Fatalf("ls --json: %v %v", views, err)
	}
	a, b := views[0], views[1]
	for _, key := range []string{"name", "state", "cpus", "memory_mib", "pid", "created_at", "image", "ephemeral", "network", "labels"} {
		if _, ok := a[key]; !ok {
			t.Errorf("ls --json lacks %q", key)
		}
	}
	if a["name"] != "a" || a["state"] != "created" || a["cpus"] != 2.0 || a["memory_mib"] != 512.0 || a["pid"] != nil ||
		a["image"] != nil || a["network"] != false || a["labels"].(map[string]any)["team"] != "q" {
		t.Errorf("ls --json a: %v", a)
	}
	if b["state"] != "running" || b["pid"] == nil || b["image"] != "alpine:3" || b["network"] != true || len(b["labels"].(map[string]any)) != 0 {
		t.Errorf("ls --json b: %v", b)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(s.ok("machine", "status", "--name", "b", "--json").stdout), &st); err != nil || !reflect.DeepEqual(st, b) {
		t.Errorf("status --json %v (%v); want %v", st, err, b)
	}

	// labels appear with --label, at 1.8.0: {} for a machine without any.
	for v, want := range map[string]bool{"1.7.0": false, "1.8.0": true} {
		old := newSim(t, v)
		old.ok(old.create("a")...)
		var view map[string]any
		if err := json.Unmarshal([]byte(old.ok("machine", "status", "--name", "a", "--json").stdout), &view); err != nil {
			t.Fatal(err)
		}
		if labels, ok := view["labels"]; ok != want || (ok && len(labels.(map[string]any)) != 0) {
			t.Errorf("%s JSON labels %v (present %v); want present %v and empty", v, labels, ok, want)
		}
	}
}

func TestCp(t *testing.T) {
	t.Parallel()
	s := newSim(t, "1.9.3")
	s.running("m")
	src := filepath.Join(t.TempDir(), "in.txt")
	if err := os.WriteFile(src, []byte("payload"), 0o644); err != nil {
		t.Fatal(err)
	}
	for mode, want := range map[string]os.FileMode{"0600": 0o600, "0000": 0} {
		s.ok("machine", "cp", "--mode", mode, src, "m:/workspace/deep/in.txt")
		if info, err := os.Stat(filepath.Join(s.root("m"), "workspace/deep/in.txt")); err != nil || info.Mode().Perm() != want {
			t.Errorf("--mode %s: %v %v", mode, info, err)
		}
	}
	s.ok("machine", "cp", "--mode", "0644", src, "m:/workspace/deep/in.txt")
	dst := filepath.Join(t.TempDir(), "out.txt")
	s.ok("machine", "cp", "m:/workspace/deep/in.txt", dst)
	if data, err := os.ReadFile(dst); err != nil || string(data) != "payload" {
		t.Errorf("download: %q %v", data, err)
	}
	s.fails(1, "Error: config operation failed: cp: one of SRC or DST must use machine:path syntax", "machine", "cp", src, dst)
	s.fails(1, "escapes the machine root", "machine", "cp", src, "m:/../../etc/x")
	s.fails(1, "no such file or directory", "machine", "cp", "m:/nope", dst)
	s.fails(1, "not a regular file", "machine", "cp", t.TempDir(), "m:/d")
	s.ok("machine", "stop", "--name", "m")
	s.fails(1, "Error: agent operation failed: connect: machine 'm' is not running. Use 'smolvm machine start --name m' first.\n", "machine", "cp", src, "m:/x")
}
