package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
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
)

// syncBuffer is a bytes.Buffer safe for the proxy's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRun runs the proxy on loopback with a static token, fetches from a
// loopback test server through it, stops it, and reads the record.
func TestRun(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") }))
	defer up.Close()
	const token = "static-token-0123456789"
	env := map[string]string{tokenEnv: token}
	var stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := make(chan int, 1)
	go func() {
		code <- Run(ctx, []string{"-listen", "127.0.0.1:0", "-allow-host", "127.0.0.1", "-allow-loopback-for-tests"},
			func(k string) string { return env[k] }, &stderr)
	}()
	addr := waitListen(t, &stderr)
	if strings.Contains(stderr.String(), token) {
		t.Errorf("the log shows the token: %s", stderr.String())
	}

	pu, _ := url.Parse("http://x:" + token + "@" + addr)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}, Timeout: 10 * time.Second}
	resp, err := c.Get(up.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "hi" {
		t.Fatalf("GET through the proxy = %d %q", resp.StatusCode, b)
	}
	c.CloseIdleConnections()

	cancel()
	select {
	case got := <-code:
		if got != 0 {
			t.Fatalf("Run = %d, want 0; stderr:\n%s", got, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	var stopped struct {
		Record struct {
			Entries []struct {
				Host      string `json:"host"`
				Allowed   bool   `json:"allowed"`
				Count     int    `json:"count"`
				BytesDown int64  `json:"bytes_down"`
			} `json:"entries"`
		} `json:"record"`
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &stopped); err != nil {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	if e := stopped.Record.Entries; len(e) != 1 || e[0].Host != "127.0.0.1" || !e[0].Allowed || e[0].Count != 1 || e[0].BytesDown == 0 {
		t.Errorf("record %+v", stopped.Record)
	}
}

// TestRunDeny checks -egress-deny and its environment variable: a host the
// token may reach is refused when its address is in a denied range, and
// the upstream sees nothing.
func TestRunDeny(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"flag", []string{"-egress-deny", "10.0.0.0/8", "-egress-deny", "127.0.0.0/8"}, nil},
		{"environment", nil, map[string]string{"BOTTLEQ_EGRESS_DENY": "10.0.0.0/8,127.0.0.0/8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var hits atomic.Int64
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
			defer up.Close()
			const token = "static-token-0123456789"
			env := map[string]string{tokenEnv: token}
			maps.Copy(env, tt.env)
			var stderr syncBuffer
			ctx, cancel := context.WithCancel(context.Background())
			code := make(chan int, 1)
			go func() {
				args := append([]string{"-listen", "127.0.0.1:0", "-allow-host", "127.0.0.1", "-allow-loopback-for-tests"}, tt.args...)
				code <- Run(ctx, args, func(k string) string { return env[k] }, &stderr)
			}()
			defer func() { cancel(); <-code }()
			addr := waitListen(t, &stderr)
			pu, _ := url.Parse("http://x:" + token + "@" + addr)
			c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}, Timeout: 10 * time.Second}
			resp, err := c.Get(up.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "denied by the operator") {
				t.Errorf("GET through the proxy = %d %q, want 403 denied by the operator", resp.StatusCode, b)
			}
			if n := hits.Load(); n != 0 {
				t.Errorf("the upstream saw %d requests", n)
			}
		})
	}
}

