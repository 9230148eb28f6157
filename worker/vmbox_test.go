package worker

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

var (
	boxV170 = smolvm.Version{Major: 1, Minor: 7}
	boxV180 = smolvm.Version{Major: 1, Minor: 8}
	boxV193 = smolvm.Version{Major: 1, Minor: 9, Patch: 3}
)

// hungry is a pack's manifest asking for everything: network on, 255 CPUs
// and 1 TiB.
var hungry = fakeBox{CPUs: 255, MemoryMiB: 1 << 20, Network: true}

// fakeWithPack is a fake smolvm at version v whose image packs say b.
func fakeWithPack(v smolvm.Version, b fakeBox) *fakeSmolvm {
	f := newFake()
	f.version = v
	f.packImage = func(_ context.Context, _, out string) (smolvm.Pack, error) { return writePackOf(out, b) }
	return f
}

// vmGauge sums the VMs hook, as the in-flight gauge does.
type vmGauge struct {
	mu       sync.Mutex
	now, max int
}

func (g *vmGauge) add(d int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.now += d
	g.max = max(g.max, g.now)
}

// TestVMResources: every create asks for the task's vCPUs and memory (the
// worker's caps unless the payload asks for less), and the VM gets them
// even from a pack whose manifest says more; a payload asking for more
// than a cap is archived without any smolvm call.
func TestVMResources(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		cpus, mem      int // the worker's caps; 0: the defaults
		payCPUs, payMB int
		wantCPUs       int
		wantMem        int
		wantErr        string
	}{
		{name: "defaults", wantCPUs: DefaultVMCPUs, wantMem: DefaultVMMemMiB},
		{name: "payload asks for less", payCPUs: 1, payMB: 512, wantCPUs: 1, wantMem: 512},
		{name: "payload asks for the cap", cpus: 8, mem: 16384, payCPUs: 8, payMB: 16384, wantCPUs: 8, wantMem: 16384},
		{name: "caps of the operator", cpus: 6, mem: 4096, wantCPUs: 6, wantMem: 4096},
		{name: "more cpus than the cap", payCPUs: 3, wantErr: "cpus: 3 vCPUs is over this worker's cap of 2"},
		{name: "more memory than the cap", cpus: 8, mem: 1024, payMB: 1025, wantErr: "mem_mib: 1025 MiB is over this worker's cap of 1024 MiB"},
		{name: "255 cpus", payCPUs: 255, wantErr: "cpus: 255 vCPUs is over this worker's cap of 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := fakeWithPack(boxV193, fakeBox{CPUs: 255, MemoryMiB: 1 << 20})
			h, _ := newHandler(t, f, func(c *Config) { c.VMCPUs, c.VMMemMiB = tt.cpus, tt.mem })
			p := basic
			p.CPUs, p.MemMiB = tt.payCPUs, tt.payMB
			var running smolvm.Machine
			f.exec = func(ctx context.Context, name string, _ []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
				running, _ = f.Status(ctx, name)
				return smolvm.ExecResult{}, nil
			}
			err := h.Run(context.Background(), Meta{ID: "res"}, payload(t, p), nil)
			if tt.wantErr != "" {
				if !errors.Is(err, asynq.SkipRetry) || err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Errorf("err = %v; want one line starting %q, archived", err, tt.wantErr)
				}
				if ops := f.ops(); len(ops) != 0 {
					t.Errorf("smolvm calls: %q; want none", ops)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o := f.lastCreate; o.CPUs != tt.wantCPUs || o.MemoryMiB != tt.wantMem {
				t.Errorf("create asked for %d vCPUs, %d MiB; want %d, %d", o.CPUs, o.MemoryMiB, tt.wantCPUs, tt.wantMem)
			}
			if running.CPUs != tt.wantCPUs || running.MemoryMiB != tt.wantMem {
				t.Errorf("the VM ran with %d vCPUs, %d MiB; want %d, %d", running.CPUs, running.MemoryMiB, tt.wantCPUs, tt.wantMem)
			}
		})
	}
}

