package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProxyDoorIsTheOnlyDoor: VMs may reach every port of the proxy's
// address, so the worker refuses to start when one of its own listeners is
// there too, naming both settings; listeners elsewhere are fine.
func TestProxyDoorIsTheOnlyDoor(t *testing.T) {
	t.Parallel()
	const proxy = "http://10.0.0.1:3128"
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want []string // in the one-line error; none: accepted
	}{
		{"defaults with a proxy", []string{"-proxy", proxy}, nil, nil},
		{"metrics anywhere without a proxy", []string{"-metrics-addr", "0.0.0.0:9400"}, nil, nil},
		{"metrics on every IPv4 address", []string{"-proxy", proxy, "-metrics-addr", "0.0.0.0:9400"}, nil, []string{"-metrics-addr 0.0.0.0:9400", "-proxy", "10.0.0.1"}},
		{"metrics on every address", []string{"-proxy", proxy, "-metrics-addr", ":9400"}, nil, []string{"-metrics-addr :9400", "-proxy"}},
		{"metrics on IPv6's every address", []string{"-proxy", proxy, "-metrics-addr", "[::]:9400"}, nil, []string{"-metrics-addr [::]:9400", "-proxy"}},
		{"metrics on the proxy's IP", []string{"-proxy", proxy, "-metrics-addr", "10.0.0.1:9400"}, nil, []string{"-metrics-addr 10.0.0.1:9400", "-proxy"}},
		{"metrics on the proxy's IP, IPv4-mapped", []string{"-proxy", proxy, "-metrics-addr", "[::ffff:10.0.0.1]:9400"}, nil, []string{"-metrics-addr", "-proxy"}},
		{"metrics by env", []string{"-proxy", proxy}, map[string]string{"BOTTLEQ_METRICS_ADDR": "0.0.0.0:9400"}, []string{"BOTTLEQ_METRICS_ADDR 0.0.0.0:9400", "-proxy"}},
		{"metrics on another IP", []string{"-proxy", proxy, "-metrics-addr", "10.0.0.2:9400"}, nil, nil},
		{"metrics off", []string{"-proxy", proxy, "-metrics-addr", "off", "-embedded-redis", "127.0.0.1:0"}, nil, nil},
		{"IPv4 wildcard, IPv6 proxy", []string{"-proxy", "http://[fd00::1]:3128", "-metrics-addr", "0.0.0.0:9400"}, nil, nil},
		{"IPv6 wildcard, IPv6 proxy", []string{"-proxy", "http://[fd00::1]:3128", "-metrics-addr", "[::]:9400"}, nil, []string{"-metrics-addr", "-proxy", "fd00::1"}},
		{"embedded Redis on the proxy's IP", []string{"-proxy", proxy, "-embedded-redis", "10.0.0.1:6379"}, nil, []string{"-embedded-redis 10.0.0.1:6379", "-proxy"}},
		{"embedded Redis by env on the proxy's IP", nil, map[string]string{"BOTTLEQ_PROXY": proxy, "BOTTLEQ_EMBEDDED_REDIS": "0.0.0.0:6379"}, []string{"BOTTLEQ_EMBEDDED_REDIS 0.0.0.0:6379", "BOTTLEQ_PROXY"}},
		{"no embedded Redis with a URL", []string{"-proxy", proxy, "-embedded-redis", "10.0.0.1:6379", "-redis", "redis://10.0.0.5:6379"}, nil, nil},
		{"bundled proxy's address", []string{"-egress-listen", "10.0.0.1:0", "-metrics-addr", "10.0.0.1:9400"}, nil, []string{"-metrics-addr 10.0.0.1:9400", "-egress-listen", "10.0.0.1"}},
		{"bundled proxy on every address", []string{"-egress-listen", "0.0.0.0:0"}, nil, []string{"-egress-listen 0.0.0.0:0", "VMs need an address"}},
		{"bundled proxy by name", []string{"-egress-listen", "localhost:0", "-metrics-addr", "off", "-embedded-redis", "127.0.0.2:0"}, nil, nil},
		{"bundled proxy on the port VMs are told", []string{"-proxy", proxy, "-egress-listen", "0.0.0.0:3128"}, nil, nil},
		{"bundled proxy on another port of the door", []string{"-proxy", proxy, "-egress-listen", "0.0.0.0:3129"}, nil, []string{"-egress-listen 0.0.0.0:3129", "-proxy"}},
		{"listen address without a port", []string{"-metrics-addr", "127.0.0.1"}, nil, []string{"-metrics-addr", "HOST:PORT"}},
		{"listen address with a named port", []string{"-embedded-redis", "127.0.0.1:redis"}, nil, []string{"-embedded-redis", "port"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseFlags(tt.args, env(tt.env), &bytes.Buffer{})
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("refused: %v", err)
				}
				return
			}
			if err == nil || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line naming %q", err, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q, want it to name %q", err, w)
				}
			}
		})
	}
}

