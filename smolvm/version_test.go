package smolvm

import "testing"

var (
	v170 = Version{1, 7, 0}
	v180 = Version{1, 8, 0}
	v192 = Version{1, 9, 2}
)

func TestParseVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Version
		dialect Dialect
	}{
		{"smolvm 0.8.0\n", Version{0, 8, 0}, DialectPositional},
		{"smolvm 1.0.1", Version{1, 0, 1}, DialectPositional},
		{"smolvm 1.0.2", Version{1, 0, 2}, DialectNamed},
		{"smolvm 1.9.3-rc1", Version{1, 9, 3}, DialectNamed},
		{"1.23.0", Version{1, 23, 0}, DialectNamed},
		{"smolvm v2.0.0 (abc)", Version{2, 0, 0}, DialectNamed},
	}
	for _, tt := range tests {
		v, err := parseVersion(tt.in)
		if err != nil || v != tt.want || v.Dialect() != tt.dialect {
			t.Errorf("parseVersion(%q) = %v (%v), %v; want %v (%v)", tt.in, v, v.Dialect(), err, tt.want, tt.dialect)
		}
	}
	for _, in := range []string{"", "smolvm", "smolvm 1.2", "smolvm x.y.z"} {
		if _, err := parseVersion(in); err == nil {
			t.Errorf("parseVersion(%q) succeeded", in)
		}
	}
}

func TestVersionGates(t *testing.T) {
	t.Parallel()
	if (Version{1, 7, 9}).EnforcesAllowCIDROnFrom() || !(Version{1, 8, 0}).EnforcesAllowCIDROnFrom() {
		t.Error("allow-cidr on --from must start at 1.8.0")
	}
	if !(Version{0, 9, 9}).less(Version{1, 0, 0}) || (Version{1, 0, 0}).less(Version{1, 0, 0}) {
		t.Error("Less is wrong")
	}
}

// TestFeatureSupport pins the first release of each feature, on both sides
// of the boundary.
func TestFeatureSupport(t *testing.T) {
	t.Parallel()
	tests := []struct {
		f      Feature
		since  Version
		before Version
		name   string
	}{
		{FeatureFromEgress, v180, Version{1, 7, 9}, "--allow-cidr/--outbound-localhost-only with --from"},
		{FeatureLabels, v180, Version{1, 7, 9}, "--label"},
		{FeatureDNS, v193, v192, "--dns"},
		{FeatureCpMode, v193, v192, "cp --mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.f.Since(); got != tt.since {
				t.Errorf("Since = %s, want %s", got, tt.since)
			}
			if got := tt.f.String(); got != tt.name {
				t.Errorf("String = %q, want %q", got, tt.name)
			}
			for v, want := range map[Version]bool{tt.before: false, tt.since: true, {2, 0, 0}: true, v080: false} {
				if got := v.Supports(tt.f); got != want {
					t.Errorf("%s.Supports(%v) = %v, want %v", v, tt.f, got, want)
				}
			}
		})
	}
	unknown := Feature(99)
	if (Version{99, 0, 0}).Supports(unknown) || !unknown.Since().isZero() || unknown.String() != "Feature(99)" {
		t.Errorf("an unknown feature must be unsupported everywhere")
	}
	if (Version{1, 7, 9}).EnforcesAllowCIDROnFrom() || !v180.EnforcesAllowCIDROnFrom() {
		t.Error("EnforcesAllowCIDROnFrom must follow FeatureFromEgress")
	}
}
