// Package validate holds the input rules that the wire contract (tasks),
// the smolvm client and the egress proxy share, so each rule has one
// implementation: environment variable names, guest paths smolvm cp can
// carry, and allow_hosts entries.
//
// It is pure and imports only the standard library, so that tasks, which
// producers import, stays a leaf. Its errors are reasons without a field
// name; each caller puts them under its own field.
package validate

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
)

// EnvKey checks that key is a portable environment variable name: a letter
// or '_' first, then letters, digits and '_'. Its error never quotes the
// key, which may be a secret typed where a name belongs ("sk-..."): it
// gives the key's length and where the first byte that does not belong
// is.
func EnvKey(key string) error {
	if key == "" {
		return errors.New("key must not be empty")
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c == '_' || isAlpha(c) || (i > 0 && isDigit(c)):
			continue
		case i == 0 && isDigit(c):
			return fmt.Errorf("a key of %d bytes is not a valid name: it starts with a digit", len(key))
		}
		return fmt.Errorf("a key of %d bytes is not a valid name: byte %d is not an ASCII letter, digit or '_'", len(key), i+1)
	}
	return nil
}

// MaxGuestPathLen is the longest guest path [GuestPath] accepts (Linux's
// PATH_MAX).
const MaxGuestPathLen = 4096

// GuestPath checks a path in a machine that smolvm cp can carry: absolute,
// already clean (path.Clean leaves it as is, so no "." or ".." segment, no
// "//" and no trailing '/'), not "/" itself, at most MaxGuestPathLen bytes,
// and without ':' (smolvm cp reads the first ':' of an argument as the
// MACHINE:PATH separator) or a NUL byte.
func GuestPath(p string) error {
	switch {
	case p == "":
		return errors.New("must not be empty")
	case strings.ContainsRune(p, 0):
		return errors.New("must not contain a NUL byte")
	case len(p) > MaxGuestPathLen:
		return fmt.Errorf("is %d bytes, longer than %d", len(p), MaxGuestPathLen)
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("%q must be an absolute guest path", p)
	case p == "/":
		return errors.New("must name a file, not \"/\"")
	case strings.Contains(p, ":"):
		return fmt.Errorf("%q must not contain ':' (smolvm cp reads it as MACHINE:PATH)", p)
	case slices.Contains(strings.Split(p, "/"), ".."):
		return fmt.Errorf("%q must not contain a \"..\" segment", p)
	case path.Clean(p) != p:
		return fmt.Errorf("%q must be clean (it cleans to %q)", p, path.Clean(p))
	}
	return nil
}

// HostPattern is one allow_hosts entry, parsed by [Host].
type HostPattern struct {
	// Host is a lower-case host name without the "*." of a wildcard, or
	// an IP address in canonical form (IPv4-mapped IPv6 as IPv4).
	Host string
	// Wildcard means names below Host, at any depth, and not Host itself.
	Wildcard bool
	// Port is the one port the entry allows; 0 allows every port.
	Port int
}

// Host reads one allow_hosts entry: an exact name "api.example.com", a
// wildcard "*.example.com" of a name with at least two labels, or an IP
// address (IPv6 in brackets when it has a port); each optionally with
// ":port". Its error completes a sentence that starts with the quoted
// entry: `"a..b" has an empty label …`.
func Host(s string) (HostPattern, error) {
	r, reason := parseHost(s)
	if reason != "" {
		return HostPattern{}, errors.New(reason)
	}
	return r, nil
}

// parseHost returns the pattern, or a reason that completes `"s" ...`.
func parseHost(s string) (HostPattern, string) {
	const form = "must be a host name, *.domain or IP address, optionally with :port"
	switch {
	case s == "":
		return HostPattern{}, "is empty"
	case s == "*" || strings.HasPrefix(s, "*:"):
		return HostPattern{}, "would allow every host; list the hosts instead"
	case strings.Contains(s, "://") || strings.ContainsAny(s, "/?#@"):
		return HostPattern{}, "is a URL; " + form
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return HostPattern{}, "contains a space, control or non-ASCII character; " + form + " (IDNs in punycode)"
		}
	}
	host, port, hasPort := s, "", false
	bracketed := strings.HasPrefix(s, "[")
	switch {
	case bracketed:
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return HostPattern{}, "has no closing ]"
		}
		host = s[1:end]
		if rest := s[end+1:]; rest != "" {
			if rest[0] != ':' {
				return HostPattern{}, "has text after ]; " + form
			}
			port, hasPort = rest[1:], true
		}
	case strings.Count(s, ":") > 1: // bare IPv6, no port
	default:
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port, hasPort = s[:i], s[i+1:], true
		}
	}
	var r HostPattern
	if hasPort {
		p, reason := parsePort(port)
		if reason != "" {
			return HostPattern{}, reason
		}
		r.Port = p
	}
	if strings.HasPrefix(host, "*.") {
		r.Wildcard, host = true, host[2:]
	}
	if strings.Contains(host, "*") {
		return HostPattern{}, "has a * that is not a whole first label, as in *.example.com"
	}
	if host == "" {
		return HostPattern{}, "has no host; " + form
	}
	if a, err := netip.ParseAddr(host); err == nil {
		switch {
		case a.Zone() != "":
			return HostPattern{}, "has an IPv6 zone, which is not allowed"
		case r.Wildcard:
			return HostPattern{}, "is a wildcard of an IP address; " + form
		case bracketed && !a.Is6():
			return HostPattern{}, "puts an IPv4 address in brackets; brackets are for IPv6, as in [2001:db8::1]:443"
		}
		r.Host = a.Unmap().String()
		return r, ""
	}
	if bracketed || strings.Contains(host, ":") {
		return HostPattern{}, "is not a valid IP address"
	}
	name, reason := HostName(host)
	if reason != "" {
		return HostPattern{}, reason
	}
	if r.Wildcard && !strings.Contains(name, ".") {
		return HostPattern{}, "is a wildcard of a top-level domain; use *.example.com or narrower"
	}
	r.Host = name
	return r, ""
}

// HostName checks a DNS host name (at most 253 bytes of labels of letters,
// digits, '-' and '_') and returns it in lower case, or a reason it is
// not one.
func HostName(s string) (string, string) {
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

func parsePort(s string) (int, string) {
	const reason = "has a port that is not a number from 1 to 65535"
	if s == "" || len(s) > 5 || strings.Trim(s, "0123456789") != "" {
		return 0, reason
	}
	p, _ := strconv.Atoi(s)
	if p < 1 || p > 65535 {
		return 0, reason
	}
	return p, ""
}

func isAlpha(c byte) bool { return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
