package main

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestListenersDefaultToLoopback: every listener the worker opens binds
// 127.0.0.1 unless told otherwise.
func TestListenersDefaultToLoopback(t *testing.T) {
	t.Parallel()
	c, err := parseFlags(nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	for name, addr := range map[string]string{"embedded redis": c.embeddedRedis, "metrics": c.metricsAddr} {
		host, _, err := net.SplitHostPort(addr)
		if err != nil || host != "127.0.0.1" {
			t.Errorf("%s listens on %q by default, want 127.0.0.1", name, addr)
		}
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	c, err := parseFlags([]string{"-concurrency", "8"}, env(map[string]string{
		"BOTTLEQ_CONCURRENCY": "2", "BOTTLEQ_POLL_INTERVAL": "25ms", "REDIS_URL": "redis://127.0.0.1:7000", "BOTTLEQ_QUEUES": "hi=3,lo=1",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.concurrency != 8 || c.pollInterval != 25*time.Millisecond || c.redisURL != "redis://127.0.0.1:7000" || c.queues != "hi=3,lo=1" {
		t.Errorf("config = %+v: flags must beat env, env must fill the rest", c)
	}
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-concurrency", "0"}, nil, "-concurrency"},
		{nil, map[string]string{"BOTTLEQ_SHUTDOWN_TIMEOUT": "soon"}, "BOTTLEQ_SHUTDOWN_TIMEOUT"},
		{[]string{"-queues", "a=0"}, nil, "-queues"},
		{[]string{"-proxy", "http://10.0.0.1"}, nil, "proxy"},
		{[]string{"stray"}, nil, "unexpected argument"},
	} {
		_, err := parseFlags(tt.args, env(tt.env), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("parseFlags(%q, %v) = %v, want one line naming %s", tt.args, tt.env, err, tt.want)
		}
	}
}
