package main

import (
	"errors"
	"reflect"
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

func TestParseArgs(t *testing.T) {
	t.Parallel()
	specs := []flagSpec{
		{long: "name", short: 'n', value: "NAME"},
		{long: "env", short: 'e', value: "ENV", multi: true},
		{long: "force", short: 'f'}, {long: "interactive", short: 'i'},
	}
	tests := []struct {
		name     string
		args     []string
		trailing bool
		vals     map[string][]string
		pos      []string
		rest     []string
		wantErr  string
	}{
		{name: "long space", args: []string{"--name", "x"}, vals: map[string][]string{"name": {"x"}}},
		{name: "long equals", args: []string{"--name=x=y"}, vals: map[string][]string{"name": {"x=y"}}},
		{name: "short space", args: []string{"-n", "x"}, vals: map[string][]string{"name": {"x"}}},
		{name: "short attached", args: []string{"-nx"}, vals: map[string][]string{"name": {"x"}}},
		{name: "repeat", args: []string{"-e", "A=1", "--env", "B=2", "--env=C=3"}, vals: map[string][]string{"env": {"A=1", "B=2", "C=3"}}},
		{name: "cluster", args: []string{"-fi"}, vals: map[string][]string{"force": {""}, "interactive": {""}}},
		{name: "dash dash", args: []string{"a", "--", "-f", "b"}, vals: map[string][]string{}, pos: []string{"a"}, rest: []string{"-f", "b"}},
		{name: "trailing", args: []string{"-f", "cmd", "-n", "--", "x"}, trailing: true, vals: map[string][]string{"force": {""}}, pos: []string{"cmd", "-n", "--", "x"}},
		{name: "positional then flag", args: []string{"a", "-f"}, vals: map[string][]string{"force": {""}}, pos: []string{"a"}},
		{name: "duplicate", args: []string{"-n", "a", "-n", "b"}, wantErr: "cannot be used multiple times"},
		{name: "unknown long", args: []string{"--nope"}, wantErr: "unexpected argument '--nope'"},
		{name: "unknown short", args: []string{"-z"}, wantErr: "unexpected argument '-z'"},
		{name: "missing value", args: []string{"--name"}, wantErr: "a value is required"},
		{name: "value looks like flag", args: []string{"--name", "-f"}, wantErr: "a value is required"},
		{name: "bool with value", args: []string{"--force=yes"}, wantErr: "unexpected value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := parseArgs(tt.args, specs, tt.trailing)
			if tt.wantErr != "" {
				var ue usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v; want usage error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p.vals, tt.vals) || !reflect.DeepEqual(p.pos, tt.pos) || !reflect.DeepEqual(p.rest, tt.rest) {
				t.Fatalf("got vals=%v pos=%q rest=%q; want vals=%v pos=%q rest=%q", p.vals, p.pos, p.rest, tt.vals, tt.pos, tt.rest)
			}
		})
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

func TestParseFaults(t *testing.T) {
	t.Parallel()
	rules, err := parseFaults("create:2:1; start:3+:7:agent operation failed: x: y ;exec:p0.25:9;*:1:4")
	if err != nil {
		t.Fatal(err)
	}
	want := []faultRule{
		{op: "create", nth: 2, exit: 1},
		{op: "start", nth: 3, orLater: true, exit: 7, msg: "agent operation failed: x: y"},
		{op: "exec", prob: 0.25, isProb: true, exit: 9},
		{op: "*", nth: 1, exit: 4},
	}
	if !reflect.DeepEqual(rules, want) {
		t.Fatalf("got %+v\nwant %+v", rules, want)
	}
	if !rules[0].fires(2, nil, 0) || rules[0].fires(3, nil, 0) || rules[1].fires(2, nil, 1) || !rules[1].fires(9, nil, 1) {
		t.Error("N / N+ rules fire on the wrong calls")
	}
	for _, bad := range []string{"create:2", "nope:1:1", "create:0:1", "create:x:1", "create:p2:1", "create:1:256"} {
		if _, err := parseFaults(bad); err == nil {
			t.Errorf("parseFaults(%q) succeeded", bad)
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
