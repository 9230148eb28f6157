package egress_test

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/bot-bottle/bottleq/egress"
)

// TestFloorThisHost checks that no task reaches an address of the proxy's
// own host, on any port, even with AllowPrivate and the address listed in
// its policy, and that the refusal comes before any dial. The host's
// addresses come from a LocalAddrs hook, so nothing but loopback is dialed.
func TestFloorThisHost(t *testing.T) {
	t.Parallel()
	local := func() ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("203.0.113.9"), netip.MustParseAddr("fe80::1")}, nil
	}
	tests := []struct {
		name       string
		local      func() ([]netip.Addr, error)
		hosts      []string
		target     string
		wantStatus int
		wantBody   string
	}{
		{name: "name resolving to this host", local: local, hosts: []string{"host.test"}, target: "host.test:8080",
			wantStatus: 403, wantBody: `host "host.test" resolves to a forbidden address (203.0.113.9: this host)`},
		{name: "IP literal of this host, any port", local: local, hosts: []string{"203.0.113.9"}, target: "203.0.113.9:22",
			wantStatus: 403, wantBody: "(203.0.113.9: this host)"},
		{name: "this host through NAT64", local: local, hosts: []string{"host64.test"}, target: "host64.test:443",
			wantStatus: 403, wantBody: "this host (embedded IPv4 203.0.113.9)"},
		{name: "addresses unknown", local: func() ([]netip.Addr, error) { return nil, errors.New("netlink: no") },
			hosts: []string{"host.test"}, target: "host.test:80", wantStatus: 503, wantBody: "cannot list this host's addresses"},
		// Loopback is AllowLoopback's to decide, even when listed as local.
		{name: "loopback left to AllowLoopback", local: local, hosts: []string{"allowed.test"}, target: "allowed.test:UP", wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *egress.Config) { c.AllowPrivate = true; c.LocalAddrs = tt.local })
			tok := h.register(t, "t", egress.Policy{Hosts: tt.hosts})
			target := strings.ReplaceAll(tt.target, "UP", port(t, h.plain))
			resp, body, _ := h.connect(t, tok, target)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Fatalf("CONNECT %s = %d %q, want %d containing %q", target, resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if tt.wantStatus != 200 && h.dials.Load() != 0 {
				t.Errorf("refused CONNECT dialed %q", h.dialedAddrs())
			}
		})
	}
}

// TestFloorThisHostsInterfaces checks the default LocalAddrs: a task
// allowed one of this machine's own non-loopback addresses may not reach
// any port of it. It asserts the proxy's decision and that it dialed
// nothing; tests never dial beyond loopback.
func TestFloorThisHostsInterfaces(t *testing.T) {
	t.Parallel()
	ias, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var own netip.Addr
	for _, ia := range ias {
		pfx, err := netip.ParsePrefix(ia.String())
		if a := pfx.Addr().Unmap(); err == nil && a.IsGlobalUnicast() && !a.IsPrivate() {
			own = a
			break
		}
		if a := pfx.Addr().Unmap(); err == nil && a.IsGlobalUnicast() && !own.IsValid() {
			own = a // private: the test lifts the private floor
		}
	}
	if !own.IsValid() {
		t.Skip("this machine has no non-loopback, non-link-local interface address to test against")
	}
	h := newHarness(t, func(c *egress.Config) { c.AllowPrivate = true })
	tok := h.register(t, "t", egress.Policy{Hosts: []string{own.String()}})
	for _, p := range []string{"22", port(t, h.plain)} {
		target := net.JoinHostPort(own.String(), p)
		resp, body, _ := h.connect(t, tok, target)
		if want := "(" + own.String() + ": this host)"; resp.StatusCode != http.StatusForbidden || !strings.Contains(body, want) {
			t.Errorf("CONNECT %s = %d %q, want 403 containing %q", target, resp.StatusCode, body, want)
		}
	}
	if n := h.dials.Load(); n != 0 {
		t.Errorf("dialed this host %d times: %q", n, h.dialedAddrs())
	}
}