// TestRunClientCaps checks that -max-client-conns-per-source, here from
// its environment variable, reaches the proxy: with a cap of one, a second
// connection from loopback is answered 503 and closed while the first is
// open. -header-timeout is long, so only the cap can close it.
func TestRunClientCaps(t *testing.T) {
	t.Parallel()
	const token = "static-token-0123456789"
	env := map[string]string{tokenEnv: token, "BOTTLEQ_EGRESS_MAX_CLIENT_CONNS_PER_SOURCE": "1"}
	var stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() {
		code <- Run(ctx, []string{"-listen", "127.0.0.1:0", "-header-timeout", "1m"}, func(k string) string { return env[k] }, &stderr)
	}()
	defer func() { cancel(); <-code }()
	addr := waitListen(t, &stderr)
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	// An answer on the first proves it was accepted; a refusal to an
	// authenticated client keeps it open.
	_ = first.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\nProxy-Authorization: Basic " +
		base64.StdEncoding.EncodeToString([]byte("x:"+token)) + "\r\n\r\n"
	if _, err := io.WriteString(first, req); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(bufio.NewReader(first), nil); err != nil || resp.StatusCode != http.StatusForbidden || resp.Close {
		t.Fatalf("first connection: %v, %v; want 403, kept alive", resp, err)
	}
	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	_ = second.SetDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(second), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second connection: %v, %v; want 503 before it sent anything", resp, err)
	}
}

// TestDefaultListenIsLoopback backs README's "Listeners bind to 127.0.0.1
// by default": without -listen the proxy's address is loopback. It reads
// the parsed default rather than running the proxy, which would bind a
// fixed port.
func TestDefaultListenIsLoopback(t *testing.T) {
	t.Parallel()
	c, err := parseFlags(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := netip.ParseAddrPort(c.listen)
	if err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("default -listen %q, want 127.0.0.1:PORT", c.listen)
	}
}

// waitListen returns the address from the "listening" log line.
func waitListen(t *testing.T, stderr *syncBuffer) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		sc := bufio.NewScanner(strings.NewReader(stderr.String()))
		for sc.Scan() {
			var l struct{ Listen string }
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Listen != "" {
				return l.Listen
			}
		}
	}
	t.Fatalf("no listening line; stderr:\n%s", stderr.String())
	return ""
}

func TestRunUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-allow-host", "http://x"}, nil, `allow_hosts: "http://x" is a URL`},
		{[]string{"-allow-host", "*"}, nil, "would allow every host"},
		{[]string{"-max-conns", "0"}, nil, "-max-conns 0"},
		{[]string{"-token", "short"}, nil, "token must be"},
		{nil, map[string]string{tokenEnv: "short"}, "token must be"},
		{[]string{"-log-level", "loud"}, nil, "-log-level"},
		{[]string{"-max-client-conns", "0"}, nil, "-max-client-conns 0 must be at least 1"},
		{[]string{"-max-client-conns-per-source", "0"}, nil, "-max-client-conns-per-source 0 must be at least 1"},
		{nil, map[string]string{"BOTTLEQ_EGRESS_MAX_CLIENT_CONNS_PER_SOURCE": "-1"}, "-max-client-conns-per-source -1 must be at least 1"},
		{[]string{"-header-timeout", "0s"}, nil, "-header-timeout 0s must be positive"},
		{nil, map[string]string{"BOTTLEQ_EGRESS_HEADER_TIMEOUT": "soon"}, "BOTTLEQ_EGRESS_HEADER_TIMEOUT: not a valid -header-timeout value"},
		{[]string{"-egress-deny", "10.0.0.0/33"}, nil, `invalid value "10.0.0.0/33" for flag -egress-deny: not a CIDR`},
		{nil, map[string]string{"BOTTLEQ_EGRESS_DENY": "10.0.0.0/8,nope"}, "BOTTLEQ_EGRESS_DENY: not a valid -egress-deny value: item 2 of 2: not a CIDR"},
		{[]string{"extra"}, nil, `unexpected argument "extra"`},
		{[]string{"-nope"}, nil, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.args, tt.env), func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			// Never the default 127.0.0.1:3128, should a bad value be taken.
			args := append([]string{"-listen", "127.0.0.1:0"}, tt.args...)
			got := Run(context.Background(), args, func(k string) string { return tt.env[k] }, &stderr)
			if got != 2 || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("Run(%q) = %d, stderr %q; want 2 and %q", tt.args, got, stderr.String(), tt.want)
			}
		})
	}
}
