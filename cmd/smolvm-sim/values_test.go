package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseHumanDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{"500ms", 500 * time.Millisecond, ""},
		{"30s", 30 * time.Second, ""},
		{"5sec", 5 * time.Second, ""},
		{"5m", 5 * time.Minute, ""},
		{"2min", 2 * time.Minute, ""},
		{"1h", time.Hour, ""},
		{"1h 30m", 90 * time.Minute, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"0s", 0, ""},
		{"5", 0, "time unit needed"},
		{"", 0, "empty"},
		{"5parsecs", 0, "unknown time unit"},
		{"-5s", 0, "expected number"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseHumanDuration(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseHumanDuration(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseHumanDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true}, {"9lives", true}, {"Agent_1-x", true}, {strings.Repeat("a", 128), true},
		{"", false}, {strings.Repeat("a", 129), false}, {"-a", false}, {"_a", false},
		{"a-", false}, {"a--b", false}, {"a.b", false}, {"a/b", false}, {"a:b", false},
		{"a b", false}, {"a\\b", false}, {"é", false},
	}
	for _, tt := range tests {
		if err := validateName(tt.name); (err == nil) != tt.ok {
			t.Errorf("validateName(%q) = %v; want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestParseCIDR(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"10.0.0.0/8": "10.0.0.0/8", "192.168.50.2": "192.168.50.2/32",
		"::1": "::1/128", "fd00::/8": "fd00::/8", "nope": "", "10.0.0.0/33": "",
	}
	for in, want := range tests {
		got, err := parseCIDR(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("parseCIDR(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestSemverAtLeast(t *testing.T) {
	t.Parallel()
	v, err := parseSemver("1.0.2")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		o    semver
		want bool
	}{{semver{1, 0, 2}, true}, {semver{1, 0, 1}, true}, {semver{0, 9, 9}, true}, {semver{1, 0, 3}, false}, {semver{1, 1, 0}, false}, {semver{2, 0, 0}, false}} {
		if got := v.atLeast(tt.o[0], tt.o[1], tt.o[2]); got != tt.want {
			t.Errorf("%v.atLeast(%v) = %v", v, tt.o, got)
		}
	}
	for _, bad := range []string{"1.0", "1.x.0", "", "1.2.3.4"} {
		if _, err := parseSemver(bad); err == nil {
			t.Errorf("parseSemver(%q) succeeded", bad)
		}
	}
}

func TestGuestPath(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"/a/b", "/r/a/b"}, {"a/b", "/r/a/b"}, {"", "/r"}, {"/", "/r"}, {"/a/../b", "/r/b"},
		{"/..", ""}, {"../x", ""}, {"/a/../../x", ""},
	}
	for _, tt := range tests {
		got, err := guestPath("/r", tt.in)
		if (err != nil) != (tt.want == "") || got != tt.want {
			t.Errorf("guestPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestCheckEnv(t *testing.T) {
	t.Parallel()
	if err := checkEnv([]string{"A=1", "B=", "C=x=y"}); err != nil {
		t.Errorf("KEY=VALUE refused: %v", err)
	}
	for _, bad := range []string{"BARE", "=secret-value"} {
		err := checkEnv([]string{"A=1", bad})
		if err == nil || strings.Contains(err.Error(), "secret-value") {
			t.Errorf("checkEnv(%q) = %v; want an error that does not show the value", bad, err)
		}
	}
}
