package egress_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/egress"
	"github.com/bot-bottle/bottleq/tasks"
)

func TestAllowedHTTPS(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tok := h.register(t, "t1", egress.Policy{Hosts: []string{"allowed.test"}})
	status, body := h.get(t, tok, "https://allowed.test:"+port(t, h.tls)+"/x")
	if want := "hello allowed.test:" + port(t, h.tls) + " /x "; status != http.StatusOK || body != want {
		t.Fatalf("GET over CONNECT = %d %q, want 200 %q", status, body, want)
	}
	if got := h.resolvedNames(); !slices.Equal(got, []string{"allowed.test"}) {
		t.Errorf("resolved %q, want allowed.test once", got)
	}
	if got, want := h.dialedAddrs(), []string{"127.0.0.1:" + port(t, h.tls)}; !slices.Equal(got, want) {
		t.Errorf("dialed %q, want %q (the checked address, not the name)", got, want)
	}
}

func TestAllowedPlainHTTP(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tok := h.register(t, "t1", egress.Policy{Hosts: []string{"allowed.test"}})
	c := h.client(tok)
	resp, err := c.Post("http://allowed.test:"+port(t, h.plain)+"/p?q=1", "text/plain", strings.NewReader("up"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	// The upstream handler also fails the test if it sees Proxy-Authorization.
	if want := "hello allowed.test:" + port(t, h.plain) + " /p up"; resp.StatusCode != http.StatusOK || string(b) != want {
		t.Fatalf("POST = %d %q, want 200 %q", resp.StatusCode, b, want)
	}
}

// TestCONNECT runs CONNECT through policies and the floor. Refusals must
// not dial anything, and floor refusals must have resolved the name.
func TestCONNECT(t *testing.T) {
	t.Parallel()
	const self = "SELF" // the proxy's own address
	tests := []struct {
		name        string
		cfg         func(*egress.Config)
		hosts       []string
		target      string // host; ":PORT" of the TLS upstream is added unless it has a port
		wantStatus  int
		wantBody    string
		wantResolve bool
	}{
		{name: "allowed", hosts: []string{"allowed.test"}, target: "allowed.test", wantStatus: 200, wantResolve: true},
		{name: "trailing dot and case", hosts: []string{"allowed.test"}, target: "Allowed.TEST.", wantStatus: 200, wantResolve: true},
		{name: "not listed", hosts: []string{"allowed.test"}, target: "other.test", wantStatus: 403,
			wantBody: `bottleq egress: host "other.test:PORT" is not in this task's allow_hosts`},
		{name: "no hosts", target: "allowed.test", wantStatus: 403, wantBody: "is not in this task's allow_hosts"},
		{name: "wildcard sub-domain", hosts: []string{"*.example.test"}, target: "a.example.test", wantStatus: 200, wantResolve: true},
		{name: "wildcard deeper", hosts: []string{"*.example.test"}, target: "b.a.example.test", wantStatus: 200, wantResolve: true},
		{name: "wildcard not apex", hosts: []string{"*.example.test"}, target: "example.test", wantStatus: 403, wantBody: "allow_hosts"},
		{name: "wildcard not suffix trick", hosts: []string{"*.example.test"}, target: "a.example.test.evil", wantStatus: 403, wantBody: "allow_hosts"},
		{name: "port rule matches", hosts: []string{"allowed.test:PORT"}, target: "allowed.test", wantStatus: 200, wantResolve: true},
		{name: "port rule other port", hosts: []string{"allowed.test:1"}, target: "allowed.test", wantStatus: 403, wantBody: "allow_hosts"},
		{name: "metadata", hosts: []string{"meta.test"}, target: "meta.test", wantStatus: 403,
			wantBody: `bottleq egress: host "meta.test" resolves to a forbidden address (169.254.169.254: link-local)`, wantResolve: true},
		{name: "one bad answer of two", hosts: []string{"rebind.test"}, target: "rebind.test", wantStatus: 403,
			wantBody: "resolves to a forbidden address", wantResolve: true},
		{name: "IPv4-mapped metadata", hosts: []string{"mapped.test"}, target: "mapped.test", wantStatus: 403,
			wantBody: "169.254.169.254: link-local", wantResolve: true},
		{name: "NAT64 metadata", hosts: []string{"nat64.test"}, target: "nat64.test", wantStatus: 403,
			wantBody: "embedded IPv4 169.254.169.254", wantResolve: true},
		{name: "private", hosts: []string{"private.test"}, target: "private.test", wantStatus: 403,
			wantBody: "(10.0.0.5: private)", wantResolve: true},
		{name: "CGNAT", hosts: []string{"cgnat.test"}, target: "cgnat.test", wantStatus: 403,
			wantBody: "(100.64.0.1: private)", wantResolve: true},
		{name: "literal metadata IP", hosts: []string{"169.254.169.254"}, target: "169.254.169.254", wantStatus: 403,
			wantBody: "resolves to a forbidden address"},
		{name: "literal IPv6 link-local", hosts: []string{"fe80::1"}, target: "[fe80::1]", wantStatus: 403,
			wantBody: "link-local"},
		{name: "literal unspecified", hosts: []string{"0.0.0.0"}, target: "0.0.0.0", wantStatus: 403, wantBody: "unspecified"},
		{name: "literal loopback IP allowed in tests", hosts: []string{"127.0.0.1"}, target: "127.0.0.1", wantStatus: 200},
		{name: "the proxy itself", hosts: []string{"127.0.0.1"}, target: self, wantStatus: 403, wantBody: "the proxy itself"},
		{name: "loopback without AllowLoopback", cfg: func(c *egress.Config) { c.AllowLoopback = false },
			hosts: []string{"allowed.test"}, target: "allowed.test", wantStatus: 403,
			wantBody: "(127.0.0.1: loopback)", wantResolve: true},
		{name: "unknown name", hosts: []string{"nx.test"}, target: "nx.test", wantStatus: 502,
			wantBody: `cannot resolve host "nx.test"`, wantResolve: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, tt.cfg)
			p := port(t, h.tls)
			var hosts []string
			for _, s := range tt.hosts {
				hosts = append(hosts, strings.ReplaceAll(s, "PORT", p))
			}
			tok := h.register(t, "t", egress.Policy{Hosts: hosts})
			target := tt.target + ":" + p
			if tt.target == self {
				target = h.addr
			}
			resp, body, tunnel := h.connect(t, tok, target)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("CONNECT %s = %d %q, want %d", target, resp.StatusCode, body, tt.wantStatus)
			}
			want := strings.ReplaceAll(tt.wantBody, "PORT", p)
			if !strings.Contains(body, want) {
				t.Errorf("body %q, want it to contain %q", body, want)
			}
			oneLine(t, body)
			if resolved := len(h.resolvedNames()) > 0; resolved != tt.wantResolve {
				t.Errorf("resolver called: %v, want %v", resolved, tt.wantResolve)
			}
			if tt.wantStatus == 200 {
				if got := h.tlsGet(t, tunnel, "/t"); !strings.HasPrefix(got, "hello ") {
					t.Errorf("over tunnel: %q", got)
				}
				return
			}
			if n := h.dials.Load(); n != 0 {
				t.Errorf("refused CONNECT dialed %d times: %q", n, h.dialedAddrs())
			}
			if n := h.upConns.Load(); n != 0 {
				t.Errorf("upstream servers saw %d connections", n)
			}
		})
	}
}

