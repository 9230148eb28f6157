package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// flagSpec describes one clap option.
type flagSpec struct {
	long  string
	short byte   // 0 when there is no short form
	value string // value placeholder; "" for a boolean flag
	multi bool   // may be repeated (clap Append), one value per occurrence
}

func (f flagSpec) display() string {
	if f.value == "" {
		return "--" + f.long
	}
	return fmt.Sprintf("--%s <%s>", f.long, f.value)
}

// parsed is the result of parseArgs.
type parsed struct {
	vals map[string][]string // by long name; booleans hold ""
	pos  []string            // positionals before "--"
	rest []string            // everything after the first "--"
}

func (p *parsed) has(long string) bool     { _, ok := p.vals[long]; return ok }
func (p *parsed) all(long string) []string { return p.vals[long] }

func (p *parsed) get(long string) string {
	v := p.vals[long]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// parseArgs parses args like clap: --long, --long=v, --long v, -s v, -sv,
// clustered boolean shorts, "--" ending options. With trailing set, the first
// positional and everything after it are positionals (trailing_var_arg).
func parseArgs(args []string, specs []flagSpec, trailing bool) (*parsed, error) {
	p := &parsed{vals: map[string][]string{}}
	byLong := map[string]flagSpec{}
	byShort := map[byte]flagSpec{}
	for _, f := range specs {
		byLong[f.long] = f
		if f.short != 0 {
			byShort[f.short] = f
		}
	}
	set := func(f flagSpec, v string) error {
		if p.has(f.long) && !f.multi {
			return usagef("the argument '%s' cannot be used multiple times", f.display())
		}
		p.vals[f.long] = append(p.vals[f.long], v)
		return nil
	}
	next := func(i *int, f flagSpec) (string, error) {
		if *i+1 >= len(args) || isFlagLike(args[*i+1]) {
			return "", usagef("a value is required for '%s' but none was supplied", f.display())
		}
		*i++
		return args[*i], nil
	}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case trailing && len(p.pos) > 0:
			p.pos = append(p.pos, arg)
		case arg == "--":
			p.rest = args[i+1:]
			return p, nil
		case arg == "--help" || arg == "-h":
			return nil, errHelp
		case strings.HasPrefix(arg, "--"):
			name, val, hasVal := strings.Cut(arg[2:], "=")
			f, ok := byLong[name]
			if !ok {
				return nil, usagef("unexpected argument '--%s' found", name)
			}
			if f.value == "" && hasVal {
				return nil, usagef("unexpected value '%s' for '%s' found; no more were expected", val, f.display())
			}
			if f.value != "" && !hasVal {
				var err error
				if val, err = next(&i, f); err != nil {
					return nil, err
				}
			}
			if err := set(f, val); err != nil {
				return nil, err
			}
		case isFlagLike(arg):
			for j := 1; j < len(arg); j++ {
				f, ok := byShort[arg[j]]
				if !ok {
					return nil, usagef("unexpected argument '-%c' found", arg[j])
				}
				if f.value == "" {
					if err := set(f, ""); err != nil {
						return nil, err
					}
					continue
				}
				val := strings.TrimPrefix(arg[j+1:], "=")
				if j+1 == len(arg) {
					var err error
					if val, err = next(&i, f); err != nil {
						return nil, err
					}
				}
				if err := set(f, val); err != nil {
					return nil, err
				}
				break
			}
		default:
			p.pos = append(p.pos, arg)
		}
	}
	return p, nil
}

func isFlagLike(s string) bool { return len(s) > 1 && s[0] == '-' }

// missing is clap's error for an absent required argument.
func missing(what string) error {
	return usagef("the following required arguments were not provided:\n  %s", what)
}

// noPositionals rejects stray positionals for commands that take none.
func noPositionals(p *parsed) error {
	if len(p.pos) > 0 {
		return usagef("unexpected argument '%s' found", p.pos[0])
	}
	if len(p.rest) > 0 {
		return usagef("unexpected argument '%s' found", p.rest[0])
	}
	return nil
}

// uintFlag parses an unsigned flag value bounded by max, or returns def.
func uintFlag(p *parsed, f flagSpec, def, max uint64) (int, error) {
	if !p.has(f.long) {
		return int(def), nil
	}
	v := p.get(f.long)
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > max {
		return 0, usagef("invalid value '%s' for '%s': invalid digit or number out of range", v, f.display())
	}
	return int(n), nil
}

// semver is a smolvm release version.
type semver [3]int

func parseSemver(s string) (semver, error) {
	var v semver
	parts := strings.Split(strings.TrimPrefix(s, "v"), ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("%q is not X.Y.Z", s)
	}
	for i, part := range parts {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return v, fmt.Errorf("%q is not X.Y.Z", s)
		}
		v[i] = n
	}
	return v, nil
}

func (v semver) String() string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

func (v semver) atLeast(major, minor, patch int) bool {
	o := semver{major, minor, patch}
	for i := range v {
		if v[i] != o[i] {
			return v[i] > o[i]
		}
	}
	return true
}

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

// validateName applies smolvm's name rules (docs/smolvm.md, Pack files and names).
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

// envPairs turns -e values into KEY=VALUE entries: an empty key is dropped;
// a bare KEY is dropped (v0.8.0) or copied from the host environment (v0.8.1+).
func (a *app) envPairs(vals []string) []string {
	var out []string
	for _, v := range vals {
		key, val, hasEq := strings.Cut(v, "=")
		if key == "" {
			continue
		}
		if !hasEq {
			if !a.ver.atLeast(0, 8, 1) {
				continue
			}
			host, ok := a.lookupEnv(key)
			if !ok {
				continue
			}
			val = host
		}
		out = append(out, key+"="+val)
	}
	return out
}

func (a *app) lookupEnv(key string) (string, bool) {
	for i := len(a.env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(a.env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}
