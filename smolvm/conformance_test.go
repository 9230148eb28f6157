package smolvm

// The conformance suite: the smolvm behaviour that docs/smolvm.md describes
// and bottleq relies on, checked against a smolvm binary. Each check names
// the section of docs/smolvm.md it tests.
//
// By default the binary is cmd/smolvm-sim, impersonating each release in
// confVersions. With SMOLVM_CONFORMANCE_BIN=/path/to/smolvm the same checks
// also run against that smolvm, at whatever release it is, so that anyone
// with KVM can show where the simulator (or the document) is wrong:
//
//	SMOLVM_CONFORMANCE_BIN=$(command -v smolvm) make conformance
//
// Against a real smolvm the suite packs SMOLVM_CONFORMANCE_IMAGE (default
// alpine:3; it needs sh and the usual busybox tools) once, runs its checks
// one at a time on machines named bqconf-XXXXXX-CHECK, and deletes them.
//
// The checks send the argv bottleq's builders produce (argv.go), through the
// Client wherever its reading of smolvm's answer is the contract, and raw
// where the answer itself is. Behaviour only the simulator can fake
// (injected faults and delays, the not-ready window) is tested in
// cmd/smolvm-sim, not here.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// confRealHint is printed when the real-smolvm leg is skipped.
const confRealHint = "set SMOLVM_CONFORMANCE_BIN=/path/to/smolvm to run against a real smolvm"

// confVersions are the releases the simulator impersonates for the suite:
// both dialects and each side of the releases where documented behaviour
// changes (0.8.1, 1.0.0, 1.0.2, 1.7.0, 1.8.0, 1.9.3).
var confVersions = []string{"0.8.0", "1.0.1", "1.0.2", "1.7.0", "1.8.0", "1.9.3"}

func TestConformance(t *testing.T) {
	t.Run("simulator", func(t *testing.T) {
		for _, v := range confVersions {
			t.Run(v, func(t *testing.T) {
				t.Parallel()
				c, _ := simClient(t, v)
				runConformance(t, newConfTarget(t, c, "alpine:3"), true)
			})
		}
	})
	t.Run("smolvm", func(t *testing.T) {
		bin := os.Getenv("SMOLVM_CONFORMANCE_BIN")
		if bin == "" {
			t.Skip(confRealHint)
		}
		c, err := New(context.Background(), Config{Bin: bin})
		if err != nil {
			t.Fatal(err)
		}
		image := os.Getenv("SMOLVM_CONFORMANCE_IMAGE")
		if image == "" {
			image = "alpine:3"
		}
		t.Logf("smolvm %s at %s, image %s", c.Version(), c.Bin(), image)
		runConformance(t, newConfTarget(t, c, image), false)
	})
}

// confChecks run against every target.
var confChecks = []struct {
	name string
	run  func(*testing.T, *confTarget)
}{
	{"version", confVersion},
	{"dialect", confDialect},
	{"pack-image", confPackImage},
	{"pack-output-suffix", confPackOutputSuffix},
	{"pack-from-vm", confPackFromVM},
	{"create", confCreate},
	{"create-errors", confCreateErrors},
	{"create-label-dns", confCreateLabelDNS},
	{"create-resources-from", confCreateResourcesFrom},
	{"commit-manifest", confCommitManifest},
	{"network-localhost-only", confNetworkLocalhostOnly},
	{"start-stop", confStartStop},
	{"delete", confDelete},
	{"exec-exit-codes", confExecExitCodes},
	{"exec-timeout", confExecTimeout},
	{"exec-env-workdir-output", confExecEnvWorkdirOutput},
	{"exec-not-running", confExecNotRunning},
	{"cp", confCopy},
	{"ls-status", confListStatus},
	{"error-shapes", confErrorShapes},
	{"network", confNetwork},
	{"names", confNames},
	{"pack-lifetime", confPackLifetime},
	{"readiness", confReadiness},
}

func runConformance(t *testing.T, x *confTarget, parallel bool) {
	for _, check := range confChecks {
		t.Run(check.name, func(t *testing.T) {
			if parallel {
				t.Parallel()
			}
			check.run(t, x)
		})
	}
}

// confVersion: docs/smolvm.md "Versions and dialects" — `--version` prints
// "smolvm X.Y.Z" on stdout and exits 0.
func confVersion(t *testing.T, x *confTarget) {
	p := x.raw(t, "--version")
	v, err := parseVersion(string(p.stdout))
	if p.exitCode != 0 || !strings.HasPrefix(string(p.stdout), "smolvm ") || err != nil || v != x.c.Version() {
		t.Errorf("--version: exit %d stdout %q (%v); want 0 and smolvm %s", p.exitCode, p.stdout, err, x.c.Version())
	}
}

