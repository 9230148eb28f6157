package egress

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

var (
	cgnat     = netip.MustParsePrefix("100.64.0.0/10")
	siteLocal = netip.MustParsePrefix("fec0::/10") // deprecated, still private
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
	// reserved are ranges no task has a reason to reach.
	reserved = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
		netip.MustParsePrefix("240.0.0.0/4"),    // reserved, and broadcast
		netip.MustParsePrefix("::/96"),          // IPv4-compatible, deprecated
		netip.MustParsePrefix("100::/64"),       // discard-only
		netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
	}
)

// forbidden returns why ap is below the floor no policy can lift, or "".
// local is this host's addresses, from localAddrs.
func (p *Proxy) forbidden(ap netip.AddrPort, local map[netip.Addr]bool) string {
	a := ap.Addr().Unmap()
	if p.isSelf(netip.AddrPortFrom(a, ap.Port())) {
		return "the proxy itself"
	}
	return p.forbiddenAddr(a, local, true)
}

func (p *Proxy) forbiddenAddr(a netip.Addr, local map[netip.Addr]bool, recurse bool) string {
	if a.IsValid() {
		for _, d := range p.cfg.Deny {
			if d.Contains(a) {
				return "denied by the operator"
			}
		}
	}
	switch {
	case !a.IsValid():
		return "invalid"
	case a.IsUnspecified():
		return "unspecified"
	case local[a]:
		return "this host"
	case a.IsLoopback():
		if p.cfg.AllowLoopback {
			return ""
		}
		return "loopback"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsMulticast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast():
		return "multicast"
	}
	for _, r := range reserved {
		if r.Contains(a) {
			return "reserved"
		}
	}
	if a.IsPrivate() || cgnat.Contains(a) || siteLocal.Contains(a) {
		if p.cfg.AllowPrivate {
			return ""
		}
		return "private"
	}
	// IPv6 forms that carry an IPv4 address a gateway may translate to.
	if recurse && (nat64.Contains(a) || sixToFour.Contains(a)) {
		b := a.As16()
		v4 := netip.AddrFrom4([4]byte(b[12:16]))
		if sixToFour.Contains(a) {
			v4 = netip.AddrFrom4([4]byte(b[2:6]))
		}
		if why := p.forbiddenAddr(v4, local, false); why != "" {
			return why + " (embedded IPv4 " + v4.String() + ")"
		}
	}
	return ""
}

// localAddrs returns this host's addresses, loopback aside (AllowLoopback
// governs those), as a set. It is read for every request, so an address
// the host gains later is covered too.
func (p *Proxy) localAddrs() (map[netip.Addr]bool, error) {
	addrs, err := p.cfg.LocalAddrs()
	if err != nil {
		return nil, err
	}
	set := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if a = a.Unmap().WithZone(""); a.IsValid() && !a.IsLoopback() {
			set[a] = true
		}
	}
	return set, nil
}

// interfaceAddrs is the default [Config.LocalAddrs]: every address of
// every interface.
func interfaceAddrs() ([]netip.Addr, error) {
	ias, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(ias))
	for _, ia := range ias {
		var ip net.IP
		switch v := ia.(type) {
		case *net.IPNet:
			ip = v.IP
		case *net.IPAddr:
			ip = v.IP
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}

// Prefixes is a list of address ranges, as [Config.Deny] takes it, that is
// also a [flag.Value]: each Set adds a comma-separated list of CIDRs
// (10.0.0.0/8, fd00::/8) or addresses (192.0.2.1, taken as /32), so a
// flag can be repeated and one environment variable can hold several.
type Prefixes []netip.Prefix

// Set adds the ranges in s, a comma-separated list. Its error does not
// quote s, which may come from the environment.
func (ps *Prefixes) Set(s string) error {
	items := strings.Split(s, ",")
	add := make([]netip.Prefix, 0, len(items))
	for i, item := range items {
		pfx, err := parsePrefix(strings.TrimSpace(item))
		if err != nil {
			if len(items) > 1 {
				return fmt.Errorf("item %d of %d: %w", i+1, len(items), err)
			}
			return err
		}
		add = append(add, pfx)
	}
	*ps = append(*ps, add...)
	return nil
}

// String returns the ranges comma-separated, as Set reads them.
func (ps *Prefixes) String() string {
	if ps == nil {
		return ""
	}
	ss := make([]string, len(*ps))
	for i, p := range *ps {
		ss[i] = p.String()
	}
	return strings.Join(ss, ",")
}

var errPrefix = errors.New("not a CIDR (10.0.0.0/8, fd00::/8) or an IP address")

// parsePrefix reads a CIDR or an address, and returns it as normPrefix
// does, since the floor compares unmapped addresses.
func parsePrefix(s string) (netip.Prefix, error) {
	var pfx netip.Prefix
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, errPrefix
		}
		pfx = p
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, errPrefix
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	if pfx.Addr().Is4In6() && pfx.Bits() < 96 {
		return netip.Prefix{}, errors.New("an IPv4-mapped range shorter than /96; write it as IPv4 or IPv6")
	}
	return normPrefix(pfx), nil
}

// normPrefix masks p, and turns an IPv4-mapped IPv6 range of /96 or
// longer into the IPv4 range it maps.
func normPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked()
}
