// Package lograte keeps a library's repeated log lines from flooding a
// log: while Redis is away, asynq and go-redis log the same error several
// times a second. A [Limiter] lets the first line of a message through,
// then at most one per window while it keeps repeating; the line let
// through says how many it held back. It only decides: the caller writes
// the line, with the count as a field.
//
// It is for lines whose message is all they say (a library's, logged
// through an adapter), not for the commands' own lines, whose fields
// (a task ID, say) tell apart lines with the same message.
package lograte

import (
	"sync"
	"time"
)

// DefaultWindow is the least time between two lines a Limiter writes with
// the same message.
const DefaultWindow = 5 * time.Second

// maxMessages bounds the messages a Limiter remembers. A message beyond
// it, when none has been quiet for a window, is let through untracked.
const maxMessages = 1024

// Limiter decides which repeated lines to write. The zero value is ready
// to use, with DefaultWindow and the system clock; it is safe for
// concurrent use.
type Limiter struct {
	// Now is the clock. Nil means time.Now.
	Now func() time.Time

	mu   sync.Mutex
	seen map[string]*record
}

// record is what a Limiter remembers of one message.
type record struct {
	written time.Time // when a line with it was last written
	held    int       // lines held back since
}

// Allow reports whether to write a line with message msg now: yes for the
// first, then no until a window has passed since the last one written.
// When yes, held is the number of lines with msg it said no to since that
// last one (0 for the first). Lines held back when msg stops repeating are
// never counted in a line: there is no next one.
func (l *Limiter) Allow(msg string) (write bool, held int) {
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	t := now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if r, ok := l.seen[msg]; ok {
		if t.Sub(r.written) < DefaultWindow {
			r.held++
			return false, 0
		}
		held, r.held, r.written = r.held, 0, t
		return true, held
	}
	if l.seen == nil {
		l.seen = map[string]*record{}
	}
	if len(l.seen) >= maxMessages {
		for m, r := range l.seen {
			if t.Sub(r.written) >= DefaultWindow {
				delete(l.seen, m)
			}
		}
		if len(l.seen) >= maxMessages {
			return true, 0
		}
	}
	l.seen[msg] = &record{written: t}
	return true, 0
}
