package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
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
	r, reason := parseHost(s)
	if reason != "" {
		return HostRule{}, fmt.Errorf("allow_hosts: %q %s", s, reason)
	}
	return r, nil
}

// ValidateHosts checks every entry of an allow_hosts list with
// [ParseHost]. Its error names the first bad entry by index.
func ValidateHosts(hosts []string) error {
	_, err := parseHosts(hosts)
	return err
}

func parseHosts(hosts []string) ([]HostRule, error) {
	rules := make([]HostRule, 0, len(hosts))
	for i, s := range hosts {
		r, reason := parseHost(s)
		if reason != "" {
			return nil, fmt.Errorf("allow_hosts[%d]: %q %s", i, s, reason)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// parseHost returns the rule, or a reason that completes `"s" ...`.
func parseHost(s string) (HostRule, string) {
	const form = "must be a host name, *.domain or IP address, optionally with :port"
	switch {
	case s == "":
		return HostRule{}, "is empty"
	case s == "*" || strings.HasPrefix(s, "*:"):
		return HostRule{}, "would allow every host; list the hosts instead"
	case strings.Contains(s, "://") || strings.ContainsAny(s, "/?#@"):
		return HostRule{}, "is a URL; " + form
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return HostRule{}, "contains a space, control or non-ASCII character; " + form + " (IDNs in punycode)"
		}
	}
	host, port, hasPort := s, "", false
	bracketed := strings.HasPrefix(s, "[")
	switch {
	case bracketed:
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return HostRule{}, "has no closing ]"
		}
		host = s[1:end]
		if rest := s[end+1:]; rest != "" {
			if rest[0] != ':' {
				return HostRule{}, "has text after ]; " + form
			}
			port, hasPort = rest[1:], true
		}
	case strings.Count(s, ":") > 1: // bare IPv6, no port
	default:
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port, hasPort = s[:i], s[i+1:], true
		}
	}
	var r HostRule
	if hasPort {
		p, err := parsePort(port)
		if err != nil {
			return HostRule{}, err.Error()
		}
		r.Port = p
	}
	if strings.HasPrefix(host, "*.") {
		r.Wildcard, host = true, host[2:]
	}
	if strings.Contains(host, "*") {
		return HostRule{}, "has a * that is not a whole first label, as in *.example.com"
	}
	if host == "" {
		return HostRule{}, "has no host; " + form
	}
	if a, err := netip.ParseAddr(host); err == nil {
		switch {
		case a.Zone() != "":
			return HostRule{}, "has an IPv6 zone, which is not allowed"
		case r.Wildcard:
			return HostRule{}, "is a wildcard of an IP address; " + form
		case bracketed && !a.Is6():
			return HostRule{}, "puts an IPv4 address in brackets; brackets are for IPv6, as in [2001:db8::1]:443"
		}
		r.Host = a.Unmap().String()
		return r, ""
	}
	if bracketed || strings.Contains(host, ":") {
		return HostRule{}, "is not a valid IP address"
	}
	name, reason := parseName(host)
	if reason != "" {
		return HostRule{}, reason
	}
	if r.Wildcard && !strings.Contains(name, ".") {
		return HostRule{}, "is a wildcard of a top-level domain; use *.example.com or narrower"
	}
	r.Host = name
	return r, ""
}

// parseName checks a DNS host name (labels of letters, digits, '-' and
// '_') and returns it in lower case.
func parseName(s string) (string, string) {
	if len(s) > 253 {
		return "", "is longer than 253 characters"
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" {
			return "", "has an empty label (.. or a leading or trailing dot)"
		}
		if len(l) > 63 {
			return "", "has a label longer than 63 characters"
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", "has a label that starts or ends with '-'"
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Sprintf("has %q, which is not allowed in a host name", string(c))
			}
		}
	}
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		return "", "is neither a valid IP address nor a host name (its last label is numeric)"
	}
	return strings.ToLower(s), ""
}

func parsePort(s string) (int, error) {
	if s == "" || len(s) > 5 || strings.Trim(s, "0123456789") != "" {
		return 0, errors.New("has a port that is not a number from 1 to 65535")
	}
	p, _ := strconv.Atoi(s)
	if p < 1 || p > 65535 {
		return 0, errors.New("has a port that is not a number from 1 to 65535")
	}
	return p, nil
}