// confDialect: docs/smolvm.md "Versions and dialects" — a release accepts
// one dialect only: up to 1.0.1 names are positional, from 1.0.2 they are
// --name; the other dialect's create and delete are parse errors (exit 2)
// that change nothing.
func confDialect(t *testing.T, x *confTarget) {
	name := x.name(t, "dialect")
	other := DialectNamed
	if x.c.Version().Dialect() == DialectNamed {
		other = DialectPositional
	}
	otherName := x.name(t, "dialect-other")
	x.ok(t, createArgv(x.c.Version().Dialect(), name, CreateOptions{From: x.pack(t).Machine})...)
	for _, argv := range [][]string{
		createArgv(other, otherName, CreateOptions{From: x.pack(t).Machine}),
		deleteArgv(other, name),
	} {
		_, err := x.c.call(context.Background(), argv[1], name, argv)
		wantErr(t, err, ErrUsage, 2)
	}
	if _, ok := x.machine(t, name); !ok {
		t.Errorf("%s is gone after a delete in the other dialect", name)
	}
	if _, ok := x.machine(t, otherName); ok {
		t.Errorf("a create in the other dialect made a machine")
	}
}

// confPackImage: docs/smolvm.md "pack create" and "Pack files and names" —
// `pack create --image IMAGE -o OUT` writes the executable OUT and the
// pack OUT.smolmachine.
func confPackImage(t *testing.T, x *confTarget) {
	pk := x.pack(t)
	if info, err := os.Stat(pk.Stub); err != nil || info.Mode()&0o111 == 0 {
		t.Errorf("OUT %s: %v, %v; want an executable", pk.Stub, info, err)
	}
	if info, err := os.Stat(pk.Machine); err != nil || !info.Mode().IsRegular() || info.Size() == 0 {
		t.Errorf("OUT.smolmachine %s: %v, %v; want a non-empty file", pk.Machine, info, err)
	}
}

// confPackOutputSuffix: docs/smolvm.md "pack create" — from 1.7.0, -o
// ending in .smolmachine is an error (exit 1) and writes nothing.
func confPackOutputSuffix(t *testing.T, x *confTarget) {
	if !x.c.Version().atLeast(v1_7_0) {
		t.Skip("smolvm before 1.7.0 accepts -o X.smolmachine")
	}
	out := filepath.Join(t.TempDir(), "agent.smolmachine")
	_, err := x.c.call(context.Background(), "pack create", "", packImageArgv(x.image, out))
	wantErr(t, err, nil, 1)
	for _, f := range []string{out, out + ".smolmachine"} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("refused pack wrote %s (%v)", f, err)
		}
	}
}

