package egress

import (
	"cmp"
	"encoding/json"
	"slices"
	"sync/atomic"

	"github.com/bot-bottle/bottleq/tasks"
)

// A task's record keeps at most tasks.MaxEgressEntries allowed and as many
// refused entries, and comes out of Unregister at most
// tasks.MaxEgressRecordBytes long as JSON. Attempts left out are counted in
// its Truncated.
const (
	maxEntries     = tasks.MaxEgressEntries
	maxRecordBytes = tasks.MaxEgressRecordBytes
)

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

func (t *task) record() tasks.EgressRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	all := make([]tasks.EgressEntry, 0, len(t.entries))
	for k, e := range t.entries {
		all = append(all, tasks.EgressEntry{
			Host: k.host, Port: k.port, Allowed: k.allowed, Reason: e.reason,
			Count: e.count, BytesUp: e.up.Load(), BytesDown: e.down.Load(),
		})
	}
	slices.SortFunc(all, func(a, b tasks.EgressEntry) int {
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
	rec := tasks.EgressRecord{Truncated: t.truncated, Invalid: t.invalid}
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
	rec.Entries = make([]tasks.EgressEntry, 0, len(all))
	for i, e := range all {
		if keep[i] {
			rec.Entries = append(rec.Entries, e)
		}
	}
	return rec
}
