package egress

import (
	"cmp"
	"slices"
	"sync/atomic"

	"github.com/bot-bottle/bottleq/tasks"
)

// maxEntries caps a task's record; attempts beyond it are only counted in
// its Truncated.
const maxEntries = tasks.MaxEgressEntries

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

func (t *task) record() tasks.EgressRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec := tasks.EgressRecord{Entries: make([]tasks.EgressEntry, 0, len(t.entries)), Truncated: t.truncated}
	for k, e := range t.entries {
		rec.Entries = append(rec.Entries, tasks.EgressEntry{
			Host: k.host, Port: k.port, Allowed: k.allowed, Reason: e.reason,
			Count: e.count, BytesUp: e.up.Load(), BytesDown: e.down.Load(),
		})
	}
	slices.SortFunc(rec.Entries, func(a, b tasks.EgressEntry) int {
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
