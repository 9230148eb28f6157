package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestLifecycle drives the worker's whole flow in each dialect: pack an image,
// create from it, start, exec, stop, commit with pack --from-vm, create a
// machine from the commit and find the committed files, delete.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"0.8.0", "1.0.1", "1.0.2", "1.7.0", "1.8.0", "1.9.3"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			s := newSim(t, v)
			dir := t.TempDir()
			out := filepath.Join(dir, "agent")
			if r := s.ok("pack", "create", "--image", "bot-bottle-claude:latest", "-o", out); !strings.Contains(r.stdout, "Packed: "+out) {
				t.Errorf("pack stdout %q", r.stdout)
			}
			if info, err := os.Stat(out); err != nil || info.Mode().Perm() != 0o755 {
				t.Fatalf("stub %s: %v %v", out, info, err)
			}
			r := s.ok(s.create("agent-1", "--from", out+".smolmachine", "--net", "--allow-cidr", "192.168.50.2/32", "-e", "HTTPS_PROXY=http://192.168.50.2:8888")...)
			if !strings.HasPrefix(r.stdout, "Created machine: agent-1\n  CPUs: 4, Memory: 8192 MiB\n") {
				t.Errorf("create stdout %q", r.stdout)
			}
			s.ok("machine", "start", "--name", "agent-1")
			r = s.ok("machine", "exec", "--name", "agent-1", "-w", "/app", "-e", "TOKEN=t1", "--timeout", "30s", "--",
				"sh", "-c", `pwd; echo "$HTTPS_PROXY $TOKEN"; echo committed > state.txt; mkdir -p bin; printf '#!/bin/sh\necho tool\n' > bin/tool; chmod 755 bin/tool`)
			wantOut := filepath.Join(s.root("agent-1"), "app") + "\nhttp://192.168.50.2:8888 t1\n"
			if r.stdout != wantOut {
				t.Errorf("exec stdout %q; want %q", r.stdout, wantOut)
			}
			s.ok("machine", "stop", "--name", "agent-1")
			committed := filepath.Join(dir, "committed")
			s.ok("pack", "create", "--from-vm", "agent-1", "-o", committed)
			m, err := readManifest(committed + ".smolmachine")
			if err != nil || !m.Network || m.Image != "bot-bottle-claude:latest" {
				t.Errorf("committed manifest %+v, %v", m, err)
			}
			s.ok(s.create("agent-2", "--from", committed+".smolmachine")...)
			s.ok("machine", "start", "--name", "agent-2")
			r = s.ok("machine", "exec", "--name", "agent-2", "--", "sh", "-c", "cat app/state.txt && app/bin/tool")
			if r.stdout != "committed\ntool\n" {
				t.Errorf("committed files: %q", r.stdout)
			}
			for _, n := range []string{"agent-1", "agent-2"} {
				if r := s.ok(s.del(n)...); r.stdout != "Cleaning up data directory for vm: "+n+"\nDeleted machine: "+n+"\n" {
					t.Errorf("delete stdout %q", r.stdout)
				}
				if s.exists(n) {
					t.Errorf("%s still exists", n)
				}
			}
			var packImage int
			for _, c := range s.calls() {
				if c.Op == "pack create" && c.Image != "" {
					packImage++
				}
			}
			if packImage != 1 {
				t.Errorf("calls log has %d pack --image calls; want 1", packImage)
			}
		})
	}
}

// TestFromAllowCIDR pins docs/smolvm.md, Network policy: --allow-cidr and
// --allow-host are dropped on the --from path before v1.8.0 and applied
// (implying network) from v1.8.0.
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
		{"1.8.0", true, []string{"10.1.2.3/32", "10.9.9.9/32"}},
		{"1.9.3", true, []string{"10.1.2.3/32", "10.9.9.9/32"}},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			t.Parallel()
			s := newSim(t, tt.version)
			out := filepath.Join(t.TempDir(), "p")
			s.ok("pack", "create", "-I", "alpine", "-o", out)
			s.ok(s.create("from", "--from", out+".smolmachine", "--allow-cidr", "10.1.2.3", "--allow-host", "10.9.9.9", "--allow-host", "api.example.com")...)
			m := s.record("from")
			if m.Network != tt.net || !reflect.DeepEqual(m.AllowedCIDRs, tt.cidrs) {
				t.Errorf("--from: network=%v cidrs=%v; want %v %v", m.Network, m.AllowedCIDRs, tt.net, tt.cidrs)
			}
			// On the --image path --allow-cidr always implies --net.
			s.ok(s.create("img", "-I", "alpine", "--allow-cidr", "10.0.0.0/8")...)
			if m := s.record("img"); !m.Network || !reflect.DeepEqual(m.AllowedCIDRs, []string{"10.0.0.0/8"}) {
				t.Errorf("--image: network=%v cidrs=%v", m.Network, m.AllowedCIDRs)
			}
			// A pack of a --net machine carries network=true into new machines.
			s.ok(s.create("netted", "--net")...)
			s.ok("machine", "start", "--name", "netted")
			s.ok("machine", "stop", "--name", "netted")
			s.ok("pack", "create", "--from-vm", "netted", "-o", out+"2")
			s.ok(s.create("inherit", "--from", out+"2.smolmachine")...)
			if !s.record("inherit").Network {
				t.Errorf("machine from a --net pack has no network")
			}
		})
	}
}

