package egress

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/bot-bottle/bottleq/internal/validate"
)

// DefaultMaxConns is the per-task cap on concurrent connections when
// [Policy.MaxConns] is 0.
const DefaultMaxConns = 32

// Policy is what one task may reach through the proxy.
type Policy struct {
	// Hosts lists the allowed hosts, each as [ParseHost] reads it: an
	// exact name "api.example.com", a wildcard "*.example.com" that
	// matches sub-domains at any depth but not example.com itself, or an
	// IP address; each optionally with ":port". An entry without a port
	// allows every port. Default: none, and every request is refused.
	Hosts []string
	// MaxConns caps the task's concurrent connections: open CONNECT
	// tunnels plus plain HTTP requests in flight. Default
	// [DefaultMaxConns]; negative is an error.
	MaxConns int
}

// HostRule is one parsed allow_hosts entry.
type HostRule struct {
	// Host is a lower-case host name without the "*." of a wildcard, or
	// an IP address in canonical form (IPv4-mapped IPv6 as IPv4).
	Host string
	// Wildcard makes the rule match names below Host, at any depth, and
	// not Host itself.
	Wildcard bool
	// Port is the one port the rule allows; 0 allows every port.
	Port int
}

// String returns the rule as ParseHost reads it: "*.example.com:443",
// "[2001:db8::1]", "example.com".
func (r HostRule) String() string {
	h := r.Host
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	if r.Wildcard {
		h = "*." + h
	}
	if r.Port != 0 {
		h += ":" + strconv.Itoa(r.Port)
	}
	return h
}

// Match reports whether the rule allows host:port. host is a name or an
// IP address, in any case, with or without brackets or one trailing dot.
func (r HostRule) Match(host string, port int) bool {
	if r.Port != 0 && r.Port != port {
		return false
	}
	host, isIP := canonicalHost(host)
	switch {
	case r.Wildcard:
		return !isIP && len(host) > len(r.Host)+1 && strings.HasSuffix(host, "."+r.Host)
	default:
		return host == r.Host
	}
}

// canonicalHost lower-cases host and strips brackets and one trailing dot;
// an IP address comes back in canonical form with isIP set.
func canonicalHost(host string) (canon string, isIP bool) {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if a, err := netip.ParseAddr(host); err == nil && a.Zone() == "" {
		return a.Unmap().String(), true
	}
	return strings.ToLower(strings.TrimSuffix(host, ".")), false
}

// ParseHost reads one allow_hosts entry; see [Policy.Hosts]. Its errors are
// one line naming the field allow_hosts.
func ParseHost(s string) (HostRule, error) {
	r, err := validate.Host(s)
	if err != nil {
		return HostRule{}, fmt.Errorf("allow_hosts: %q %v", s, err)
	}
	return HostRule(r), nil
}

func parseHosts(hosts []string) ([]HostRule, error) {
	rules := make([]HostRule, 0, len(hosts))
	for i, s := range hosts {
		r, err := validate.Host(s)
		if err != nil {
			return nil, fmt.Errorf("allow_hosts[%d]: %q %v", i, s, err)
		}
		rules = append(rules, HostRule(r))
	}
	return rules, nil
}