// TestProxyDoorNames: a listener given by host name counts for every
// address the name resolves to; one that cannot be resolved is refused.
func TestProxyDoorNames(t *testing.T) {
	t.Parallel()
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "mon.internal":
			return []netip.Addr{netip.MustParseAddr("10.0.0.9"), netip.MustParseAddr("10.0.0.1")}, nil
		case "other.internal":
			return []netip.Addr{netip.MustParseAddr("10.0.0.9")}, nil
		}
		return nil, errors.New("no such host")
	}
	origin := map[string]string{"proxy": "-proxy", "metrics-addr": "-metrics-addr", "embedded-redis": "-embedded-redis", "egress-listen": "-egress-listen"}
	for addr, want := range map[string]string{"mon.internal:9400": "is reachable", "other.internal:9400": "", "gone.internal:9400": "cannot tell"} {
		c := config{proxy: "http://10.0.0.1:3128", metricsAddr: addr, redisURL: "redis://10.0.0.5:6379"}
		err := checkDoor(context.Background(), c, origin, lookup)
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("-metrics-addr %s: %v, want %q", addr, err, want)
		}
	}
}

// TestRunChecksBeforeListening: a worker with a bad configuration reports
// that configuration, even when the addresses it would listen on are taken;
// it binds nothing before everything is checked.
func TestRunChecksBeforeListening(t *testing.T) {
	t.Parallel()
	var held []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		held = append(held, ln.Addr().String())
	}
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing smolvm", []string{"-smolvm", "/nonexistent/smolvm"}, 1, `smolvm binary "/nonexistent/smolvm" not found`},
		{"missing Redis CA", []string{"-redis", "rediss://127.0.0.1:1", "-redis-ca", "/nonexistent/ca.pem"}, 1, "-redis-ca"},
		{"bad deployment", []string{"-deployment", "Prod-EU"}, 2, "-deployment"},
		{"metrics on the proxy's address", []string{"-proxy", "http://" + held[0]}, 2, "is reachable on -proxy's address 127.0.0.1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"-metrics-addr", held[0], "-embedded-redis", held[1], "-data-dir", filepath.Join(t.TempDir(), "data"), "-log-format", "json"}, tt.args...)
			var stderr bytes.Buffer
			code := Run(context.Background(), args, env(map[string]string{"SMOLVM_BIN": "/nonexistent/smolvm"}), &stderr)
			last := lastLine(stderr.String())
			if code != tt.code || !strings.HasPrefix(last, "worker: ") || !strings.Contains(last, tt.want) {
				t.Errorf("exit %d, last line %q; want exit %d and %q", code, last, tt.code, tt.want)
			}
			if strings.Contains(stderr.String(), "address already in use") {
				t.Errorf("the worker bound an address before it checked its configuration:\n%s", stderr.String())
			}
		})
	}
	if _, err := os.Stat("/nonexistent"); err == nil {
		t.Fatal("/nonexistent exists: the cases above prove nothing")
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestResolveListen: a bundled proxy named by a host name listens on, and
// is announced to VMs at, one address of it, IPv4 first.
func TestResolveListen(t *testing.T) {
	t.Parallel()
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "both":
			return []netip.Addr{netip.MustParseAddr("fd00::1"), netip.MustParseAddr("10.9.0.2")}, nil
		case "six":
			return []netip.Addr{netip.MustParseAddr("fd00::1")}, nil
		}
		return nil, errors.New("no such host")
	}
	for _, tt := range []struct{ in, want, err string }{
		{"10.0.0.1:3128", "10.0.0.1:3128", ""},
		{"both:3128", "10.9.0.2:3128", ""},
		{"six:3128", "[fd00::1]:3128", ""},
		{"nowhere:3128", "", "does not resolve"},
	} {
		got, err := resolveListen(context.Background(), tt.in, lookup)
		if got != tt.want || (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("resolveListen(%q) = %q, %v; want %q, %q", tt.in, got, err, tt.want, tt.err)
		}
	}
}
