package main

import (
	"fmt"
	"strconv"
	"strings"
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
