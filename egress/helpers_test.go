package egress_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/egress"
)

// names is what the test resolver answers. Nothing else is resolved.
var names = map[string][]string{
	"allowed.test":        {"127.0.0.1"},
	"other.test":          {"127.0.0.1"},
	"example.test":        {"127.0.0.1"},
	"a.example.test":      {"127.0.0.1"},
	"b.a.example.test":    {"127.0.0.1"},
	"a.example.test.evil": {"127.0.0.1"},
	"meta.test":           {"169.254.169.254"},
	"rebind.test":         {"127.0.0.1", "169.254.169.254"}, // one bad answer spoils all
	"mapped.test":         {"::ffff:169.254.169.254"},
	"nat64.test":          {"64:ff9b::a9fe:a9fe"},
	"private.test":        {"10.0.0.5"},
	"cgnat.test":          {"100.64.0.1"},
	"host.test":           {"203.0.113.9"},        // a "local" address in TestFloorThisHost
	"host64.test":         {"64:ff9b::cb00:7109"}, // the same, through NAT64
}

// harness is a proxy on a loopback listener, with upstream test servers,
// a resolver that knows only names, and a dial hook that refuses anything
// but loopback.
type harness struct {
	p     *egress.Proxy
	addr  string            // the proxy's host:port
	ln    *countingListener // the proxy's listener
	plain *httptest.Server
	tls   *httptest.Server

	upConns  atomic.Int64 // connections the upstream servers accepted
	dials    atomic.Int64
	mu       sync.Mutex
	resolved []string
	dialed   []string
}

// newHarness starts a proxy with cfg; nil mod leaves cfg as
// AllowLoopback: true, which every test that reaches an upstream needs.
func newHarness(t *testing.T, mod func(*egress.Config)) *harness {
	t.Helper()
	h := &harness{}
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.Header.Get("Proxy-Authorization"); v != "" {
			t.Errorf("upstream got Proxy-Authorization %q", v)
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "hello %s %s %s", r.Host, r.URL.Path, body)
	})
	count := func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			h.upConns.Add(1)
		}
	}
	h.plain = httptest.NewUnstartedServer(upstream)
	h.plain.Config.ConnState = count
	h.plain.Start()
	t.Cleanup(h.plain.Close)
	h.tls = httptest.NewUnstartedServer(upstream)
	h.tls.Config.ConnState = count
	h.tls.Config.ErrorLog = log.New(io.Discard, "", 0) // tunnels opened without TLS
	h.tls.StartTLS()
	t.Cleanup(h.tls.Close)

	cfg := egress.Config{
		AllowLoopback: true,
		Resolver: func(ctx context.Context, host string) ([]netip.Addr, error) {
			h.mu.Lock()
			h.resolved = append(h.resolved, host)
			h.mu.Unlock()
			ss, ok := names[host]
			if !ok {
				return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
			}
			var out []netip.Addr
			for _, s := range ss {
				out = append(out, netip.MustParseAddr(s))
			}
			return out, nil
		},
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			h.dials.Add(1)
			h.mu.Lock()
			h.dialed = append(h.dialed, address)
			h.mu.Unlock()
			ap, err := netip.ParseAddrPort(address)
			if err != nil || !ap.Addr().IsLoopback() {
				return nil, fmt.Errorf("test dial hook: %q is not loopback; tests dial loopback only", address)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, address)
		},
		DialTimeout:     5 * time.Second,
		ShutdownTimeout: 200 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	h.p = egress.New(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	h.ln = &countingListener{Listener: ln}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.p.Serve(ctx, h.ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return h
}

// register registers a task and returns its token.
func (h *harness) register(t *testing.T, id string, pol egress.Policy) string {
	t.Helper()
	tok, err := h.p.Register(id, pol)
	if err != nil {
		t.Fatalf("Register(%q, %+v): %v", id, pol, err)
	}
	return tok
}

func (h *harness) proxyURL(token string) string {
	return egress.ProxyURL("http://"+h.addr, token)
}

// port returns the port of an upstream test server.
func port(t *testing.T, s *httptest.Server) string {
	t.Helper()
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Port()
}

// client returns an http.Client that goes through the proxy with token and
// trusts the TLS upstream's certificate, which is for "example.com".
func (h *harness) client(token string) *http.Client {
	pu, _ := url.Parse(h.proxyURL(token))
	tr := h.tls.Client().Transport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyURL(pu)
	tr.TLSClientConfig = tr.TLSClientConfig.Clone()
	tr.TLSClientConfig.ServerName = "example.com"
	tr.DisableKeepAlives = true
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// get fetches u through the proxy and returns the status and body.
func (h *harness) get(t *testing.T, token, u string) (int, string) {
	t.Helper()
	c := h.client(token)
	defer c.CloseIdleConnections()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// connect sends CONNECT target with token (none if empty) and returns the
// response, its body for a refusal, and for a 200 the open tunnel.
func (h *harness) connect(t *testing.T, token, target string) (*http.Response, string, net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if token != "" {
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("task:"+token)) + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	if resp.StatusCode == http.StatusOK {
		if br.Buffered() > 0 {
			t.Fatalf("CONNECT %s: %d bytes after the 200", target, br.Buffered())
		}
		_ = c.SetDeadline(time.Time{})
		t.Cleanup(func() { c.Close() })
		return resp, "", c
	}
	b, _ := io.ReadAll(resp.Body)
	c.Close()
	return resp, string(b), nil
}

// tlsGet does one HTTPS GET over an open tunnel to the TLS upstream.
func (h *harness) tlsGet(t *testing.T, tunnel net.Conn, path string) string {
	t.Helper()
	pool := h.tls.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	tc := tls.Client(tunnel, &tls.Config{RootCAs: pool, ServerName: "example.com"})
	req, _ := http.NewRequest(http.MethodGet, "https://allowed.test"+path, nil)
	req.Close = true
	if err := req.Write(tc); err != nil {
		t.Fatalf("write over tunnel: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), req)
	if err != nil {
		t.Fatalf("read over tunnel: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read body over tunnel: %v", err)
	}
	return string(b)
}

func (h *harness) resolvedNames() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.resolved...)
}

func (h *harness) dialedAddrs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.dialed...)
}

// oneLine fails unless s is one line of text, ending in a newline or not.
func oneLine(t *testing.T, s string) {
	t.Helper()
	if strings.Contains(strings.TrimSuffix(s, "\n"), "\n") {
		t.Errorf("%q is more than one line", s)
	}
}

// lockedBuffer is a bytes.Buffer the proxy's goroutines may log to while
// the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// countingListener counts the connections it accepts and how many of them
// are open: the files the proxy holds for its clients.
type countingListener struct {
	net.Listener
	mu                   sync.Mutex
	accepted, open, peak int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.accepted++
	l.open++
	l.peak = max(l.peak, l.open)
	return &countedConn{Conn: c, l: l}, nil
}

// counts returns the connections accepted so far, open now, and open at
// most at once.
func (l *countingListener) counts() (accepted, open, peak int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepted, l.open, l.peak
}

// waitCounts waits until ok(accepted, open) holds, and fails the test if
// it does not within 10 s.
func (l *countingListener) waitCounts(t *testing.T, what string, ok func(accepted, open int) bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		a, o, _ := l.counts()
		if ok(a, o) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %d connections accepted, %d open", what, a, o)
		}
	}
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

func (c *countedConn) CloseWrite() error {
	return c.Conn.(*net.TCPConn).CloseWrite()
}
