package egress_test

import (
	"bufio"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/egress"
)

// dialFrom connects to the proxy from a loopback source address.
func (h *harness) dialFrom(t *testing.T, src string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", h.addr)
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Skipf("cannot use %s as a source address here: %v", src, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// served sends an authenticated plain GET to the upstream over c and
// reports whether the proxy carried it (200), rather than refusing c with
// a 503 or having closed it.
func (h *harness) served(t *testing.T, c net.Conn, token string) bool {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	target := "127.0.0.1:" + port(t, h.plain)
	req := "GET http://" + target + "/ HTTP/1.1\r\nHost: " + target + "\r\n" +
		"Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("task:"+token)) + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("no answer within 10 s")
		}
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true
	case http.StatusServiceUnavailable:
		return false
	}
	t.Fatalf("GET over a fresh connection = %d, want 200 or 503", resp.StatusCode)
	return false
}

// TestClientConnCaps floods the proxy with idle, unauthenticated
// connections and checks that it holds no more than its caps, per source
// and in total, closing the rest at once, while other sources still get
// in. The header timeout is a minute, so only the caps can close them.
func TestClientConnCaps(t *testing.T) {
	t.Parallel()
	const total, perSource = 5, 3
	h := newHarness(t, func(c *egress.Config) {
		c.MaxClientConns, c.MaxClientConnsPerSource, c.HeaderTimeout = total, perSource, time.Minute
	})
	tok := h.register(t, "t", egress.Policy{Hosts: []string{"127.0.0.1"}})

	const flood = 40
	var first []net.Conn
	for range flood {
		first = append(first, h.dialFrom(t, "127.0.0.1"))
	}
	h.ln.waitCounts(t, "the flood to be accepted and the excess closed", func(a, o int) bool { return a == flood && o == perSource })
	// The accept loop refuses one connection at a time: one over the cap,
	// for a moment.
	if _, _, peak := h.ln.counts(); peak > perSource+1 {
		t.Errorf("the proxy held %d connections from one source at once, cap %d", peak, perSource)
	}
	if n := countServed(t, h, tok, first); n != perSource {
		t.Errorf("%d of %d connections from one source were served, want %d", n, flood, perSource)
	}

	t.Run("total", func(t *testing.T) {
		var second []net.Conn
		for range 4 {
			second = append(second, h.dialFrom(t, "127.0.0.2"))
		}
		third := h.dialFrom(t, "127.0.0.3")
		h.ln.waitCounts(t, "the second source's connections", func(a, o int) bool { return a == flood+5 && o == total })
		if n := countServed(t, h, tok, second); n != total-perSource {
			t.Errorf("%d of 4 connections from a second source were served, want %d (the total cap)", n, total-perSource)
		}
		if h.served(t, third, tok) {
			t.Error("a connection past the total cap was served")
		}
		if _, _, peak := h.ln.counts(); peak > total+1 {
			t.Errorf("the proxy held %d connections at once, cap %d", peak, total)
		}

		// A slot given back is a slot for the next client.
		for _, c := range first {
			c.Close()
		}
		h.ln.waitCounts(t, "the first source's connections to close", func(_, o int) bool { return o == total-perSource })
		if !h.served(t, h.dialFrom(t, "127.0.0.3"), tok) {
			t.Error("a connection after others closed was not served")
		}
	})
}

func countServed(t *testing.T, h *harness, tok string, cs []net.Conn) int {
	t.Helper()
	n := 0
	for _, c := range cs {
		if h.served(t, c, tok) {
			n++
		}
	}
	return n
}

// TestHeaderTimeout checks that a client connection without a request in
// progress is closed after HeaderTimeout: one that sends nothing, one that
// trickles a header, one turned away with 407, and one kept alive after
// its request. The read deadline only keeps a regression from hanging
// the test; it is far beyond the timeout.
func TestHeaderTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *egress.Config) { c.HeaderTimeout = 300 * time.Millisecond })
	tok := h.register(t, "t", egress.Policy{Hosts: []string{"127.0.0.1", "allowed.test"}})
	tests := []struct {
		name string
		do   func(t *testing.T, c net.Conn, br *bufio.Reader)
	}{
		{"nothing sent", func(*testing.T, net.Conn, *bufio.Reader) {}},
		{"header trickled", func(t *testing.T, c net.Conn, _ *bufio.Reader) {
			go func() {
				if _, err := io.WriteString(c, "CONNECT allowed.test:443 HTTP/1.1\r\n"); err != nil {
					return
				}
				for {
					time.Sleep(50 * time.Millisecond)
					if _, err := io.WriteString(c, "X-Slow: 1\r\n"); err != nil {
						return
					}
				}
			}()
		}},
		{"407, then idle", func(t *testing.T, c net.Conn, br *bufio.Reader) {
			if _, err := io.WriteString(c, "CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil || resp.StatusCode != http.StatusProxyAuthRequired {
				t.Fatalf("CONNECT without credentials = %v, %v; want 407", resp, err)
			}
		}},
		{"served, then idle", func(t *testing.T, c net.Conn, br *bufio.Reader) {
			target := "127.0.0.1:" + port(t, h.plain)
			req := "GET http://" + target + "/ HTTP/1.1\r\nHost: " + target + "\r\n" +
				"Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("task:"+tok)) + "\r\n\r\n"
			if _, err := io.WriteString(c, req); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("GET = %v, %v; want 200", resp, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			if resp.Close {
				t.Fatal("the proxy closed a served connection at once; want it kept alive")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := h.dialFrom(t, "127.0.0.1")
			br := bufio.NewReader(c)
			tt.do(t, c, br)
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, err := io.Copy(io.Discard, br)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the proxy kept the connection open")
			}
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("read: %v, want EOF or a reset", err)
			}
		})
	}
}

// TestHeaderTimeoutSparesTunnels checks that an open tunnel, quiet for
// longer than HeaderTimeout, stays open: it has IdleTimeout instead.
func TestHeaderTimeoutSparesTunnels(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *egress.Config) { c.HeaderTimeout = 100 * time.Millisecond })
	tok := h.register(t, "t", egress.Policy{Hosts: []string{"allowed.test"}})
	resp, body, tunnel := h.connect(t, tok, "allowed.test:"+port(t, h.tls))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT = %d %q", resp.StatusCode, body)
	}
	time.Sleep(500 * time.Millisecond)
	if got := h.tlsGet(t, tunnel, "/late"); !strings.HasPrefix(got, "hello ") {
		t.Errorf("over a tunnel quiet for 5 header timeouts: %q", got)
	}
}
