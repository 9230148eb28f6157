package egress

import (
	"cmp"
	"slices"
	"sync/atomic"
)

// maxEntries caps a task's record; attempts beyond it are only counted in
// Record.Truncated.
const maxEntries = 1024

// Record is what a task reached, and tried to reach, through the proxy.
type Record struct {
	// Entries has one entry per host:port and outcome, sorted by host,
	// then port, allowed first.
	Entries []Entry `json:"entries"`
	// Truncated counts attempts left out because the record had reached
	// 1024 entries.
	Truncated int `json:"truncated,omitempty"`
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

// note counts an attempt and returns its entry, for the bytes.
func (t *task) note(host string, port int, allowed bool, reason string) *entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := entryKey{host, port, allowed}
	e := t.entries[k]
	if e == nil {
		if len(t.entries) >= maxEntries {
			t.truncated++
			return &entry{}
		}
		e = &entry{}
		t.entries[k] = e
	}
	e.count++
	e.reason = reason
	return e
}

func (t *task) record() Record {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec := Record{Entries: make([]Entry, 0, len(t.entries)), Truncated: t.truncated}
	for k, e := range t.entries {
		rec.Entries = append(rec.Entries, Entry{
			Host: k.host, Port: k.port, Allowed: k.allowed, Reason: e.reason,
			Count: e.count, BytesUp: e.up.Load(), BytesDown: e.down.Load(),
		})
	}
	slices.SortFunc(rec.Entries, func(a, b Entry) int {
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
	return rec
}