// confPackFromVM: docs/smolvm.md "pack create" and "Pack files and names" —
// `pack create --from-vm NAME` needs the machine stopped; it commits the
// machine's files and its --net, so a machine created from the commit has
// both. An unknown machine is "not found".
func confPackFromVM(t *testing.T, x *confTarget) {
	ctx := context.Background()
	src := x.name(t, "commit-src")
	x.ok(t, confCreateArgv(x.c.Version(), src, "--from", x.pack(t).Machine, "--net")...)
	x.start(t, src)
	x.copyIn(t, src, "/workspace/state.txt", "committed\n")
	dir := t.TempDir()
	_, err := x.c.PackFromVM(ctx, src, filepath.Join(dir, "early"))
	if e := wantErr(t, err, nil, 1); e != nil && !strings.Contains(e.Message, "is running") {
		t.Errorf("pack --from-vm of a running machine: %q; want it to say the machine is running", e.Message)
	}
	if err := x.c.Stop(ctx, src); err != nil {
		t.Fatal(err)
	}
	commit, err := x.c.PackFromVM(ctx, src, filepath.Join(dir, "commit"))
	if err != nil {
		t.Fatal(err)
	}
	dst := x.name(t, "commit-dst")
	if err := x.c.Create(ctx, dst, CreateOptions{From: commit.Machine}); err != nil {
		t.Fatal(err)
	}
	if m, _ := x.machine(t, dst); !m.Network {
		t.Errorf("a machine from the commit of a --net machine has network=false")
	}
	x.start(t, dst)
	if res := x.exec(t, dst, ExecOptions{Workdir: "/workspace"}, "cat", "state.txt"); res.ExitCode != 0 || string(res.Stdout) != "committed\n" {
		t.Errorf("committed file: exit %d stdout %q stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
	_, err = x.c.PackFromVM(ctx, x.name(t, "ghost"), filepath.Join(dir, "ghost"))
	wantErr(t, err, ErrNotFound, 1)
}

// confCreate: docs/smolvm.md "machine create" — create --from a pack with
// --cpus and --mem makes a machine in state created with those sizes; a
// second create of the name fails with exit 1, "already exists".
func confCreate(t *testing.T, x *confTarget) {
	ctx := context.Background()
	name := x.name(t, "create")
	o := CreateOptions{From: x.pack(t).Machine, CPUs: 2, MemoryMiB: 1024, Env: map[string]string{"A": "1"}}
	if err := x.c.Create(ctx, name, o); err != nil {
		t.Fatal(err)
	}
	m, ok := x.machine(t, name)
	if !ok || m.State != StateCreated || m.CPUs != 2 || m.MemoryMiB != 1024 || m.Network || m.PID != 0 || m.CreatedAt <= 0 {
		t.Errorf("created machine %+v (listed %v)", m, ok)
	}
	wantErr(t, x.c.Create(ctx, name, o), ErrExists, 1)
}

// confCreateErrors: docs/smolvm.md "machine create" and "Pack files and
// names" — --from must name an existing OUT.smolmachine (the executable
// OUT will not do); otherwise create fails with exit 1 and makes nothing.
func confCreateErrors(t *testing.T, x *confTarget) {
	ctx := context.Background()
	missing := x.name(t, "from-missing")
	err := x.c.Create(ctx, missing, CreateOptions{From: filepath.Join(t.TempDir(), "missing.smolmachine")})
	if e := wantErr(t, err, nil, 1); e != nil && !strings.Contains(e.Message, "file not found") {
		t.Errorf("create --from a missing file: %q; want \"file not found\"", e.Message)
	}
	stub := x.name(t, "from-stub")
	wantErr(t, x.c.Create(ctx, stub, CreateOptions{From: x.pack(t).Stub}), nil, 1)
	for _, n := range []string{missing, stub} {
		if _, ok := x.machine(t, n); ok {
			t.Errorf("failed create left %s", n)
		}
	}
}

// confCreateLabelDNS: docs/smolvm.md "machine create" and "machine ls and
// status" — --label K=V from 1.8.0 (a parse error before), shown back as
// labels from 1.8.0 ({} for a machine without any; absent before), and
// --dns IPV4 at 1.9.3: an IPv6 address is a parse error, and on the --from
// path --dns turns no network on.
func confCreateLabelDNS(t *testing.T, x *confTarget) {
	v := x.c.Version()
	name := x.name(t, "label")
	argv := append(confCreateArgv(v, name, "--from", x.pack(t).Machine), "--label", "team=bq")
	if !v.atLeast(V1_8_0) {
		_, err := x.c.call(context.Background(), "machine create", name, argv)
		wantErr(t, err, ErrUsage, 2)
		plain := x.create(t, "no-labels", CreateOptions{})
		if m, _ := x.machine(t, plain); m.Labels != nil {
			t.Errorf("smolvm %s reports labels %v; want none (the field appears at 1.8.0)", v, m.Labels)
		}
		return
	}
	x.ok(t, argv...)
	if m, _ := x.machine(t, name); m.Labels["team"] != "bq" {
		t.Errorf("labels %v; want team=bq", m.Labels)
	}
	plain := x.create(t, "no-labels", CreateOptions{})
	if m, _ := x.machine(t, plain); m.Labels == nil || len(m.Labels) != 0 {
		t.Errorf("a machine without --label: labels %#v; want {}", m.Labels)
	}
	if v.atLeast(v1_9_3) {
		dns := x.name(t, "dns")
		x.ok(t, append(confCreateArgv(v, dns, "--from", x.pack(t).Machine), "--dns", "127.0.0.53")...)
		if m, _ := x.machine(t, dns); m.Network {
			t.Errorf("create --from --dns turned a network on")
		}
		v6 := x.name(t, "dns-v6")
		_, err := x.c.call(context.Background(), "machine create", v6, append(confCreateArgv(v, v6, "--from", x.pack(t).Machine), "--dns", "::1"))
		wantErr(t, err, ErrUsage, 2)
	}
}

// confCreateResourcesFrom: docs/smolvm.md "pack create" and "machine
// create" — pack create --cpus/--mem write the pack's resources; a machine
// created --from the pack gets them unless create passes --cpus/--mem
// other than smolvm's defaults (4, 8192): the defaults cannot override
// the pack. `machine status --json` shows what the machine got. --cpus 0
// and --mem 0 are refused at create (exit 1) and make nothing.
func confCreateResourcesFrom(t *testing.T, x *confTarget) {
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "sized")
	x.ok(t, "pack", "create", "--image", x.image, "--cpus", "3", "--mem", "3072", "-o", out)
	pack := out + ".smolmachine"
	for _, tt := range []struct {
		suffix            string
		cpus, mem         int
		wantCPUs, wantMem int
	}{
		{"res-unset", 0, 0, 3, 3072},
		{"res-less", 2, 2048, 2, 2048},
		{"res-default", DefaultCPUs, DefaultMemoryMiB, 3, 3072},
		{"res-mixed", 1, DefaultMemoryMiB, 1, 3072},
	} {
		name := x.create(t, tt.suffix, CreateOptions{From: pack, CPUs: tt.cpus, MemoryMiB: tt.mem})
		m, err := x.c.Status(ctx, name)
		if err != nil || m.CPUs != tt.wantCPUs || m.MemoryMiB != tt.wantMem {
			t.Errorf("%s: create --cpus %d --mem %d from a 3-CPU 3072-MiB pack: status %+v, %v; want %d CPUs, %d MiB",
				tt.suffix, tt.cpus, tt.mem, m, err, tt.wantCPUs, tt.wantMem)
		}
	}
	for _, flag := range []string{"--cpus", "--mem"} {
		name := x.name(t, "res-zero-"+flag[2:])
		_, err := x.c.call(ctx, "machine create", name, confCreateArgv(x.c.Version(), name, "--from", pack, flag, "0"))
		wantErr(t, err, nil, 1)
		if _, ok := x.machine(t, name); ok {
			t.Errorf("create %s 0 made a machine", flag)
		}
	}
}

// confCommitManifest: docs/smolvm.md "Network policy" and "Pack files and
// names" — a commit (pack --from-vm, here with --cpus 3 --mem 3072) of a
// machine created with --net records network on: a machine created from it
// without flags has a network and the commit's resources; --cpus/--mem
// other than the defaults override the resources, and no flag bottleq sends
// takes the network device away (from 1.8.0 --outbound-localhost-only
// restricts it, and the machine still shows network).
func confCommitManifest(t *testing.T, x *confTarget) {
	ctx := context.Background()
	v := x.c.Version()
	src := x.name(t, "manifest-src")
	x.ok(t, confCreateArgv(v, src, "--from", x.pack(t).Machine, "--net")...)
	x.start(t, src)
	if err := x.c.Stop(ctx, src); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "commit")
	x.ok(t, "pack", "create", "--from-vm", src, "--cpus", "3", "--mem", "3072", "-o", out)
	commit := out + ".smolmachine"
	tests := []struct {
		suffix            string
		o                 CreateOptions
		wantCPUs, wantMem int
	}{
		{"manifest-plain", CreateOptions{}, 3, 3072},
		{"manifest-capped", CreateOptions{CPUs: 2, MemoryMiB: 2048}, 2, 2048},
		{"manifest-default", CreateOptions{CPUs: DefaultCPUs, MemoryMiB: DefaultMemoryMiB}, 3, 3072},
	}
	if v.Supports(FeatureFromEgress) {
		tests = append(tests, struct {
			suffix            string
			o                 CreateOptions
			wantCPUs, wantMem int
		}{"manifest-local", CreateOptions{CPUs: 1, MemoryMiB: 1024, LocalhostOnly: true}, 1, 1024})
	}
	for _, tt := range tests {
		tt.o.From = commit
		name := x.create(t, tt.suffix, tt.o)
		m, err := x.c.Status(ctx, name)
		if err != nil || !m.Network || m.CPUs != tt.wantCPUs || m.MemoryMiB != tt.wantMem {
			t.Errorf("%s: status %+v, %v; want network on, %d CPUs, %d MiB", tt.suffix, m, err, tt.wantCPUs, tt.wantMem)
		}
	}
}