// TestDeny checks the operator's deny-list: it refuses an allowed host
// whose address it covers, before any dial, even where AllowLoopback and
// AllowPrivate would let the address through, for CONNECT and plain HTTP.
func TestDeny(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		deny       []string
		hosts      []string
		target     string // CONNECT target; UP is the plain upstream's port
		wantStatus int
		wantBody   string
	}{
		{name: "loopback upstream denied", deny: []string{"127.0.0.0/8"}, hosts: []string{"allowed.test"},
			target: "allowed.test:UP", wantStatus: 403, wantBody: "(127.0.0.1: denied by the operator)"},
		{name: "one address denied", deny: []string{"10.9.9.9", "127.0.0.1"}, hosts: []string{"127.0.0.1"},
			target: "127.0.0.1:UP", wantStatus: 403, wantBody: "denied by the operator"},
		{name: "IPv4-mapped deny entry", deny: []string{"::ffff:127.0.0.0/104"}, hosts: []string{"allowed.test"},
			target: "allowed.test:UP", wantStatus: 403, wantBody: "denied by the operator"},
		{name: "private despite AllowPrivate", deny: []string{"10.0.0.0/8"}, hosts: []string{"private.test"},
			target: "private.test:443", wantStatus: 403, wantBody: "(10.0.0.5: denied by the operator)"},
		{name: "other ranges pass", deny: []string{"10.0.0.0/8", "fd00::/8"}, hosts: []string{"allowed.test"},
			target: "allowed.test:UP", wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var deny egress.Prefixes
			for _, d := range tt.deny {
				if err := deny.Set(d); err != nil {
					t.Fatal(err)
				}
			}
			h := newHarness(t, func(c *egress.Config) { c.AllowPrivate = true; c.Deny = deny })
			tok := h.register(t, "t", egress.Policy{Hosts: tt.hosts})
			target := strings.ReplaceAll(tt.target, "UP", port(t, h.plain))
			resp, body, _ := h.connect(t, tok, target)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Fatalf("CONNECT %s = %d %q, want %d containing %q", target, resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if status, body := h.get(t, tok, "http://"+target+"/"); status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Errorf("GET http://%s/ = %d %q, want %d containing %q", target, status, body, tt.wantStatus, tt.wantBody)
			}
			if tt.wantStatus == 200 {
				return
			}
			if n := h.dials.Load(); n != 0 {
				t.Errorf("denied requests dialed %q", h.dialedAddrs())
			}
			if n := h.upConns.Load(); n != 0 {
				t.Errorf("the upstream saw %d connections", n)
			}
		})
	}
}

func TestPrefixesSet(t *testing.T) {
	t.Parallel()
	good := []struct {
		in   []string // one Set each
		want string
	}{
		{[]string{"10.0.0.0/8"}, "10.0.0.0/8"},
		{[]string{"10.1.2.3/8"}, "10.0.0.0/8"},
		{[]string{"192.0.2.1"}, "192.0.2.1/32"},
		{[]string{"2001:db8::1"}, "2001:db8::1/128"},
		{[]string{"::ffff:10.0.0.0/104"}, "10.0.0.0/8"},
		{[]string{"::ffff:192.0.2.1"}, "192.0.2.1/32"},
		{[]string{"10.0.0.0/8, fd00::/8"}, "10.0.0.0/8,fd00::/8"},
		{[]string{"10.0.0.0/8", "172.16.0.0/12,192.168.0.0/16"}, "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"},
	}
	for _, tt := range good {
		var ps egress.Prefixes
		for _, s := range tt.in {
			if err := ps.Set(s); err != nil {
				t.Fatalf("Set(%q): %v", s, err)
			}
		}
		if got := ps.String(); got != tt.want {
			t.Errorf("Set(%q) = %s, want %s", tt.in, got, tt.want)
		}
		var again egress.Prefixes
		if err := again.Set(ps.String()); err != nil || again.String() != ps.String() {
			t.Errorf("Set(%q) = %s, %v: String does not round-trip", ps.String(), again.String(), err)
		}
	}
	bad := []struct{ in, want string }{
		{"", "not a CIDR"},
		{"secret-value", "not a CIDR"},
		{"10.0.0.0/33", "not a CIDR"},
		{"fe80::1%eth0", "not a CIDR"},
		{"::ffff:0:0/80", "IPv4-mapped range shorter than /96"},
		{"10.0.0.0/8,,fd00::/8", "item 2 of 3: not a CIDR"},
		{"10.0.0.0/8,secret-value", "item 2 of 2: not a CIDR"},
	}
	for _, tt := range bad {
		ps := egress.Prefixes{netip.MustParsePrefix("10.0.0.0/8")}
		err := ps.Set(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Set(%q) = %v, want an error containing %q", tt.in, err, tt.want)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Set(%q) error %q quotes the value, which may come from the environment", tt.in, err)
		}
		if len(ps) != 1 {
			t.Errorf("Set(%q) failed but changed the list to %s", tt.in, ps.String())
		}
	}
}
