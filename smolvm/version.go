package smolvm

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a smolvm release number.
type Version struct {
	// Major, Minor and Patch are the numbers of "X.Y.Z".
	Major, Minor, Patch int
}

// parseVersion reads the output of `smolvm --version`, such as
// "smolvm 1.9.3\n". A bare "1.9.3" and pre-release suffixes ("1.9.3-rc1")
// are accepted too.
func parseVersion(s string) (Version, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return Version{}, fmt.Errorf("smolvm: empty version string")
	}
	raw := f[len(f)-1]
	if len(f) >= 2 && f[0] == "smolvm" {
		raw = f[1]
	}
	raw = strings.TrimPrefix(raw, "v")
	if i := strings.IndexAny(raw, "-+"); i >= 0 {
		raw = raw[:i]
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return Version{}, fmt.Errorf("smolvm: unrecognised version %q", strings.TrimSpace(s))
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return Version{}, fmt.Errorf("smolvm: unrecognised version %q", strings.TrimSpace(s))
		}
		n[i] = v
	}
	return Version{n[0], n[1], n[2]}, nil
}

// String returns the version as "X.Y.Z".
func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// IsZero reports whether v is unset.
func (v Version) isZero() bool { return v == Version{} }

// Less reports whether v is an older release than w.
func (v Version) less(w Version) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Patch < w.Patch
}

// AtLeast reports whether v is w or newer.
func (v Version) atLeast(w Version) bool { return !v.less(w) }

// Releases where smolvm's behaviour changed in a way the wrapper must follow.
var (
	// v0_8_1 made stop of an unknown machine fail and delete stop a running VM first.
	v0_8_1 = Version{0, 8, 1}
	// v1_0_2 turned every machine name into a --name flag.
	v1_0_2 = Version{1, 0, 2}
	// v1_7_0 rejects `pack create -o X.smolmachine`.
	v1_7_0 = Version{1, 7, 0}
	// V1_8_0 applies --allow-cidr and --outbound-localhost-only to machines
	// created --from a pack (older releases silently drop them, leaving
	// such a VM with the pack's network, unrestricted) and adds
	// `machine create --label`.
	V1_8_0 = Version{1, 8, 0}
	// v1_9_3 is the first release known to take `machine cp --mode` (it
	// appeared after v1.8.0; see docs/smolvm.md, machine cp) and the one
	// whose `machine create --dns` bottleq relies on.
	v1_9_3 = Version{1, 9, 3}
)

// Feature is a part of smolvm's command line that only some releases
// honour. Ask [Version.Supports] (or [Client.Supports]) before relying on
// one; options that need a feature the release lacks are refused with an
// [*UnsupportedError] before any process starts.
type Feature int

const (
	// FeatureFromEgress: `machine create --from` applies --allow-cidr and
	// --outbound-localhost-only (from 1.8.0). Before, they are dropped
	// without a word and the machine gets its pack's network, unrestricted.
	FeatureFromEgress Feature = iota + 1
	// FeatureLabels: `machine create --label KEY=VALUE`, shown back as
	// `labels` by `machine ls --json` and `status --json` (from 1.8.0).
	FeatureLabels
	// FeatureDNS: `machine create --dns IPV4` sets the resolver the guest's
	// DNS queries are forwarded to. The flag is older, but bottleq relies
	// on it from 1.9.3 only, the release whose behaviour docs/smolvm.md
	// describes.
	FeatureDNS
	// FeatureCpMode: `machine cp --mode OCTAL` for uploads (from 1.9.3;
	// see [Client.CopyIn] for what older releases get instead).
	FeatureCpMode
)

// Since returns the first release that has f, or the zero Version for a
// Feature this package does not know.
func (f Feature) Since() Version {
	switch f {
	case FeatureFromEgress, FeatureLabels:
		return V1_8_0
	case FeatureDNS, FeatureCpMode:
		return v1_9_3
	}
	return Version{}
}

// String names f by the flag it is about.
func (f Feature) String() string {
	switch f {
	case FeatureFromEgress:
		return "--allow-cidr/--outbound-localhost-only with --from"
	case FeatureLabels:
		return "--label"
	case FeatureDNS:
		return "--dns"
	case FeatureCpMode:
		return "cp --mode"
	}
	return fmt.Sprintf("Feature(%d)", int(f))
}

// Supports reports whether release v has feature f. It is false for a
// Feature this package does not know.
func (v Version) Supports(f Feature) bool {
	since := f.Since()
	return !since.isZero() && v.atLeast(since)
}

// Dialect is the argv style a smolvm release accepts for machine names.
type Dialect int

const (
	// DialectPositional is smolvm ≤ 1.0.1: `machine create [NAME]` and
	// `machine delete -f NAME` take the name as a positional argument.
	DialectPositional Dialect = iota + 1
	// DialectNamed is smolvm ≥ 1.0.2: every subcommand takes `--name NAME`
	// and a positional name is a parse error.
	DialectNamed
)

// Dialect returns the argv dialect release v speaks.
func (v Version) Dialect() Dialect {
	if v.less(v1_0_2) {
		return DialectPositional
	}
	return DialectNamed
}

// String names the dialect.
func (d Dialect) String() string {
	switch d {
	case DialectPositional:
		return "positional"
	case DialectNamed:
		return "named"
	}
	return "unknown"
}

// EnforcesAllowCIDROnFrom reports whether release v applies --allow-cidr to
// a machine created with --from. Before 1.8.0 the flag is silently dropped
// on that path, so a VM meant to reach only a proxy gets unrestricted egress.
// It is v.Supports(FeatureFromEgress).
func (v Version) EnforcesAllowCIDROnFrom() bool { return v.Supports(FeatureFromEgress) }
