package testredis

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
)

func TestServers(t *testing.T) {
	t.Parallel()
	for name, start := range map[string]func(testing.TB, ...string) *Server{
		"miniredis":    func(t testing.TB, _ ...string) *Server { return Mini(t) },
		"redis-server": Real,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := start(t)
			if err := ping(s.Addr, s.tls); err != nil {
				t.Fatalf("%s: %v", s.Kind, err)
			}
			if host, _, _ := net.SplitHostPort(s.Addr); host != "127.0.0.1" {
				t.Errorf("%s listens on %s, want loopback", s.Kind, s.Addr)
			}
			s.Restart(t)
			if err := ping(s.Addr, s.tls); err != nil {
				t.Fatalf("%s after restart: %v", s.Kind, err)
			}
			s.Stop()
			if s.Kind == "redis-server" && ping(s.Addr, s.tls) == nil {
				t.Errorf("%s still answers after Stop", s.Kind)
			}
		})
	}
}

// TestSentinel: the setup comes up with its replicas known to every
// sentinel, and SENTINEL FAILOVER moves the master to one, with or without
// TLS.
func TestSentinel(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]SentinelConfig{
		"plain": {Sentinels: 3, Password: "node-pw", SentinelPassword: "sentinel-pw"},
		"tls":   {TLS: true, Replicas: 2},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testSentinel(t, cfg)
		})
	}
}

func testSentinel(t *testing.T, cfg SentinelConfig) {
	s := Sentinel(t, cfg)
	if m := s.Master(t); m != s.Nodes[0] {
		t.Fatalf("master is %s, want the first node %s", m.Addr, s.Nodes[0].Addr)
	}
	for _, n := range append(append([]*Server{}, s.Nodes...), s.Sentinels...) {
		if host, _, _ := net.SplitHostPort(n.Addr); host != "127.0.0.1" {
			t.Errorf("%s listens on %s, want loopback", n.Kind, n.Addr)
		}
	}
	if m := s.Failover(t); m == s.Nodes[0] {
		t.Fatalf("after a failover the master is still %s", m.Addr)
	}
	for _, u := range []string{s.URL(), s.FailoverURL()} {
		if !strings.Contains(u, "master") || !strings.Contains(u, s.Sentinels[0].Addr) {
			t.Errorf("URL %q names no master or not the first sentinel", u)
		}
	}
	if got := strings.HasPrefix(s.FailoverURL(), "rediss://"); got != cfg.TLS || (s.CAFile != "") != cfg.TLS {
		t.Errorf("TLS %v: failover URL %q, CA file %q", cfg.TLS, s.FailoverURL(), s.CAFile)
	}
}

// TestRefusedAddr: dials of the address are refused, and no server can
// take its port while the test runs.
func TestRefusedAddr(t *testing.T) {
	t.Parallel()
	addr := RefusedAddr(t)
	for range 3 {
		if c, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("dial %s: %v, want a refused connection", addr, err)
		}
	}
	if l, err := net.Listen("tcp", addr); err == nil {
		l.Close()
		t.Errorf("a server could listen on %s, which should stay refused", addr)
	}
}
