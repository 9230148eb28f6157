package egress_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/egress"
	"github.com/bot-bottle/bottleq/tasks"
)

// rawGets sends one authenticated plain GET per target over a single
// kept-alive connection and returns the statuses and bodies.
func (h *harness) rawGets(t *testing.T, token string, targets []string) ([]int, []string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", h.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	auth := "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("task:"+token)) + "\r\n"
	br := bufio.NewReader(c)
	var statuses []int
	var bodies []string
	for _, target := range targets {
		if _, err := io.WriteString(c, "GET http://"+target+"/ HTTP/1.1\r\nHost: "+target+"\r\n"+auth+"\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET http://%.40s...: %v", target, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		statuses, bodies = append(statuses, resp.StatusCode), append(bodies, string(b))
		if resp.Close {
			break
		}
	}
	return statuses, bodies
}

// longName is a valid host name of n characters, unique by i.
func longName(i, n int) string {
	s := fmt.Sprintf("h%d", i)
	for len(s)+10 < n {
		s += "." + strings.Repeat("a", min(63, n-len(s)-10))
	}
	return (s + ".flood.test")[:n-len(".flood.test")] + ".flood.test"
}

// TestInvalidHost checks that a host that is not a valid name is refused
// with 400 before the proxy records or logs it, or resolves or dials
// anything: the record only counts it, and the log line gives its length.
func TestInvalidHost(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("a.", 10<<10) + "example.test"
	tests := []struct {
		name, host, want string
	}{
		{"20 KiB", huge, "longer than 253 characters"},
		{"254 bytes", strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 50) + ".example.test", "longer than 253"},
		{"label over 63", strings.Repeat("x", 64) + ".example.test", "label longer than 63"},
		{"bad character", "bad!name.example.test", `has "!"`},
		{"IPv6 zone", "[fe80::1%25eth0]", `has ":"`}, // %25 is % in a URL
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var log lockedBuffer
			h := newHarness(t, func(c *egress.Config) { c.Logger = zerolog.New(&log).Level(zerolog.DebugLevel) })
			// A wildcard the long names match, were they valid.
			tok := h.register(t, "t", egress.Policy{Hosts: []string{"*.example.test", "fe80::1"}})
			resp, body, _ := h.connect(t, tok, tt.host+":443")
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, tt.want) {
				t.Errorf("CONNECT = %d %q, want 400 containing %q", resp.StatusCode, body, tt.want)
			}
			oneLine(t, body)
			statuses, bodies := h.rawGets(t, tok, []string{tt.host + ":80"})
			if statuses[0] != http.StatusBadRequest || !strings.Contains(bodies[0], tt.want) {
				t.Errorf("GET = %d %q, want 400 containing %q", statuses[0], bodies[0], tt.want)
			}
			for what, s := range map[string]string{"reply": body + bodies[0], "log": log.String()} {
				if strings.Contains(s, tt.host) || len(tt.host) > 40 && strings.Contains(s, tt.host[:40]) {
					t.Errorf("the %s holds the host: %.300q", what, s)
				}
			}
			rec := h.p.Unregister("t")
			if len(rec.Entries) != 0 || rec.Invalid != 2 {
				t.Errorf("record %+v, want no entries and 2 invalid", rec)
			}
			if n := len(h.resolvedNames()) + int(h.dials.Load()); n != 0 {
				t.Errorf("resolved %q and dialed %q", h.resolvedNames(), h.dialedAddrs())
			}
		})
	}
}

