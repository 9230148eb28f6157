package testredis

import (
	"net"
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
