package worker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// The VM's box: what a task's VM may use. smolvm gives a machine created
// --from a pack whatever the pack's manifest says unless create overrides
// it (docs/smolvm.md, machine create and Network policy): its CPUs and
// memory unless --cpus/--mem differ from smolvm's defaults, and its network
// flag whatever create says. So the worker always asks for the resources,
// reads back with `machine status` what the VM got, and takes away a
// network the pack turned on, or refuses the task where smolvm cannot.

// dnsNowhere is the DNS server a VM without a proxy gets when its pack
// forces a network on, and a VM behind an IPv6 proxy (smolvm's --dns takes
// IPv4 only): 192.0.2.1, in TEST-NET-1 (RFC 5737), an address reserved for
// documentation that no network routes to a host, so the queries smolvm
// forwards for the guest go unanswered instead of reaching a resolver.
var dnsNowhere = netip.MustParseAddr("192.0.2.1")

// checkVMConfig fills in and checks Config.VMCPUs and Config.VMMemMiB.
func checkVMConfig(cfg *Config) error {
	if cfg.VMCPUs == 0 {
		cfg.VMCPUs = DefaultVMCPUs
	}
	if cfg.VMMemMiB == 0 {
		cfg.VMMemMiB = DefaultVMMemMiB
	}
	if cfg.VMCPUs < 1 || cfg.VMCPUs > smolvm.MaxCPUs {
		return configErr("VMCPUs", "%d is outside 1..%d", cfg.VMCPUs, smolvm.MaxCPUs)
	}
	if cfg.VMMemMiB < 1 || int64(cfg.VMMemMiB) > smolvm.MaxMemoryMiB {
		return configErr("VMMemMiB", "%d MiB is outside 1..%d", cfg.VMMemMiB, int64(smolvm.MaxMemoryMiB))
	}
	return nil
}

// resources returns the vCPUs and MiB a task's VM gets: what its payload
// asks for, or the worker's caps when it asks for none. Asking for more
// than a cap is a *tasks.ValidationError naming the field and the cap.
func (h *Handler) resources(p tasks.AgentRun) (cpus, memMiB int, err error) {
	cpus, memMiB = h.cfg.VMCPUs, h.cfg.VMMemMiB
	if p.CPUs > cpus {
		return 0, 0, &tasks.ValidationError{Field: "cpus", Reason: fmt.Sprintf("%d vCPUs is over this worker's cap of %d", p.CPUs, cpus)}
	}
	if p.MemMiB > memMiB {
		return 0, 0, &tasks.ValidationError{Field: "mem_mib", Reason: fmt.Sprintf("%d MiB is over this worker's cap of %d MiB", p.MemMiB, memMiB)}
	}
	if p.CPUs > 0 {
		cpus = p.CPUs
	}
	if p.MemMiB > 0 {
		memMiB = p.MemMiB
	}
	return cpus, memMiB, nil
}

// dnsServer is the --dns a VM with an allow-list gets, or the zero Addr
// where smolvm cannot set it. The guest needs no DNS: the egress proxy
// resolves names. An IPv4 proxy's own address is used because nothing else
// may serve on it; anything else gets dnsNowhere.
func (h *Handler) dnsServer() netip.Addr {
	if !h.cfg.Smolvm.Version().Supports(smolvm.FeatureDNS) {
		return netip.Addr{}
	}
	if h.proxy != nil && h.proxy.Prefix.Addr().Is4() {
		return h.proxy.Prefix.Addr()
	}
	return dnsNowhere
}

// createOptions are the first create's options: the pack, the task's
// resources, and with a proxy its allow-list, DNS server and variables.
// Without a proxy there is no network flag: the VM has no network device
// unless its pack turns one on (see createBoxed).
func (r *run) createOptions(from string, cpus, memMiB int) smolvm.CreateOptions {
	o := smolvm.CreateOptions{From: from, CPUs: cpus, MemoryMiB: memMiB}
	if p := r.h.proxy; p != nil {
		o.AllowCIDRs = []netip.Prefix{p.Prefix}
		o.DNS = r.h.dnsServer()
		o.Env = p.env()
	}
	return o
}

// createBoxed is the create phase: it creates the VM, reads back what
// smolvm gave it, and fails closed when that is more than asked for. A VM
// without a proxy whose pack turned a network on is created again with
// --outbound-localhost-only (smolvm ≥ 1.8.0); older releases cannot take
// the network away, and the task is refused. A refused VM is deleted by
// the teardown, like every other.
func (r *run) createBoxed(ctx context.Context, o smolvm.CreateOptions) error {
	m, err := r.createChecked(ctx, o)
	if err != nil || !m.Network || r.h.proxy != nil {
		return err
	}
	v := r.h.cfg.Smolvm.Version()
	if !v.Supports(smolvm.FeatureFromEgress) {
		return &tasks.ValidationError{Field: r.sourceField(), Reason: fmt.Sprintf(
			"the pack has network on and smolvm %s cannot turn it off; use a pack without network, a worker with an egress proxy, or smolvm %s or later",
			v, smolvm.FeatureFromEgress.Since())}
	}
	r.log.Info().Str("phase", tasks.PhaseCreate).Msg("the pack has network on: creating the VM again with loopback-only egress")
	if err := r.h.cfg.Smolvm.Delete(ctx, r.vm); err != nil && !errors.Is(err, smolvm.ErrNotFound) {
		return err
	}
	r.created = false
	r.h.vms(-1)
	o.LocalhostOnly, o.DNS = true, r.h.dnsServer()
	_, err = r.createChecked(ctx, o)
	return err
}

// createChecked creates the VM and checks with `machine status` that it
// has no more vCPUs and memory than o asks for.
func (r *run) createChecked(ctx context.Context, o smolvm.CreateOptions) (smolvm.Machine, error) {
	if err := r.create(ctx, o); err != nil {
		return smolvm.Machine{}, err
	}
	m, err := r.h.cfg.Smolvm.Status(ctx, r.vm)
	if err != nil {
		return m, err
	}
	var over []string
	if m.CPUs > o.CPUs {
		over = append(over, fmt.Sprintf("%d vCPUs where this task may have %d", m.CPUs, o.CPUs))
	}
	if m.MemoryMiB > o.MemoryMiB {
		over = append(over, fmt.Sprintf("%d MiB where this task may have %d", m.MemoryMiB, o.MemoryMiB))
	}
	if len(over) > 0 {
		return m, &tasks.ValidationError{Field: r.sourceField(), Reason: fmt.Sprintf(
			"the pack gives the VM %s: smolvm keeps a pack's values when asked for exactly its defaults (%d vCPUs, %d MiB); ask for other values (payload cpus/mem_mib, worker -vm-cpus/-vm-mem) or repack",
			strings.Join(over, " and "), smolvm.DefaultCPUs, smolvm.DefaultMemoryMiB)}
	}
	return m, nil
}

// sourceField is the payload field that names the task's pack.
func (r *run) sourceField() string {
	if r.p.Image != "" {
		return "image"
	}
	return "from"
}
