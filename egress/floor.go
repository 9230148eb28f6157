package egress

import (
	"net/netip"
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
func (p *Proxy) forbidden(ap netip.AddrPort) string {
	a := ap.Addr().Unmap()
	if p.isSelf(netip.AddrPortFrom(a, ap.Port())) {
		return "the proxy itself"
	}
	return p.forbiddenAddr(a, true)
}

func (p *Proxy) forbiddenAddr(a netip.Addr, recurse bool) string {
	switch {
	case !a.IsValid():
		return "invalid"
	case a.IsUnspecified():
		return "unspecified"
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
		if why := p.forbiddenAddr(v4, false); why != "" {
			return why + " (embedded IPv4 " + v4.String() + ")"
		}
	}
	return ""
}