// confNetworkLocalhostOnly: docs/smolvm.md "machine create" and "Network
// policy" — on the --from path --outbound-localhost-only gives a machine a
// (loopback-only) network from 1.8.0, and is dropped before: the machine
// from a pack without network then has none.
func confNetworkLocalhostOnly(t *testing.T, x *confTarget) {
	v := x.c.Version()
	name := x.name(t, "net-local")
	x.ok(t, confCreateArgv(v, name, "--from", x.pack(t).Machine, "--outbound-localhost-only")...)
	if m, ok := x.machine(t, name); !ok || m.Network != v.Supports(FeatureFromEgress) {
		t.Errorf("create --from --outbound-localhost-only: network %v (listed %v); want %v", m.Network, ok, v.Supports(FeatureFromEgress))
	}
}

// confStartStop: docs/smolvm.md "machine start and stop" — start makes the
// machine running with a PID, and again is a no-op; stop makes it stopped,
// and again (or before any start) is a no-op; files under /workspace
// survive a stop and a start. An unknown machine is "vm not found" (exit 1)
// for start, and for stop from 0.8.1 (0.8.0 exits 0).
func confStartStop(t *testing.T, x *confTarget) {
	ctx := context.Background()
	name := x.create(t, "startstop", CreateOptions{})
	if err := x.c.Stop(ctx, name); err != nil {
		t.Errorf("stop of a created machine: %v", err)
	}
	x.start(t, name)
	if m, _ := x.machine(t, name); m.State != StateRunning || m.PID <= 0 {
		t.Errorf("after start: %+v", m)
	}
	if err := x.c.Start(ctx, name); err != nil {
		t.Errorf("second start: %v", err)
	}
	x.copyIn(t, name, "/workspace/kept.txt", "kept\n")
	for range 2 {
		if err := x.c.Stop(ctx, name); err != nil {
			t.Fatal(err)
		}
		if m, _ := x.machine(t, name); m.State != StateStopped {
			t.Errorf("after stop: %+v", m)
		}
	}
	x.start(t, name)
	if res := x.exec(t, name, ExecOptions{Workdir: "/workspace"}, "cat", "kept.txt"); string(res.Stdout) != "kept\n" {
		t.Errorf("/workspace after stop and start: exit %d stdout %q", res.ExitCode, res.Stdout)
	}
	ghost := x.name(t, "ghost")
	wantErr(t, x.c.Start(ctx, ghost), ErrNotFound, 1)
	err := x.c.Stop(ctx, ghost)
	if x.c.Version().atLeast(v0_8_1) {
		wantErr(t, err, ErrNotFound, 1)
	} else if err != nil {
		t.Errorf("0.8.0 stop of an unknown machine: %v; want exit 0", err)
	}
}

