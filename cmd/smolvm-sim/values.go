package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// The value parsers smolvm applies to flags (clap value parsers and its
// own validators).

// humanUnits are the units accepted by the humantime crate.
var humanUnits = map[string]time.Duration{
	"nsec": time.Nanosecond, "ns": time.Nanosecond,
	"usec": time.Microsecond, "us": time.Microsecond, "µs": time.Microsecond,
	"msec": time.Millisecond, "ms": time.Millisecond, "millis": time.Millisecond,
	"seconds": time.Second, "second": time.Second, "sec": time.Second, "secs": time.Second, "s": time.Second,
	"minutes": time.Minute, "minute": time.Minute, "min": time.Minute, "mins": time.Minute, "m": time.Minute,
	"hours": time.Hour, "hour": time.Hour, "hr": time.Hour, "hrs": time.Hour, "h": time.Hour,
	"days": 24 * time.Hour, "day": 24 * time.Hour, "d": 24 * time.Hour,
	"weeks": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour, "w": 7 * 24 * time.Hour,
	"months": 2629746 * time.Second, "month": 2629746 * time.Second, "M": 2629746 * time.Second,
	"years": 31556952 * time.Second, "year": 31556952 * time.Second, "y": 31556952 * time.Second,
}

// parseHumanDuration parses humantime durations such as "500ms", "2min" or "1h 30m".
// A bare number has no unit and is rejected, as in humantime.
func parseHumanDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("value was empty")
	}
	var total time.Duration
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("expected number at %q", s)
		}
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil {
			return 0, errors.New("number is too large")
		}
		s = s[i:]
		j := 0
		for j < len(s) && s[j] != ' ' && (s[j] < '0' || s[j] > '9') {
			j++
		}
		unit := s[:j]
		s = strings.TrimLeft(s[j:], " ")
		if unit == "" {
			return 0, errors.New("time unit needed, for example 5sec or 5ms")
		}
		mult, ok := humanUnits[unit]
		if !ok {
			return 0, fmt.Errorf("unknown time unit %q, supported units: ns, us, ms, sec, min, hours, days, weeks, months, years (and few variations)", unit)
		}
		total += time.Duration(n) * mult
	}
	return total, nil
}

// parseCIDR accepts a prefix or a bare IP (which becomes /32 or /128).
func parseCIDR(s string) (string, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.String(), nil
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return "", fmt.Errorf("invalid CIDR '%s'", s)
	}
	return netip.PrefixFrom(addr, addr.BitLen()).String(), nil
}

// validateName applies smolvm's validate_vm_name rules.
func validateName(name string) error {
	switch {
	case name == "":
		return errors.New("machine name cannot be empty")
	case len(name) > 128:
		return errors.New("machine name too long (max 128 bytes)")
	case !isAlnum(name[0]):
		return fmt.Errorf("machine name '%s' must start with an ASCII letter or digit", name)
	case strings.HasSuffix(name, "-"):
		return fmt.Errorf("machine name '%s' cannot end with '-'", name)
	case strings.Contains(name, "--"):
		return fmt.Errorf("machine name '%s' cannot contain '--'", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isAlnum(c) && c != '-' && c != '_' {
			return fmt.Errorf("machine name '%s' contains invalid character '%c' (allowed: letters, digits, '-', '_')", name, c)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// checkEnv accepts -e values of the form KEY=VALUE, the only one bottleq
// sends. (smolvm drops an empty KEY and copies a bare KEY from its own
// environment.) The error never shows the value.
func checkEnv(vals []string) error {
	for _, v := range vals {
		if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
			return notSimulated("an -e value other than KEY=VALUE")
		}
	}
	return nil
}