// TestFromSourceLifetime: ≤0.9.0 re-reads the .smolmachine at start; 1.0.0+ extracts at create.
func TestFromSourceLifetime(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		version string
		needs   bool
	}{{"0.9.0", true}, {"1.0.0", false}} {
		s := newSim(t, tt.version)
		out := filepath.Join(t.TempDir(), "p")
		s.ok("pack", "create", "-I", "alpine", "-o", out)
		s.ok(s.create("m", "--from", out+".smolmachine")...)
		if err := os.Remove(out + ".smolmachine"); err != nil {
			t.Fatal(err)
		}
		if tt.needs {
			s.fails(1, "source .smolmachine not found: "+out+".smolmachine", "machine", "start", "--name", "m")
		} else {
			s.ok("machine", "start", "--name", "m")
		}
	}
}

func TestImageMachineNeedsNetToPull(t *testing.T) {
	t.Parallel()
	s := newSim(t, "1.9.3")
	s.ok(s.create("nonet", "-I", "alpine")...)
	s.fails(1, "Error: agent operation failed: pull image:", "machine", "start", "--name", "nonet")
	s.ok(s.create("net", "-I", "alpine", "--net")...)
	if r := s.ok("machine", "start", "--name", "net"); !strings.Contains(r.stderr, "Pulling alpine...") {
		t.Errorf("start stderr %q", r.stderr)
	}
}

func TestCreateEnvBareKey(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		version string
		want    []string
	}{{"0.8.0", []string{"A=1"}}, {"0.8.1", []string{"A=1", "HOSTKEY=fromhost"}}} {
		s := newSim(t, tt.version, "HOSTKEY=fromhost")
		s.ok(s.create("m", "-e", "A=1", "-e", "HOSTKEY", "-e", "=dropped", "-e", "UNSET_SIM_KEY")...)
		if got := s.record("m").Env; !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s env %v; want %v", tt.version, got, tt.want)
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
	s.ok("machine", "cp", "--mode", "600", src, "m:/workspace/deep/in.txt")
	r := s.ok("machine", "exec", "--name", "m", "--", "sh", "-c", `cat "$SMOLVM_SIM_ROOT/workspace/deep/in.txt"`)
	if r.stdout != "payload" {
		t.Errorf("guest sees %q", r.stdout)
	}
	if info, err := os.Stat(filepath.Join(s.root("m"), "workspace/deep/in.txt")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("uploaded file: %v %v", info, err)
	}
	dst := filepath.Join(t.TempDir(), "out.txt")
	s.ok("machine", "cp", "m:/workspace/deep/in.txt", dst)
	if data, err := os.ReadFile(dst); err != nil || string(data) != "payload" {
		t.Errorf("download: %q %v", data, err)
	}
	s.fails(1, "Error: config operation failed: cp: one of SRC or DST must use machine:path syntax", "machine", "cp", src, dst)
	s.fails(1, "escapes the machine root", "machine", "cp", src, "m:/../../etc/x")
	s.fails(1, "Error: config operation failed: cp:", "machine", "cp", "m:/nope", dst)
	s.fails(1, "not a regular file", "machine", "cp", t.TempDir(), "m:/d")
	s.ok("machine", "stop", "--name", "m")
	s.fails(1, "Error: agent operation failed: connect: machine 'm' is not running. Use 'smolvm machine start --name m' first.\n", "machine", "cp", src, "m:/x")
}

func TestDataDir(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"1.0.1", "1.9.3"} {
		s := newSim(t, v)
		s.ok(s.create("m")...)
		args := []string{"machine", "data-dir", "-n", "m"}
		if !s.named() {
			args = []string{"machine", "data-dir", "m"}
		}
		if r := s.ok(args...); r.stdout != s.root("m")+"\n" {
			t.Errorf("%s data-dir %q", v, r.stdout)
		}
	}
}