// TestAllowPrivate checks that AllowPrivate lifts the private ranges, and
// that the proxy dials the checked address. The test dial hook refuses the
// non-loopback address without touching the network.
func TestAllowPrivate(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *egress.Config) { c.AllowPrivate = true })
	tok := h.register(t, "t", egress.Policy{Hosts: []string{"private.test", "meta.test"}})
	resp, body, _ := h.connect(t, tok, "private.test:443")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "cannot connect") {
		t.Errorf("CONNECT private.test = %d %q, want 502 from the refusing dial hook", resp.StatusCode, body)
	}
	if got, want := h.dialedAddrs(), []string{"10.0.0.5:443"}; !slices.Equal(got, want) {
		t.Errorf("dialed %q, want %q", got, want)
	}
	resp, body, _ = h.connect(t, tok, "meta.test:80")
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("AllowPrivate lifted link-local: %d %q", resp.StatusCode, body)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tok := h.register(t, "t", egress.Policy{Hosts: []string{"allowed.test"}})
	tok2 := h.register(t, "gone", egress.Policy{Hosts: []string{"allowed.test"}})
	h.p.Unregister("gone")
	tests := []struct {
		name  string
		token string
	}{
		{"no credentials", ""},
		{"wrong token", strings.Repeat("0", 32)},
		{"token of another prefix", tok[:16]},
		{"unregistered", tok2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, body, _ := h.connect(t, tt.token, "allowed.test:"+port(t, h.tls))
			if resp.StatusCode != http.StatusProxyAuthRequired {
				t.Fatalf("CONNECT = %d %q, want 407", resp.StatusCode, body)
			}
			if got, want := resp.Header.Get("Proxy-Authenticate"), `Basic realm="bottleq"`; got != want {
				t.Errorf("Proxy-Authenticate %q, want %q", got, want)
			}
			oneLine(t, body)
			c := h.client(tt.token)
			r, err := c.Get("http://allowed.test:" + port(t, h.plain) + "/")
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode != http.StatusProxyAuthRequired {
				t.Errorf("plain GET = %d, want 407", r.StatusCode)
			}
		})
	}
	if n := h.dials.Load(); n != 0 {
		t.Errorf("unauthenticated requests dialed %d times", n)
	}
}

