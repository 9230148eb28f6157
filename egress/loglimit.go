package egress

import (
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// A logLimit lets through at most logBurst lines per logWindow.
const (
	logWindow = 10 * time.Second
	logBurst  = 20
)

// logLimit passes at most logBurst log lines per logWindow and counts the
// lines it holds back, so a flood of refusals cannot flood the log. The
// next line it passes says how many it held back, as "suppressed".
type logLimit struct {
	mu         sync.Mutex
	start      time.Time // of the current window
	n          int       // lines passed in the current window
	suppressed int       // lines held back since the last one passed
}

// gate returns e, with the count of lines held back before it, or nil,
// on which zerolog's methods do nothing, when the window is full. A nil e
// (its level is off) is not counted.
func (l *logLimit) gate(e *zerolog.Event) *zerolog.Event {
	if e == nil {
		return nil
	}
	held, ok := l.take(time.Now())
	if !ok {
		e.Discard()
		return nil
	}
	if held > 0 {
		e = e.Int("suppressed", held)
	}
	return e
}

// take reports whether a line may pass at now and, if so, how many were
// held back since the last one that did.
func (l *logLimit) take(now time.Time) (held int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= logWindow || now.Before(l.start) {
		l.start, l.n = now, 0
	}
	if l.n >= logBurst {
		l.suppressed++
		return 0, false
	}
	l.n++
	held, l.suppressed = l.suppressed, 0
	return held, true
}

// flush returns the lines held back since the last one passed, and
// forgets them, for a last line when the limiter's owner goes away.
func (l *logLimit) flush() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	held := l.suppressed
	l.suppressed = 0
	return held
}
