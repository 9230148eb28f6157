package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestParseMetricsAddr(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in          string
		host        string
		first, last int
		err         string
	}{
		{in: "127.0.0.1:9400", host: "127.0.0.1", first: 9400, last: 9400},
		{in: "127.0.0.1:9400-9409", host: "127.0.0.1", first: 9400, last: 9409},
		{in: "[::1]:9400-9401", host: "::1", first: 9400, last: 9401},
		{in: ":9400-9400", host: "", first: 9400, last: 9400},
		{in: "127.0.0.1:0", host: "127.0.0.1", first: 0, last: 0},
		{in: "127.0.0.1", err: "not HOST:PORT"},
		{in: "127.0.0.1:http", err: "no port number"},
		{in: "127.0.0.1:9400-", err: "no port number"},
		{in: "127.0.0.1:9400-65536", err: "no port number"},
		{in: "127.0.0.1:-1", err: "no port number"},
		{in: "127.0.0.1:9409-9400", err: "1 <= FIRST <= LAST"},
		{in: "127.0.0.1:0-10", err: "1 <= FIRST <= LAST"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			a, err := parseMetricsAddr(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("err = %v, want one saying %q", err, tt.err)
				}
				return
			}
			if err != nil || a.host != tt.host || a.first != tt.first || a.last != tt.last {
				t.Errorf("= %+v, %v; want %s ports %d-%d", a, err, tt.host, tt.first, tt.last)
			}
			if back, err := parseMetricsAddr(a.String()); err != nil || back != a {
				t.Errorf("String() = %q reads back as %+v, %v", a.String(), back, err)
			}
		})
	}
}

// TestDefaultMetricsAddrIsARange: with no flag, a worker takes the first
// free port of ten on loopback, so several share a host.
func TestDefaultMetricsAddrIsARange(t *testing.T) {
	t.Parallel()
	c, err := parseFlags(nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := parseMetricsAddr(c.metricsAddr)
	if err != nil || a.host != "127.0.0.1" || a.last-a.first+1 != 10 {
		t.Errorf("default -metrics-addr %q = %+v, %v; want a range of 10 ports on 127.0.0.1", c.metricsAddr, a, err)
	}
	for _, bad := range []string{"127.0.0.1:9400-9300", "localhost:x"} {
		_, err := parseFlags([]string{"-metrics-addr", bad}, env(nil), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "-metrics-addr") {
			t.Errorf("-metrics-addr %s: %v, want an error naming the flag", bad, err)
		}
	}
}

// holdPorts listens on n consecutive loopback ports the system picked
// free, and returns the first and the listeners (closed at cleanup).
func holdPorts(t *testing.T, n int) (int, []net.Listener) {
	t.Helper()
	for try := 0; try < 50; try++ {
		first, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		held := []net.Listener{first}
		for i := 1; i < n; i++ {
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+i)))
			if err != nil {
				break
			}
			held = append(held, ln)
		}
		if len(held) == n {
			t.Cleanup(func() {
				for _, ln := range held {
					ln.Close()
				}
			})
			return port, held
		}
		for _, ln := range held {
			ln.Close()
		}
	}
	t.Fatalf("found no %d consecutive free ports", n)
	return 0, nil
}

// TestMetricsAddrListen: a range moves past ports in use to the first free
// one; a range all in use, or a single port in use, is an error, the
// range's naming it.
func TestMetricsAddrListen(t *testing.T) {
	t.Parallel()
	port, held := holdPorts(t, 3)
	held[1].Close() // port+1 free, port and port+2 taken
	a := metricsAddr{host: "127.0.0.1", first: port, last: port + 2}
	ln, err := a.listen()
	if err != nil {
		t.Fatal(err)
	}
	if got := ln.Addr().(*net.TCPAddr).Port; got != port+1 {
		t.Errorf("listens on %d, want the free %d", got, port+1)
	}
	// Now all three are taken.
	_, err = a.listen()
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), fmt.Sprintf("every port of 127.0.0.1:%d-%d is in use", port, port+2)) {
		t.Errorf("all taken: %v, want one naming the range", err)
	}
	ln.Close()
	_, err = metricsAddr{host: "127.0.0.1", first: port, last: port}.listen()
	if !errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "every port") {
		t.Errorf("one port taken: %v, want address in use", err)
	}
	ln, err = listenMetrics(fmt.Sprintf("127.0.0.1:%d-%d", port, port+2))
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}
