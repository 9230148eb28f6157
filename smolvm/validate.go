package smolvm

import (
	"path/filepath"
	"strings"

	"github.com/bot-bottle/bottleq/internal/validate"
)

// maxNameLen is the longest machine name smolvm accepts.
const maxNameLen = 128

// ValidateName checks a machine name against smolvm's rules: 1–128 bytes,
// an ASCII letter or digit first, then letters, digits, '-' and '_', no
// trailing '-' and no "--".
func ValidateName(name string) error {
	switch {
	case name == "":
		return argErr("name", "must not be empty")
	case len(name) > maxNameLen:
		return argErr("name", "is %d bytes, longer than %d", len(name), maxNameLen)
	case !isAlnum(name[0]):
		return argErr("name", "%q must start with an ASCII letter or digit", name)
	case strings.HasSuffix(name, "-"):
		return argErr("name", "%q must not end with '-'", name)
	case strings.Contains(name, "--"):
		return argErr("name", "%q must not contain \"--\"", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isAlnum(c) && c != '-' && c != '_' {
			return argErr("name", "%q may hold only ASCII letters, digits, '-' and '_'", name)
		}
	}
	return nil
}

// validateEnvKey checks that key is a portable environment variable name:
// a letter or '_' first, then letters, digits and '_'.
func validateEnvKey(key string) error {
	if err := validate.EnvKey(key); err != nil {
		return argErr("env", "%s", err)
	}
	return nil
}

// maxLabelKeyLen is the longest label key [CreateOptions.Labels] takes.
const maxLabelKeyLen = 128

// validateLabelKey checks a key for [CreateOptions.Labels]: 1 to
// maxLabelKeyLen bytes of ASCII letters, digits, '.', '_', '-' and '/',
// starting with a letter or digit. smolvm itself only refuses an empty key
// and splits KEY=VALUE at the first '='; the narrower rule keeps a key
// from passing for a flag and reads the same in every tool.
func validateLabelKey(key string) error {
	switch {
	case key == "":
		return argErr("labels", "key must not be empty")
	case len(key) > maxLabelKeyLen:
		return argErr("labels", "key is %d bytes, longer than %d", len(key), maxLabelKeyLen)
	case !isAlnum(key[0]):
		return argErr("labels", "key %q must start with an ASCII letter or digit", key)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; !isAlnum(c) && !strings.ContainsRune("._-/", rune(c)) {
			return argErr("labels", "key %q may hold only ASCII letters, digits, '.', '_', '-' and '/'", key)
		}
	}
	return nil
}

// checkCreate validates o for release v: every value, every combination,
// and every option v does not honour.
func checkCreate(v Version, o CreateOptions) error {
	if o.From != "" {
		if err := checkArg("from", o.From); err != nil {
			return err
		}
	}
	if o.CPUs < 0 || o.CPUs > MaxCPUs {
		return argErr("cpus", "%d is outside 1..%d (0 leaves it unset)", o.CPUs, MaxCPUs)
	}
	if o.MemoryMiB < 0 || int64(o.MemoryMiB) > MaxMemoryMiB {
		return argErr("mem", "%d MiB is outside 1..%d (0 leaves it unset)", o.MemoryMiB, int64(MaxMemoryMiB))
	}
	for _, p := range o.AllowCIDRs {
		if !p.IsValid() {
			return argErr("allow_cidr", "invalid prefix")
		}
	}
	if o.LocalhostOnly {
		if len(o.AllowCIDRs) > 0 {
			return argErr("outbound_localhost_only", "cannot be combined with allow_cidr: smolvm would allow both")
		}
		if !v.Supports(FeatureFromEgress) {
			return &UnsupportedError{Field: "outbound_localhost_only", Feature: FeatureFromEgress, Version: v}
		}
	}
	if o.DNS.IsValid() {
		if !o.DNS.Is4() {
			return argErr("dns", "%s is not an IPv4 address (smolvm's --dns takes IPv4 only)", o.DNS)
		}
		if len(o.AllowCIDRs) == 0 && !o.LocalhostOnly {
			return argErr("dns", "needs allow_cidr or outbound_localhost_only: on its own smolvm's --dns turns on an unrestricted network")
		}
		if !v.Supports(FeatureDNS) {
			return &UnsupportedError{Field: "dns", Feature: FeatureDNS, Version: v}
		}
	}
	if len(o.Labels) > 0 {
		for k, val := range o.Labels {
			if err := validateLabelKey(k); err != nil {
				return err
			}
			if strings.ContainsRune(val, 0) {
				return argErr("labels", "value of %s must not contain a NUL byte", k)
			}
		}
		if !v.Supports(FeatureLabels) {
			return &UnsupportedError{Field: "labels", Feature: FeatureLabels, Version: v}
		}
	}
	return checkEnv(o.Env)
}

// checkArg refuses a value that smolvm could misread: empty, holding a NUL
// byte (argv cannot carry it), or starting with '-' where clap would take it
// for a flag.
func checkArg(field, v string) error {
	switch {
	case v == "":
		return argErr(field, "must not be empty")
	case strings.ContainsRune(v, 0):
		return argErr(field, "must not contain a NUL byte")
	case strings.HasPrefix(v, "-"):
		return argErr(field, "%q must not start with '-'", v)
	}
	return nil
}

// checkEnv validates every key and refuses NUL bytes in values. The error
// names the key, never the value.
func checkEnv(env map[string]string) error {
	for k, v := range env {
		if err := validateEnvKey(k); err != nil {
			return err
		}
		if strings.ContainsRune(v, 0) {
			return argErr("env", "value of %s must not contain a NUL byte", k)
		}
	}
	return nil
}

// ValidateGuestPath checks a path in the machine for [Client.CopyIn] and
// [Client.CopyOut]: absolute, already clean (path.Clean leaves it as is, so
// no "." or ".." segment, no "//" and no trailing '/'), not "/" itself, at
// most 4096 bytes (Linux's PATH_MAX), and without ':' (smolvm cp reads the first ':'
// of an argument as the MACHINE:PATH separator) or a NUL byte.
func ValidateGuestPath(p string) error {
	return checkCopyGuestPath("guest_path", p)
}

func checkCopyGuestPath(field, p string) error {
	if err := validate.GuestPath(p); err != nil {
		return argErr(field, "%s", err)
	}
	return nil
}

// checkHostPath refuses a host path for smolvm cp that is not absolute or
// holds a ':' (smolvm would take it for MACHINE:PATH).
func checkHostPath(field, p string) error {
	if err := checkArg(field, p); err != nil {
		return err
	}
	switch {
	case !filepath.IsAbs(p):
		return argErr(field, "%q must be an absolute host path", p)
	case strings.Contains(p, ":"):
		return argErr(field, "%q must not contain ':' (smolvm cp reads it as MACHINE:PATH)", p)
	}
	return nil
}

// checkGuestPath refuses a guest path that is not absolute or that smolvm
// would misread.
func checkGuestPath(field, p string) error {
	if err := checkArg(field, p); err != nil {
		return err
	}
	if !strings.HasPrefix(p, "/") {
		return argErr(field, "%q must be an absolute guest path", p)
	}
	return nil
}

func isAlpha(c byte) bool { return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isAlnum(c byte) bool { return isAlpha(c) || isDigit(c) }

func checkNUL(field, v string) error {
	if strings.ContainsRune(v, 0) {
		return argErr(field, "must not contain a NUL byte")
	}
	return nil
}