// TestVMResourcesDefaultCannotOverride: asking for exactly smolvm's
// default (4 vCPUs or 8192 MiB) cannot override a pack that says more; the
// worker sees it in `machine status`, deletes the VM and refuses the task,
// naming what the pack gave.
func TestVMResourcesDefaultCannotOverride(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		cpus, mem int
		want      string
	}{
		{"cpus", smolvm.DefaultCPUs, 1024, "image: the pack gives the VM 255 vCPUs where this task may have 4:"},
		{"mem", 2, smolvm.DefaultMemoryMiB, "image: the pack gives the VM 1048576 MiB where this task may have 8192:"},
		{"both", smolvm.DefaultCPUs, smolvm.DefaultMemoryMiB, "image: the pack gives the VM 255 vCPUs where this task may have 4 and 1048576 MiB where this task may have 8192:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := fakeWithPack(boxV193, fakeBox{CPUs: 255, MemoryMiB: 1 << 20})
			var g vmGauge
			h, _ := newHandler(t, f, func(c *Config) { c.VMCPUs, c.VMMemMiB, c.Hooks.VMs = tt.cpus, tt.mem, g.add })
			var w results
			err := h.Run(context.Background(), Meta{ID: "dflt"}, payload(t, basic), &w)
			if !errors.Is(err, asynq.SkipRetry) || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("err = %v; want archived, starting %q", err, tt.want)
			}
			if n := f.count("start"); n != 0 {
				t.Errorf("the VM was started %d times", n)
			}
			if left := f.left(); len(left) != 0 || g.now != 0 {
				t.Errorf("machines left %q, gauge %d; want the VM deleted", left, g.now)
			}
			if r := w.result(t); r.Phase != tasks.PhaseCreate || !strings.HasPrefix(r.Error, tt.want) {
				t.Errorf("result phase %q error %q", r.Phase, r.Error)
			}
		})
	}
}

// TestNoProxyNoEgress: without a proxy, a VM from a pack whose manifest
// turns the network on gets none: on smolvm ≥ 1.8.0 it is created again
// with --outbound-localhost-only (and, from 1.9.3, a DNS server that
// answers nothing), with the resources the worker allows; before 1.8.0
// smolvm cannot take the network away, so the task is refused and the VM
// deleted before it ever starts. A pack with network off gets one create
// and no network flag at all.
func TestNoProxyNoEgress(t *testing.T) {
	t.Parallel()
	loop := []string{"127.0.0.0/8", "::1/128"}
	tests := []struct {
		name    string
		v       smolvm.Version
		pack    fakeBox
		creates []smolvm.CreateOptions // without From
		allow   []string               // the final VM's allow-list
		wantErr string
	}{
		{name: "network off", v: boxV193, pack: fakeBox{CPUs: 4, MemoryMiB: 8192},
			creates: []smolvm.CreateOptions{{CPUs: 2, MemoryMiB: 2048}}},
		{name: "network on, 1.9.3", v: boxV193, pack: hungry,
			creates: []smolvm.CreateOptions{{CPUs: 2, MemoryMiB: 2048}, {CPUs: 2, MemoryMiB: 2048, LocalhostOnly: true, DNS: dnsNowhere}},
			allow:   loop},
		{name: "network on, 1.8.0", v: boxV180, pack: hungry,
			creates: []smolvm.CreateOptions{{CPUs: 2, MemoryMiB: 2048}, {CPUs: 2, MemoryMiB: 2048, LocalhostOnly: true}},
			allow:   loop},
		{name: "network on, 1.7.0", v: boxV170, pack: hungry,
			creates: []smolvm.CreateOptions{{CPUs: 2, MemoryMiB: 2048}},
			wantErr: "image: the pack has network on and smolvm 1.7.0 cannot turn it off;"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := fakeWithPack(tt.v, tt.pack)
			var g vmGauge
			h, _ := newHandler(t, f, func(c *Config) { c.Hooks.VMs = g.add })
			var (
				box fakeBox
				ran bool
			)
			f.exec = func(_ context.Context, name string, _ []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
				box, ran = f.box(name)
				return smolvm.ExecResult{}, nil
			}
			err := h.Run(context.Background(), Meta{ID: "egress"}, payload(t, basic), nil)
			var got []smolvm.CreateOptions
			for _, o := range f.creates {
				o.From = ""
				got = append(got, o)
			}
			if !slices.EqualFunc(got, tt.creates, sameCreate) {
				t.Errorf("creates:\n got %+v\nwant %+v", got, tt.creates)
			}
			if left := f.left(); len(left) != 0 || g.now != 0 || g.max > 1 {
				t.Errorf("machines left %q, gauge now %d max %d", left, g.now, g.max)
			}
			if tt.wantErr != "" {
				if !errors.Is(err, asynq.SkipRetry) || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Errorf("err = %v; want archived, starting %q", err, tt.wantErr)
				}
				if ran || f.count("start") != 0 {
					t.Error("the VM was started")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !ran || box.CPUs != 2 || box.MemoryMiB != 2048 || box.Network != (tt.allow != nil) || !slices.Equal(box.Allow, tt.allow) {
				t.Errorf("the VM ran with %+v; want 2 vCPUs, 2048 MiB, allow-list %v", box, tt.allow)
			}
		})
	}
}

