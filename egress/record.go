package egress

import (
	"cmp"
	"encoding/json"
	"slices"
	"sync/atomic"
)

// A task's record keeps at most maxEntries allowed and maxEntries refused
// entries, and comes out of Unregister at most maxRecordBytes long as
// JSON. Attempts left out are counted in Record.Truncated.
const (
	maxEntries     = 256
	maxRecordBytes = 16 << 10
)

// Record is what a task reached, and tried to reach, through the proxy.
// As JSON it is at most 16 KiB long.
type Record struct {
	// Entries has one entry per host:port and outcome, sorted by host,
	// then port, allowed first. It holds up to 256 allowed and 256
	// refused entries, and drops refused entries first to stay within
	// 16 KiB.
	Entries []Entry `json:"entries"`
	// Truncated counts the attempts (tunnels, requests and refusals) of
	// entries left out of Entries: "and N more".
	Truncated int `json:"truncated,omitempty"`
	// Invalid counts requests refused because their host was neither an
	// IP address nor a valid host name (at most 253 characters); the
	// names are not kept.
	Invalid int `json:"invalid,omitempty"`
}

// Entry is a task's traffic to one host:port with one outcome.
type Entry struct {
	// Host is the name or IP address the task asked for, in lower case.
	Host string `json:"host"`
	// Port is the port the task asked for.
	Port int `json:"port"`
	// Allowed is true for connections the proxy carried (some may then
	// have failed to connect) and false for refusals.
	Allowed bool `json:"allowed"`
	// Reason says why the last refusal was made; empty when Allowed.
	Reason string `json:"reason,omitempty"`
	// Count is the number of CONNECT tunnels and plain HTTP requests.
	Count int `json:"count"`
	// BytesUp and BytesDown are the bytes sent to and received from the
	// host, as on the wire (TLS and HTTP framing included).
	BytesUp   int64 `json:"bytes_up"`
	BytesDown int64 `json:"bytes_down"`
}

type entryKey struct {
	host    string
	port    int
	allowed bool
}

type entry struct {
	reason   string // guarded by task.mu
	count    int    // guarded by task.mu
	up, down atomic.Int64
}

// note counts an attempt and returns its entry, for the bytes. host must
// have passed validHost.
func (t *task) note(host string, port int, allowed bool, reason string) *entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := entryKey{host, port, allowed}
	e := t.entries[k]
	if e == nil {
		if t.kept[allowed] >= maxEntries {
			t.truncated++
			return &entry{}
		}
		t.kept[allowed]++
		e = &entry{}
		t.entries[k] = e
	}
	e.count++
	e.reason = reason
	return e
}

// noteInvalid counts a request refused for its host name.
func (t *task) noteInvalid() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.invalid++
}

func (t *task) record() Record {
	t.mu.Lock()
	defer t.mu.Unlock()
	all := make([]Entry, 0, len(t.entries))
	for k, e := range t.entries {
		all = append(all, Entry{
			Host: k.host, Port: k.port, Allowed: k.allowed, Reason: e.reason,
			Count: e.count, BytesUp: e.up.Load(), BytesDown: e.down.Load(),
		})
	}
	slices.SortFunc(all, func(a, b Entry) int {
		if c := cmp.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Port, b.Port); c != 0 {
			return c
		}
		switch {
		case a.Allowed == b.Allowed:
			return 0
		case a.Allowed:
			return -1
		}
		return 1
	})
	rec := Record{Truncated: t.truncated, Invalid: t.invalid}
	// What the task reached goes in before what it was refused.
	budget := maxRecordBytes - len(`{"entries":[],"truncated":-9223372036854775808,"invalid":-9223372036854775808}`)
	keep := make([]bool, len(all))
	for _, allowed := range []bool{true, false} {
		for i, e := range all {
			if e.Allowed != allowed {
				continue
			}
			b, _ := json.Marshal(e)
			if n := len(b) + 1; n <= budget { // +1 for the comma
				keep[i], budget = true, budget-n
				continue
			}
			rec.Truncated += e.Count
		}
	}
	rec.Entries = make([]Entry, 0, len(all))
	for i, e := range all {
		if keep[i] {
			rec.Entries = append(rec.Entries, e)
		}
	}
	return rec
}