func TestPlainRefusals(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tok := h.register(t, "t", egress.Policy{Hosts: []string{"allowed.test", "meta.test"}})
	for _, tc := range []struct {
		url, want string
		status    int
	}{
		{"http://other.test/", `host "other.test:80" is not in this task's allow_hosts`, 403},
		{"http://meta.test/latest/meta-data/", "resolves to a forbidden address", 403},
	} {
		status, body := h.get(t, tok, tc.url)
		if status != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s = %d %q, want %d containing %q", tc.url, status, body, tc.status, tc.want)
		}
		oneLine(t, body)
	}
	if n := h.dials.Load(); n != 0 {
		t.Errorf("refusals dialed %d times", n)
	}
}

func TestMaxConns(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tok := h.register(t, "t", egress.Policy{Hosts: []string{"allowed.test"}, MaxConns: 1})
	target := "allowed.test:" + port(t, h.tls)
	resp, body, first := h.connect(t, tok, target)
	if resp.StatusCode != 200 {
		t.Fatalf("first CONNECT = %d %q", resp.StatusCode, body)
	}
	resp, body, _ = h.connect(t, tok, target)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "too many concurrent connections (max 1)") {
		t.Fatalf("second CONNECT while the first is open = %d %q, want 429", resp.StatusCode, body)
	}
	oneLine(t, body)
	first.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, body, _ = h.connect(t, tok, target)
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CONNECT after the first closed = %d %q, want 200", resp.StatusCode, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRecord(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tok := h.register(t, "t", egress.Policy{Hosts: []string{"allowed.test"}})
	p := port(t, h.tls)
	if status, _ := h.get(t, tok, "https://allowed.test:"+p+"/a"); status != 200 {
		t.Fatalf("GET = %d", status)
	}
	if status, _ := h.get(t, tok, "http://allowed.test:"+port(t, h.plain)+"/b"); status != 200 {
		t.Fatalf("GET = %d", status)
	}
	h.connect(t, tok, "other.test:443")
	h.connect(t, tok, "other.test:443")

	rec := h.p.Unregister("t")
	b, _ := json.Marshal(rec)
	t.Logf("record: %s", b)
	if len(rec.Entries) != 3 {
		t.Fatalf("record has %d entries, want 3: %s", len(rec.Entries), b)
	}
	for _, e := range rec.Entries[:2] {
		if e.Host != "allowed.test" || !e.Allowed || e.Count != 1 || e.BytesUp <= 0 || e.BytesDown <= 0 || e.Reason != "" {
			t.Errorf("allowed entry %+v, want allowed.test, allowed, count 1, bytes both ways", e)
		}
	}
	if e := rec.Entries[2]; e != (tasks.EgressEntry{Host: "other.test", Port: 443, Allowed: false, Reason: "not in allow_hosts", Count: 2}) {
		t.Errorf("refused entry %+v", e)
	}
	if !strings.Contains(string(b), `"bytes_up":`) || !strings.Contains(string(b), `"allowed":false`) {
		t.Errorf("JSON %s lacks snake_case fields", b)
	}
	if again := h.p.Unregister("t"); len(again.Entries) != 0 {
		t.Errorf("second Unregister = %+v, want empty", again)
	}
}

