package smolvm

import "testing"

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
		v, err := ParseVersion(tt.in)
		if err != nil || v != tt.want || v.Dialect() != tt.dialect {
			t.Errorf("ParseVersion(%q) = %v (%v), %v; want %v (%v)", tt.in, v, v.Dialect(), err, tt.want, tt.dialect)
		}
	}
	for _, in := range []string{"", "smolvm", "smolvm 1.2", "smolvm x.y.z"} {
		if _, err := ParseVersion(in); err == nil {
			t.Errorf("ParseVersion(%q) succeeded", in)
		}
	}
}

func TestVersionGates(t *testing.T) {
	t.Parallel()
	if (Version{1, 7, 9}).EnforcesAllowCIDROnFrom() || !(Version{1, 8, 0}).EnforcesAllowCIDROnFrom() {
		t.Error("allow-cidr on --from must start at 1.8.0")
	}
	if !(Version{0, 9, 9}).Less(Version{1, 0, 0}) || (Version{1, 0, 0}).Less(Version{1, 0, 0}) {
		t.Error("Less is wrong")
	}
}