// confDelete: docs/smolvm.md "machine delete" — `delete -f` removes a
// running or a created machine; an unknown one is "vm not found" (exit 1).
func confDelete(t *testing.T, x *confTarget) {
	ctx := context.Background()
	running := x.create(t, "delete-running", CreateOptions{})
	x.start(t, running)
	created := x.create(t, "delete-created", CreateOptions{})
	for _, n := range []string{running, created} {
		if err := x.c.Delete(ctx, n); err != nil {
			t.Fatalf("delete %s: %v", n, err)
		}
		if _, ok := x.machine(t, n); ok {
			t.Errorf("%s still listed after delete", n)
		}
		wantErr(t, x.c.Delete(ctx, n), ErrNotFound, 1)
	}
}

// confExecExitCodes: docs/smolvm.md "machine exec" and "Exit codes and
// errors" — exec exits with the guest's code; a guest killed by a signal
// gives 128+signal (0.8.0: 255); a guest's own "Error:" line is not
// smolvm's.
func confExecExitCodes(t *testing.T, x *confTarget) {
	name := x.started(t, "exit-codes")
	killed := 137
	if !x.c.Version().atLeast(v0_8_1) {
		killed = 255
	}
	for script, want := range map[string]int{
		"exit 0": 0, "exit 3": 3, "exit 42": 42, "kill -9 $$": killed,
		`echo "Error: from the guest" >&2; exit 1`: 1,
	} {
		if res := x.exec(t, name, ExecOptions{}, "sh", "-c", script); res.ExitCode != want {
			t.Errorf("%s: exit %d; want %d (stderr %q)", script, res.ExitCode, want, res.Stderr)
		}
	}
}

// confExecTimeout: docs/smolvm.md "machine exec" and "Exit codes and
// errors" — --timeout takes whole seconds ("30s") and milliseconds
// ("1500ms"); a guest that outlives it is killed and exec exits 124.
func confExecTimeout(t *testing.T, x *confTarget) {
	name := x.started(t, "timeout")
	for _, d := range []time.Duration{30 * time.Second, 1500 * time.Millisecond} {
		if res := x.exec(t, name, ExecOptions{Timeout: d}, "true"); res.ExitCode != 0 || res.TimedOut {
			t.Errorf("--timeout %s on true: %+v", formatDuration(d), res)
		}
	}
	res := x.exec(t, name, ExecOptions{Timeout: 500 * time.Millisecond}, "sleep", "30")
	if res.ExitCode != 124 || !res.TimedOut {
		t.Errorf("--timeout 500ms on sleep 30: exit %d timed out %v; want 124", res.ExitCode, res.TimedOut)
	}
}

