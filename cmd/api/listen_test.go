package main

import (
	"io"
	"net/netip"
	"path/filepath"
	"testing"
)

// TestDefaultListenIsLoopback backs README's "Listeners bind to 127.0.0.1
// by default" for the HTTP API: without -listen it is on loopback. It reads
// the parsed default rather than running the API, which would bind a
// fixed port.
func TestDefaultListenIsLoopback(t *testing.T) {
	t.Parallel()
	tokens := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, tokens, map[string]string{"tok-0123456789abcdef": "acme default"})
	c, err := parseFlags([]string{"-tokens", tokens}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := netip.ParseAddrPort(c.listen)
	if err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("default -listen %q, want 127.0.0.1:PORT", c.listen)
	}
}