// TestUnregisterClosesTunnels checks that Unregister closes open tunnels
// itself, rather than waiting out its bound (5 s) for them to end, and
// returns a record that includes their bytes. It asserts on what happened,
// not on how long it took, so a loaded machine cannot fail it.
func TestUnregisterClosesTunnels(t *testing.T) {
	t.Parallel()
	var log lockedBuffer
	h := newHarness(t, func(c *egress.Config) { c.Logger = zerolog.New(&log).Level(zerolog.WarnLevel) })
	tok := h.register(t, "t", egress.Policy{Hosts: []string{"allowed.test"}})
	_, _, tunnel := h.connect(t, tok, "allowed.test:"+port(t, h.plain))
	if _, err := io.WriteString(tunnel, "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := tunnel.Read(buf); err != nil {
		t.Fatal(err)
	}
	rec := h.p.Unregister("t")
	if strings.Contains(log.String(), "still open after unregister") {
		t.Errorf("Unregister waited out its bound instead of closing the tunnel; log:\n%s", log.String())
	}
	if len(rec.Entries) != 1 || rec.Entries[0].BytesDown == 0 {
		t.Errorf("record %+v, want the tunnel's bytes", rec)
	}
	// The upstream keeps the connection alive and the idle timeout is 5
	// minutes: only Unregister can have closed the tunnel. The deadline
	// just keeps a regression from hanging the test.
	_ = tunnel.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(tunnel); err != nil {
		t.Errorf("tunnel after Unregister: %v, want EOF", err)
	}
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *egress.Config) { c.IdleTimeout = 200 * time.Millisecond })
	tok := h.register(t, "t", egress.Policy{Hosts: []string{"allowed.test"}})
	_, _, tunnel := h.connect(t, tok, "allowed.test:"+port(t, h.plain))
	start := time.Now()
	_ = tunnel.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadAll(tunnel)
	if err != nil {
		t.Fatalf("idle tunnel: %v, want closed by the proxy", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("idle tunnel closed after %v, before the idle timeout", d)
	}
}

// TestServeShutdown checks that Serve returns once its context ends, even
// with a tunnel open, and that the tunnel is closed.
func TestServeShutdown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	p := egress.New(egress.Config{AllowLoopback: true, ShutdownTimeout: 100 * time.Millisecond})
	tok, err := p.Register("t", egress.Policy{Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	h.addr = ln.Addr().String()
	resp, body, tunnel := h.connect(t, tok, "127.0.0.1:"+port(t, h.plain))
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT = %d %q", resp.StatusCode, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	_ = tunnel.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(tunnel); err != nil {
		t.Errorf("tunnel after shutdown: %v, want EOF", err)
	}
	if _, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		t.Error("listener still accepts after shutdown")
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	p := egress.New(egress.Config{})
	if _, err := p.Register("t", egress.Policy{Hosts: []string{"ok.test"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, id string
		pol      egress.Policy
		want     string
	}{
		{"duplicate", "t", egress.Policy{}, "already registered"},
		{"empty VM name", "", egress.Policy{}, "VM name is empty"},
		{"bad host", "u", egress.Policy{Hosts: []string{"ok.test", "http://x"}}, `allow_hosts[1]: "http://x"`},
		{"negative cap", "u", egress.Policy{MaxConns: -1}, "negative"},
	} {
		if _, err := p.Register(tc.id, tc.pol); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Register = %v, want error containing %q", tc.name, err, tc.want)
		}
	}
	a, _ := p.Register("a", egress.Policy{})
	b, _ := p.Register("b", egress.Policy{})
	if len(a) != 32 || a == b {
		t.Errorf("tokens %q, %q: want 32 hex digits, distinct", a, b)
	}
	if err := p.RegisterToken("c", "short", egress.Policy{}); err == nil {
		t.Error("RegisterToken accepted a 5-character token")
	}
}
