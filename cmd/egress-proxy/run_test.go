package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
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
