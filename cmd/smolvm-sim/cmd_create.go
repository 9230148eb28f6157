package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Defaults of --cpus and --mem, which --from overrides with the pack's.
const (
	defaultCPUs      = 4
	defaultMemoryMiB = 8192
)

// create handles `machine create`.
func (a *app) create(args []string) error {
	p, err := parseArgs(args, a.createFlags(), false)
	if err != nil {
		return err
	}
	m := &machine{State: stateCreated, CreatedAt: time.Now().Unix(), Labels: map[string]string{}}
	// smolvm ≤ 1.0.1 names an unnamed machine vm-XXXXXXXX; bottleq names its own.
	if m.Name, err = a.machineName(p, notSimulated("an unnamed machine")); err != nil {
		return err
	}
	a.call.Name = m.Name
	if m.CPUs, err = uintFlag(p, flagCPUs, defaultCPUs, 255); err != nil {
		return err
	}
	if m.MemoryMiB, err = uintFlag(p, flagMem, defaultMemoryMiB, 1<<32-1); err != nil {
		return err
	}
	var cidrs []string
	for _, c := range p.all("allow-cidr") {
		norm, err := parseCIDR(c)
		if err != nil {
			return usagef("invalid value '%s' for '--allow-cidr <CIDR>': %v", c, err)
		}
		cidrs = append(cidrs, norm)
	}
	for _, l := range p.all("label") {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return usagef("invalid value '%s' for '%s': expected KEY=VALUE", l, flagLabel.display())
		}
		m.Labels[k] = v
	}
	if p.has(flagLocal.long) {
		cidrs = append(cidrs, "127.0.0.0/8", "::1/128")
	}
	if p.has("dns") {
		// An Ipv4Addr in clap: an IPv6 address is a parse error too.
		if a, err := netip.ParseAddr(p.get("dns")); err != nil || !a.Is4() {
			return usagef("invalid value '%s' for '%s': invalid IPv4 address syntax", p.get("dns"), flagDNS.display())
		}
		m.DNS = p.get("dns")
	}
	if err := checkEnv(p.all("env")); err != nil {
		return err
	}

	// Tool-level validation: exit 1 with "Error: ...".
	if err := validateName(m.Name); err != nil {
		return configErr("create machine", err.Error())
	}
	if m.CPUs == 0 || m.MemoryMiB == 0 {
		return configErr("create machine", "--cpus and --mem must be greater than 0")
	}
	m.AllowedCIDRs, m.Env = cidrs, p.all("env")
	if p.has("from") {
		if err := a.inherit(m, p.get("from"), p.has("net")); err != nil {
			return err
		}
	} else {
		// Without --from an allow-list (--outbound-localhost-only's
		// included) or --dns implies --net.
		m.Network = p.has("net") || len(cidrs) > 0 || m.DNS != ""
	}

	if err := a.gate("create"); err != nil {
		return err
	}
	st, err := a.openStore()
	if err != nil {
		return err
	}
	if m.From != "" {
		fmt.Fprintln(a.stderr, "Extracting .smolmachine assets...")
	}
	err = st.locked(func() error {
		if old, err := st.get(m.Name); err != nil || old != nil {
			if err != nil {
				return err
			}
			// smolvm 0.8.0 and 1.9.3 word it differently; 1.9.0 is the simulator's boundary.
			suffix := "already exists"
			if a.ver.atLeast(1, 9, 0) {
				suffix = "already exists or is being created"
			}
			return configErr("create machine", fmt.Sprintf("machine '%s' %s", m.Name, suffix))
		}
		root := st.root(m.Name)
		if err := os.RemoveAll(root); err != nil {
			return err
		}
		if err := os.MkdirAll(root, 0o755); err != nil {
			return err
		}
		// From 1.0.0 a machine gets its own copy of the packed files at create.
		if m.From != "" && a.ver.atLeast(1, 0, 0) {
			if err := extractRootfs(m.From, root); err != nil {
				os.RemoveAll(root)
				return configErr("create from .smolmachine", err.Error())
			}
		}
		return st.put(m)
	})
	if err != nil {
		return err
	}
	a.call.Created = &createdRecord{CPUs: m.CPUs, MemoryMiB: m.MemoryMiB, Network: m.Network, AllowedCIDRs: m.AllowedCIDRs, DNS: m.DNS}
	fmt.Fprintf(a.stdout, "Created machine: %s\n  CPUs: %d, Memory: %d MiB\n", m.Name, m.CPUs, m.MemoryMiB)
	fmt.Fprintf(a.stdout, "\nUse 'smolvm machine start --name %s' to start the machine.\n", m.Name)
	fmt.Fprintf(a.stdout, "Then 'smolvm machine exec --name %s -- <command>' to run commands.\n", m.Name)
	return nil
}

// inherit fills m from the pack at from (docs/smolvm.md, "machine create",
// "Network policy" and "Pack files and names"): its image and env (create's
// -e after it), its cpus and mem unless the flags differ from smolvm's
// defaults (asking for exactly the default cannot override the pack), and
// its network. From 1.8.0 the allow-list flags (--allow-cidr,
// --outbound-localhost-only) apply and imply a network; before, the --from
// path drops them without a word: the machine has a network if the pack or
// --net says so, and no allow-list at all. --dns never turns a network on
// here.
func (a *app) inherit(m *machine, from string, net bool) error {
	var err error
	if m.From, err = filepath.Abs(from); err != nil {
		return err
	}
	src, err := readManifest(m.From)
	if errors.Is(err, fs.ErrNotExist) {
		return configErr("create from .smolmachine", "file not found: "+from)
	}
	if err != nil {
		return configErr("create from .smolmachine", err.Error())
	}
	m.Image, m.Env = src.Image, append(append([]string{}, src.Env...), m.Env...)
	if m.CPUs == defaultCPUs && src.CPUs > 0 {
		m.CPUs = src.CPUs
	}
	if m.MemoryMiB == defaultMemoryMiB && src.Mem > 0 {
		m.MemoryMiB = src.Mem
	}
	if a.ver.atLeast(1, 8, 0) {
		m.Network = src.Network || net || len(m.AllowedCIDRs) > 0
	} else {
		m.Network, m.AllowedCIDRs = src.Network || net, nil
	}
	return nil
}