// TestRefusalFlood replays a hostile task: hundreds of refused requests,
// each to a new 250-byte name, then one allowed request. The record stays
// within 16 KiB, keeps the allowed entry, and counts what it leaves out;
// the log holds few lines about the refusals, and they count the rest.
func TestRefusalFlood(t *testing.T) {
	t.Parallel()
	var log lockedBuffer
	h := newHarness(t, func(c *egress.Config) { c.Logger = zerolog.New(&log).Level(zerolog.InfoLevel) })
	tok := h.register(t, "t", egress.Policy{Hosts: []string{"allowed.test"}})
	const flood = 300
	var targets []string
	for i := range flood {
		targets = append(targets, longName(i, 250)+":80")
	}
	targets = append(targets, "allowed.test:"+port(t, h.plain))
	statuses, _ := h.rawGets(t, tok, targets)
	if len(statuses) != flood+1 || statuses[flood] != http.StatusOK {
		t.Fatalf("got %d answers, the last %d; want %d, the last 200", len(statuses), statuses[len(statuses)-1], flood+1)
	}
	for i, s := range statuses[:flood] {
		if s != http.StatusForbidden || len(targets[i]) != 250+len(":80") {
			t.Fatalf("GET http://%s/ = %d, want 403 for a 250-byte name", targets[i], s)
		}
	}

	rec := h.p.Unregister("t")
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 16<<10 {
		t.Errorf("the record is %d bytes of JSON, want at most 16 KiB", len(b))
	}
	attempts, allowed := rec.Truncated, 0
	for _, e := range rec.Entries {
		attempts += e.Count
		if e.Allowed {
			allowed++
			if e.Host != "allowed.test" || e.Count != 1 {
				t.Errorf("allowed entry %+v, want allowed.test once", e)
			}
		}
	}
	if allowed != 1 || rec.Truncated == 0 || attempts != flood+1 {
		t.Errorf("record has %d allowed entries, %d entries, %d more; want the allowed one kept and all %d attempts counted",
			allowed, len(rec.Entries), rec.Truncated, flood+1)
	}

	var lines, suppressed int
	sc := bufio.NewScanner(strings.NewReader(log.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l struct {
			Message    string
			Suppressed int
			VM         string `json:"vm"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if l.VM != "t" {
			continue
		}
		suppressed += l.Suppressed
		if l.Message == "egress: refused" {
			lines++
		}
	}
	if lines >= flood/2 || lines+suppressed != flood {
		t.Errorf("the log has %d refusal lines and counts %d more; want few lines, and %d in all", lines, suppressed, flood)
	}
	if n := len(log.String()); n > 32<<10 {
		t.Errorf("the log grew by %d bytes for %d refusals", n, flood)
	}
}

// TestRecordResolveFailure checks that a name the task may reach but that
// does not resolve is in the task's record, as a refusal saying why, and
// that the log lines about it name the VM under "vm", as every egress line
// about a registered VM does.
func TestRecordResolveFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		answer     func() ([]netip.Addr, error)
		wantReason string
	}{
		{"no such host", func() ([]netip.Addr, error) {
			return nil, &net.DNSError{Err: "no such host", Name: "nx.test", IsNotFound: true}
		}, "cannot resolve: no such host"},
		{"timeout", func() ([]netip.Addr, error) {
			return nil, &net.DNSError{Err: "i/o timeout", Name: "nx.test", Server: "10.9.8.7:53", IsTimeout: true}
		}, "cannot resolve: timed out"},
		{"server failure", func() ([]netip.Addr, error) {
			return nil, &net.DNSError{Err: "server misbehaving", Name: "nx.test", Server: "10.9.8.7:53"}
		}, "cannot resolve: DNS failure"},
		{"no addresses", func() ([]netip.Addr, error) { return nil, nil }, "cannot resolve: no addresses"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var log lockedBuffer
			h := newHarness(t, func(c *egress.Config) {
				c.Logger = zerolog.New(&log).Level(zerolog.DebugLevel)
				c.Resolver = func(context.Context, string) ([]netip.Addr, error) { return tt.answer() }
			})
			const vm = "bq-dep-task-a1"
			tok := h.register(t, vm, egress.Policy{Hosts: []string{"nx.test"}})
			for range 2 {
				if resp, body, _ := h.connect(t, tok, "nx.test:443"); resp.StatusCode != http.StatusBadGateway {
					t.Fatalf("CONNECT nx.test:443 = %d %q, want 502", resp.StatusCode, body)
				}
			}
			if statuses, _ := h.rawGets(t, tok, []string{"nx.test:80"}); statuses[0] != http.StatusBadGateway {
				t.Fatalf("GET http://nx.test:80/ = %d, want 502", statuses[0])
			}

			rec := h.p.Unregister(vm)
			want := []tasks.EgressEntry{
				{Host: "nx.test", Port: 80, Reason: tt.wantReason, Count: 1},
				{Host: "nx.test", Port: 443, Reason: tt.wantReason, Count: 2},
			}
			if !slices.Equal(rec.Entries, want) || rec.Truncated != 0 {
				t.Errorf("record %+v, want entries %+v", rec, want)
			}
			if b, _ := json.Marshal(rec); strings.Contains(string(b), "10.9.8.7") {
				t.Errorf("the record names the resolver: %s", b)
			}

			var resolveLines int
			sc := bufio.NewScanner(strings.NewReader(log.String()))
			for sc.Scan() {
				var l map[string]any
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					t.Fatalf("log line %q: %v", sc.Text(), err)
				}
				if _, ok := l["task"]; ok {
					t.Errorf("log line names the VM under \"task\": %s", sc.Text())
				}
				if l["vm"] != vm {
					t.Errorf("log line does not name the VM under \"vm\": %s", sc.Text())
				}
				if l["message"] == "egress: cannot resolve" && l["host"] == "nx.test" {
					resolveLines++
				}
			}
			if resolveLines != 3 {
				t.Errorf("%d \"egress: cannot resolve\" lines, want 3:\n%s", resolveLines, log.String())
			}
		})
	}
}

// TestTunnelLogFields checks the debug lines of an allowed tunnel: each
// names the VM under "vm", and "egress: tunnel closed" gives how long the
// tunnel was open in milliseconds, under duration_ms, with its bytes.
func TestTunnelLogFields(t *testing.T) {
	t.Parallel()
	var log lockedBuffer
	h := newHarness(t, func(c *egress.Config) { c.Logger = zerolog.New(&log).Level(zerolog.DebugLevel) })
	const vm = "bq-dep-task-a1"
	tok := h.register(t, vm, egress.Policy{Hosts: []string{"allowed.test"}})
	if status, _ := h.get(t, tok, "https://allowed.test:"+port(t, h.tls)+"/x"); status != http.StatusOK {
		t.Fatalf("GET over CONNECT = %d", status)
	}
	h.p.Unregister(vm) // returns once the tunnel's handler is done, its line written

	closed := 0
	sc := bufio.NewScanner(strings.NewReader(log.String()))
	for sc.Scan() {
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if l["vm"] != vm {
			t.Errorf("log line does not name the VM under \"vm\": %s", sc.Text())
		}
		if l["message"] != "egress: tunnel closed" {
			continue
		}
		closed++
		if d, ok := l["duration_ms"].(float64); !ok || d < 0 {
			t.Errorf("tunnel closed line has no duration_ms number: %s", sc.Text())
		}
		if up, _ := l["bytes_up"].(float64); up <= 0 {
			t.Errorf("tunnel closed line has no bytes up: %s", sc.Text())
		}
		for _, k := range []string{"took", "duration", "task"} {
			if _, ok := l[k]; ok {
				t.Errorf("tunnel closed line has %q: %s", k, sc.Text())
			}
		}
	}
	if closed != 1 {
		t.Errorf("%d \"egress: tunnel closed\" lines, want 1:\n%s", closed, log.String())
	}
}