// confExecEnvWorkdirOutput: docs/smolvm.md "machine exec" — the guest gets
// create's -e, then exec's -e (which wins); -w sets its working directory;
// buffered output is the guest's stdout and stderr, apart, and --stream
// gives the same. (smolvm 1.7.0 writes a "note: " line first on stderr on
// every run, see "Versions and dialects".)
func confExecEnvWorkdirOutput(t *testing.T, x *confTarget) {
	name := x.create(t, "env", CreateOptions{Env: map[string]string{"A": "create", "B": "create"}})
	x.start(t, name)
	x.copyIn(t, name, "/workspace/sub/here.txt", "here\n")
	res := x.exec(t, name, ExecOptions{Env: map[string]string{"B": "exec"}, Workdir: "/workspace/sub"},
		"sh", "-c", `echo "$A $B"; pwd; cat here.txt`)
	lines := strings.Split(string(res.Stdout), "\n")
	if res.ExitCode != 0 || len(lines) != 4 || lines[0] != "create exec" || !strings.HasSuffix(lines[1], "/workspace/sub") || lines[2] != "here" {
		t.Errorf("env and workdir: exit %d stdout %q stderr %q", res.ExitCode, res.Stdout, res.Stderr)
	}
	for _, stream := range []bool{false, true} {
		res := x.exec(t, name, ExecOptions{Stream: stream}, "sh", "-c", "echo out; echo err >&2")
		if res.ExitCode != 0 || string(res.Stdout) != "out\n" || withoutNote(res.Stderr) != "err\n" {
			t.Errorf("stream=%v: exit %d stdout %q stderr %q", stream, res.ExitCode, res.Stdout, res.Stderr)
		}
	}
}

// confExecNotRunning: docs/smolvm.md "machine exec" and "Exit codes and
// errors" — exec on a created or stopped machine fails "not running" (exit
// 1), on an unknown one "vm not found"; exec's --name has no -n.
func confExecNotRunning(t *testing.T, x *confTarget) {
	ctx := context.Background()
	name := x.create(t, "not-running", CreateOptions{})
	_, err := x.c.Exec(ctx, name, []string{"true"}, ExecOptions{})
	wantErr(t, err, ErrNotRunning, 1)
	x.start(t, name)
	if err := x.c.Stop(ctx, name); err != nil {
		t.Fatal(err)
	}
	_, err = x.c.Exec(ctx, name, []string{"true"}, ExecOptions{})
	wantErr(t, err, ErrNotRunning, 1)
	_, err = x.c.Exec(ctx, x.name(t, "ghost"), []string{"true"}, ExecOptions{})
	wantErr(t, err, ErrNotFound, 1)
	_, err = x.c.call(ctx, "machine exec", name, []string{"machine", "exec", "-n", name, "--", "true"})
	wantErr(t, err, ErrUsage, 2)
}