// TestProxyBox: with a proxy the VM may reach only its address, and from
// 1.9.3 sends DNS there too (an IPv6 proxy cannot be --dns, which takes
// IPv4: its VMs get the address that answers nothing); a pack with network
// on needs nothing more, since the allow-list applies (from 1.8.0).
func TestProxyBox(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		v     smolvm.Version
		proxy string
		allow string
		dns   netip.Addr
	}{
		{"1.9.3", boxV193, "http://10.0.2.2:3128", "10.0.2.2/32", netip.MustParseAddr("10.0.2.2")},
		{"1.9.3 IPv6 proxy", boxV193, "http://[fd00::2]:3128", "fd00::2/128", dnsNowhere},
		{"1.8.0", boxV180, "http://10.0.2.2:3128", "10.0.2.2/32", netip.Addr{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := fakeWithPack(tt.v, hungry)
			h, _ := newHandler(t, f, func(c *Config) { c.ProxyURL = tt.proxy })
			var box fakeBox
			f.exec = func(_ context.Context, name string, _ []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
				box, _ = f.box(name)
				return smolvm.ExecResult{}, nil
			}
			if err := h.Run(context.Background(), Meta{ID: "proxied"}, payload(t, basic), nil); err != nil {
				t.Fatal(err)
			}
			if len(f.creates) != 1 {
				t.Fatalf("%d creates; want 1", len(f.creates))
			}
			o := f.creates[0]
			if len(o.AllowCIDRs) != 1 || o.AllowCIDRs[0].String() != tt.allow || o.DNS != tt.dns || o.LocalhostOnly || o.CPUs != 2 || o.MemoryMiB != 2048 {
				t.Errorf("create %+v; want allow %s, dns %v, 2 vCPUs, 2048 MiB", o, tt.allow, tt.dns)
			}
			if !slices.Equal(box.Allow, []string{tt.allow}) || box.CPUs != 2 || box.MemoryMiB != 2048 {
				t.Errorf("the VM ran with %+v", box)
			}
		})
	}
}

// TestVMConfig: the caps must be values smolvm takes.
func TestVMConfig(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cpus, mem int
		field     string
	}{
		{-1, 0, "VMCPUs"},
		{smolvm.MaxCPUs + 1, 0, "VMCPUs"},
		{0, -5, "VMMemMiB"},
		{1, smolvm.MaxMemoryMiB + 1, "VMMemMiB"},
		{smolvm.MaxCPUs, smolvm.MaxMemoryMiB, ""},
	} {
		_, err := NewHandler(Config{Smolvm: newFake(), DataDir: t.TempDir(), VMCPUs: tt.cpus, VMMemMiB: tt.mem})
		var ce *ConfigError
		if tt.field == "" && err != nil || tt.field != "" && (!errors.As(err, &ce) || ce.Field != tt.field) {
			t.Errorf("VMCPUs %d VMMemMiB %d: err = %v; want field %q", tt.cpus, tt.mem, err, tt.field)
		}
	}
}

func sameCreate(a, b smolvm.CreateOptions) bool {
	return a.From == b.From && a.CPUs == b.CPUs && a.MemoryMiB == b.MemoryMiB && slices.Equal(a.AllowCIDRs, b.AllowCIDRs) &&
		a.LocalhostOnly == b.LocalhostOnly && a.DNS == b.DNS && len(a.Labels) == len(b.Labels) && len(a.Env) == len(b.Env)
}
