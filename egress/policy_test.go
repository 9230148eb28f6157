package egress_test

import (
	"strings"
	"testing"

	"github.com/bot-bottle/bottleq/egress"
)

func TestParseHost(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   string
		want egress.HostRule
		str  string
	}{
		{"api.example.com", egress.HostRule{Host: "api.example.com"}, "api.example.com"},
		{"API.Example.COM", egress.HostRule{Host: "api.example.com"}, "api.example.com"},
		{"example.com:443", egress.HostRule{Host: "example.com", Port: 443}, "example.com:443"},
		{"*.example.com", egress.HostRule{Host: "example.com", Wildcard: true}, "*.example.com"},
		{"*.example.com:8443", egress.HostRule{Host: "example.com", Wildcard: true, Port: 8443}, "*.example.com:8443"},
		{"localhost", egress.HostRule{Host: "localhost"}, "localhost"},
		{"_acme.x-y.example", egress.HostRule{Host: "_acme.x-y.example"}, "_acme.x-y.example"},
		{"1.2.3.4", egress.HostRule{Host: "1.2.3.4"}, "1.2.3.4"},
		{"1.2.3.4:80", egress.HostRule{Host: "1.2.3.4", Port: 80}, "1.2.3.4:80"},
		{"2001:db8::1", egress.HostRule{Host: "2001:db8::1"}, "[2001:db8::1]"},
		{"[2001:DB8::1]:443", egress.HostRule{Host: "2001:db8::1", Port: 443}, "[2001:db8::1]:443"},
		{"::ffff:1.2.3.4", egress.HostRule{Host: "1.2.3.4"}, "1.2.3.4"},
		{"x.com:0443", egress.HostRule{Host: "x.com", Port: 443}, "x.com:443"},
		{"x.com:65535", egress.HostRule{Host: "x.com", Port: 65535}, "x.com:65535"},
	}
	for _, tt := range good {
		r, err := egress.ParseHost(tt.in)
		if err != nil || r != tt.want || r.String() != tt.str {
			t.Errorf("ParseHost(%q) = %+v (%q), %v; want %+v (%q)", tt.in, r, r.String(), err, tt.want, tt.str)
		}
	}
	bad := []struct{ in, want string }{
		{"", "is empty"},
		{" example.com", "space"},
		{"exa mple.com", "space"},
		{"example.com\n", "control"},
		{"exämple.com", "non-ASCII"},
		{"http://x", "is a URL"},
		{"x/path", "is a URL"},
		{"user@x.com", "is a URL"},
		{"*", "every host"},
		{"*:443", "every host"},
		{"*.", "no host"},
		{"*.com", "top-level"},
		{"a.*.com", "whole first label"},
		{"*x.com", "whole first label"},
		{"**.x.com", "whole first label"},
		{"*.1.2.3.4", "wildcard of an IP"},
		{"a..b", "empty label"},
		{".a.b", "empty label"},
		{"a.b.", "empty label"},
		{"-a.b", "starts or ends with '-'"},
		{"a!.b", `"!"`},
		{"x.com:0", "port"},
		{"x.com:65536", "port"},
		{"x.com:", "port"},
		{"x.com:+80", "port"},
		{"x.com:http", "port"},
		{":80", "no host"},
		{"1.2.3", "last label is numeric"},
		{"256.1.1.1", "last label is numeric"},
		{"[1.2.3.4]:80", "brackets are for IPv6"},
		{"[::1", "closing ]"},
		{"[::1]x", "after ]"},
		{"[x.com]:80", "not a valid IP"},
		{"fe80::1%eth0", "zone"},
		{"a:b:c", "not a valid IP"},
		{strings.Repeat("a", 64) + ".com", "63"},
		{strings.Repeat("a.", 127) + "com", "253"},
	}
	for _, tt := range bad {
		r, err := egress.ParseHost(tt.in)
		if err == nil {
			t.Errorf("ParseHost(%q) = %+v, want an error", tt.in, r)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "allow_hosts: ") || !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
			t.Errorf("ParseHost(%q) error %q, want one line starting allow_hosts: and containing %q", tt.in, msg, tt.want)
		}
	}
}

func TestHostRuleMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rule, host string
		port       int
		want       bool
	}{
		{"example.test", "example.test", 443, true},
		{"example.test", "EXAMPLE.test.", 80, true},
		{"example.test", "a.example.test", 443, false},
		{"example.test", "example.test.evil", 443, false},
		{"*.example.test", "a.example.test", 443, true},
		{"*.example.test", "b.a.example.test", 443, true},
		{"*.example.test", "example.test", 443, false},
		{"*.example.test", "a.example.test.evil", 443, false},
		{"*.example.test", "aexample.test", 443, false},
		{"*.example.test", ".example.test", 443, false},
		{"example.test:443", "example.test", 443, true},
		{"example.test:443", "example.test", 80, false},
		{"*.example.test:443", "a.example.test", 8443, false},
		{"1.2.3.4", "1.2.3.4", 1, true},
		{"1.2.3.4", "::ffff:1.2.3.4", 1, true},
		{"[2001:db8::1]:443", "[2001:DB8:0::1]", 443, true},
		{"2001:db8::1", "2001:db8::2", 443, false},
	}
	for _, tt := range tests {
		r, err := egress.ParseHost(tt.rule)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Match(tt.host, tt.port); got != tt.want {
			t.Errorf("%q.Match(%q, %d) = %v, want %v", tt.rule, tt.host, tt.port, got, tt.want)
		}
	}
}

// FuzzParseHost checks that ParseHost never panics, that its errors are
// one line naming allow_hosts, and that an accepted rule round-trips
// through String.
func FuzzParseHost(f *testing.F) {
	for _, s := range []string{
		"api.example.com", "*.example.com:443", "[2001:db8::1]:443", "2001:db8::1", "1.2.3.4",
		"::ffff:1.2.3.4", "", "*", "*.", "a..b", "http://x", "x.com:99999", "[::1", "fe80::1%eth0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := egress.ParseHost(s)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "allow_hosts: ") || strings.Contains(msg, "\n") {
				t.Fatalf("ParseHost(%q) error %q is not one line naming allow_hosts", s, msg)
			}
			return
		}
		again, err := egress.ParseHost(r.String())
		if err != nil || again != r {
			t.Fatalf("ParseHost(%q) = %+v; its String %q parses as %+v, %v", s, r, r.String(), again, err)
		}
		if r.Port == 0 && !r.Wildcard && !r.Match(r.Host, 443) {
			t.Fatalf("rule %q does not match its own host", r)
		}
	})
}