// confCopy: docs/smolvm.md "machine cp" — a file goes into a running
// machine (parent directories made, mode set) and comes back out the same;
// a missing guest file is "no such file"; a stopped machine is "not
// running".
func confCopy(t *testing.T, x *confTarget) {
	ctx := context.Background()
	name := x.started(t, "cp")
	body := "payload " + randHex(t) + "\n"
	host := filepath.Join(t.TempDir(), "in.txt")
	if err := os.WriteFile(host, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := x.c.CopyIn(ctx, name, host, "/workspace/deep/in.txt", 0o600); err != nil {
		t.Fatal(err)
	}
	if res := x.exec(t, name, ExecOptions{Workdir: "/workspace/deep"}, "stat", "-c", "%a", "in.txt"); strings.TrimSpace(string(res.Stdout)) != "600" {
		t.Errorf("mode in the guest: exit %d stdout %q stderr %q; want 600", res.ExitCode, res.Stdout, res.Stderr)
	}
	out := filepath.Join(t.TempDir(), "out.txt")
	if err := x.c.CopyOut(ctx, name, "/workspace/deep/in.txt", out); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(out); err != nil || string(got) != body {
		t.Errorf("copied out %q, %v; want %q", got, err, body)
	}
	wantErr(t, x.c.CopyOut(ctx, name, "/workspace/missing.txt", filepath.Join(t.TempDir(), "m")), ErrNoSuchFile, 1)
	if err := x.c.Stop(ctx, name); err != nil {
		t.Fatal(err)
	}
	wantErr(t, x.c.CopyIn(ctx, name, host, "/workspace/late.txt", 0o644), ErrNotRunning, 1)
}

// confListStatus: docs/smolvm.md "machine ls and status" — `ls --json` and
// `status --name NAME --json` give each machine's name, state, pid (only
// while running), cpus, memory_mib and created_at; status of an unknown
// machine fails "not found" (exit 1).
func confListStatus(t *testing.T, x *confTarget) {
	created := x.create(t, "ls-created", CreateOptions{})
	running := x.started(t, "ls-running")
	for name, state := range map[string]string{created: StateCreated, running: StateRunning} {
		m, ok := x.machine(t, name)
		if !ok || m.State != state || (m.PID > 0) != (state == StateRunning) || m.CPUs <= 0 || m.MemoryMiB <= 0 || m.CreatedAt <= 0 {
			t.Errorf("ls --json %s: %+v (listed %v); want state %s", name, m, ok, state)
		}
	}
	p := x.ok(t, "machine", "status", "--name", running, "--json")
	var m Machine
	if err := json.Unmarshal(p.stdout, &m); err != nil || m.Name != running || m.State != StateRunning || m.PID <= 0 {
		t.Errorf("status --json: %+v, %v (stdout %q)", m, err, p.stdout)
	}
	ghost := x.name(t, "ghost")
	_, err := x.c.call(context.Background(), "machine status", ghost, []string{"machine", "status", "--name", ghost, "--json"})
	wantErr(t, err, ErrNotFound, 1)
}

// confErrorShapes: docs/smolvm.md "Exit codes and errors" — a parse error
// is clap's "error: ..." with a usage line and exit 2; a failure is a last
// stderr line "Error: ..." and exit 1.
func confErrorShapes(t *testing.T, x *confTarget) {
	p := x.raw(t, "machine", "no-such-subcommand")
	if _, cause, own := classify(p.exitCode, p.stderr); p.exitCode != 2 || cause != ErrUsage || !own {
		t.Errorf("unknown subcommand: exit %d stderr %q; want exit 2 and clap's error", p.exitCode, p.stderr)
	}
	p = x.raw(t, startArgv(x.name(t, "ghost"))...)
	msg, cause, own := classify(p.exitCode, p.stderr)
	if p.exitCode != 1 || cause != ErrNotFound || !own || !strings.HasPrefix(msg, "vm not found: ") {
		t.Errorf("start of an unknown machine: exit %d stderr %q; want exit 1 and \"Error: vm not found: NAME\"", p.exitCode, p.stderr)
	}
}

// confNetwork: docs/smolvm.md "Network policy" — a machine has no network
// unless asked; bottleq's --net --allow-cidr gives it network in every
// release; --allow-cidr alone implies network with --from only from 1.8.0
// (before, the flag is dropped).
func confNetwork(t *testing.T, x *confTarget) {
	plain := x.create(t, "net-none", CreateOptions{})
	proxy := x.create(t, "net-proxy", CreateOptions{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	bare := x.name(t, "net-cidr-only")
	x.ok(t, confCreateArgv(x.c.Version(), bare, "--from", x.pack(t).Machine, "--allow-cidr", "127.0.0.1/32")...)
	for name, want := range map[string]bool{plain: false, proxy: true, bare: x.c.Version().EnforcesAllowCIDROnFrom()} {
		if m, ok := x.machine(t, name); !ok || m.Network != want {
			t.Errorf("%s: network %v (listed %v); want %v", name, m.Network, ok, want)
		}
	}
}

// confNames: docs/smolvm.md "Pack files and names" — smolvm refuses a
// machine name outside its rules (exit 1, "machine name ...").
func confNames(t *testing.T, x *confTarget) {
	for _, bad := range []string{"bqconf--x", "bqconf-x-", "bqconf.x"} {
		_, err := x.c.call(context.Background(), "machine create", bad, createArgv(x.c.Version().Dialect(), bad, CreateOptions{From: x.pack(t).Machine}))
		if e := wantErr(t, err, nil, 1); e != nil && !strings.Contains(e.Message, "machine name") {
			t.Errorf("name %q: %q; want a message about the machine name", bad, e.Message)
		}
		if _, ok := x.machine(t, bad); ok {
			t.Errorf("machine %q was created", bad)
			_ = x.c.Delete(context.Background(), bad)
		}
	}
}

// confPackLifetime: docs/smolvm.md "Pack files and names" — up to 0.9.0 a
// machine reads its .smolmachine at every start; from 1.0.0 it has its own
// copy and the file may go.
func confPackLifetime(t *testing.T, x *confTarget) {
	data, err := os.ReadFile(x.pack(t).Machine)
	if err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(t.TempDir(), "moved.smolmachine")
	if err := os.WriteFile(moved, data, 0o644); err != nil {
		t.Fatal(err)
	}
	name := x.create(t, "lifetime", CreateOptions{From: moved})
	if err := os.Remove(moved); err != nil {
		t.Fatal(err)
	}
	err = x.c.Start(context.Background(), name)
	if x.c.Version().atLeast(Version{1, 0, 0}) {
		if err != nil {
			t.Errorf("start after the pack went: %v", err)
		}
	} else {
		wantErr(t, err, nil, 1)
	}
}

// confReadiness: docs/smolvm.md "Readiness" — start returns once the
// machine's agent answers, so exec works at once; WaitReady returns then,
// and at once with "not found" for an unknown machine.
func confReadiness(t *testing.T, x *confTarget) {
	ctx := context.Background()
	name := x.create(t, "ready", CreateOptions{})
	x.start(t, name)
	if res := x.exec(t, name, ExecOptions{}, "true"); res.ExitCode != 0 {
		t.Errorf("first exec after start: exit %d stderr %q", res.ExitCode, res.Stderr)
	}
	if err := x.c.WaitReady(ctx, name, 30*time.Second); err != nil {
		t.Error(err)
	}
	wantErr(t, x.c.WaitReady(ctx, x.name(t, "ghost"), 30*time.Second), ErrNotFound, 1)
}

// confTarget is one smolvm binary under test and the pack its checks share.
type confTarget struct {
	c      *Client
	image  string
	prefix string // of every machine name
	dir    string

	once    sync.Once
	packed  Pack
	packErr error
}

func newConfTarget(t *testing.T, c *Client, image string) *confTarget {
	return &confTarget{c: c, image: image, prefix: "bqconf-" + randHex(t)[:6], dir: t.TempDir()}
}

// pack returns the image's pack, made on first use.
func (x *confTarget) pack(t *testing.T) Pack {
	t.Helper()
	x.once.Do(func() {
		x.packed, x.packErr = x.c.PackImage(context.Background(), x.image, filepath.Join(x.dir, "image"))
	})
	if x.packErr != nil {
		t.Fatalf("pack create --image %s: %v", x.image, x.packErr)
	}
	return x.packed
}

// name returns a machine name of the target's for suffix and deletes that
// machine, if it exists, when the test ends.
func (x *confTarget) name(t *testing.T, suffix string) string {
	name := x.prefix + "-" + suffix
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := x.c.Delete(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("cleanup: %v", err)
		}
	})
	return name
}

// create makes a machine from the target's pack (unless o names another).
func (x *confTarget) create(t *testing.T, suffix string, o CreateOptions) string {
	t.Helper()
	name := x.name(t, suffix)
	if o.From == "" {
		o.From = x.pack(t).Machine
	}
	if err := x.c.Create(context.Background(), name, o); err != nil {
		t.Fatal(err)
	}
	return name
}

func (x *confTarget) start(t *testing.T, name string) {
	t.Helper()
	if err := x.c.Start(context.Background(), name); err != nil {
		t.Fatal(err)
	}
}

// started makes and starts a machine from the target's pack.
func (x *confTarget) started(t *testing.T, suffix string) string {
	t.Helper()
	name := x.create(t, suffix, CreateOptions{})
	x.start(t, name)
	return name
}

// exec runs command in the machine; smolvm's own failures fail the test.
func (x *confTarget) exec(t *testing.T, name string, o ExecOptions, command ...string) ExecResult {
	t.Helper()
	res, err := x.c.Exec(context.Background(), name, command, o)
	if err != nil {
		t.Fatalf("exec %v: %v", command, err)
	}
	return res
}

// copyIn writes body to guest in the running machine.
func (x *confTarget) copyIn(t *testing.T, name, guest, body string) {
	t.Helper()
	host := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(host, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := x.c.CopyIn(context.Background(), name, host, guest, 0o644); err != nil {
		t.Fatal(err)
	}
}

// raw runs argv and returns what smolvm did.
func (x *confTarget) raw(t *testing.T, argv ...string) proc {
	t.Helper()
	p, err := x.c.run(context.Background(), argv, outputs{limit: 1 << 20})
	if err != nil {
		t.Fatalf("%v: %v", argv, err)
	}
	return p
}

// ok runs argv and fails the test unless it exits 0.
func (x *confTarget) ok(t *testing.T, argv ...string) proc {
	t.Helper()
	p := x.raw(t, argv...)
	if p.exitCode != 0 {
		t.Fatalf("%v: exit %d, stderr %q", redact(argv), p.exitCode, p.stderr)
	}
	return p
}

// machine returns the machine `ls --json` lists under name.
func (x *confTarget) machine(t *testing.T, name string) (Machine, bool) {
	t.Helper()
	ms, err := x.c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Name == name {
			return m, true
		}
	}
	return Machine{}, false
}

// confCreateArgv is `machine create` for name in v's dialect with extra
// options, for the options bottleq's own argv does not combine that way.
func confCreateArgv(v Version, name string, extra ...string) []string {
	argv := []string{"machine", "create"}
	if v.Dialect() == DialectNamed {
		argv = append(argv, "--name", name)
	}
	argv = append(argv, extra...)
	if v.Dialect() == DialectPositional {
		argv = append(argv, name)
	}
	return argv
}

// wantErr checks that err is an *Error with exit code code matching target
// (any cause if target is nil), and returns it.
func wantErr(t *testing.T, err, target error, code int) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.ExitCode != code || (target != nil && !errors.Is(err, target)) {
		t.Errorf("err = %v; want exit %d matching %v", err, code, target)
		return nil
	}
	return e
}

// withoutNote is stderr without the "note: " line smolvm 1.7.0 starts it
// with.
func withoutNote(stderr []byte) string {
	s := string(stderr)
	if strings.HasPrefix(s, "note: ") {
		_, s, _ = strings.Cut(s, "\n")
	}
	return s
}

func randHex(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
