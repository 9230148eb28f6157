package egress

import (
	"testing"
	"time"
)

// TestLogLimit drives the limiter with a clock of its own: logBurst lines
// pass in a window, the rest are counted, and the first line of the next
// window carries the count.
func TestLogLimit(t *testing.T) {
	t.Parallel()
	var l logLimit
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range logBurst {
		if held, ok := l.take(t0.Add(time.Duration(i) * time.Millisecond)); !ok || held != 0 {
			t.Fatalf("line %d = %d, %v; want it to pass", i, held, ok)
		}
	}
	for i := range 1000 {
		if _, ok := l.take(t0.Add(logWindow - time.Millisecond)); ok {
			t.Fatalf("line %d past the burst passed", logBurst+i)
		}
	}
	if held, ok := l.take(t0.Add(logWindow)); !ok || held != 1000 {
		t.Fatalf("first line of the next window = %d, %v; want it to pass saying 1000 were held back", held, ok)
	}
	if held, ok := l.take(t0.Add(logWindow + 1)); !ok || held != 0 {
		t.Errorf("second line of the window = %d, %v; want it to pass with nothing held back", held, ok)
	}
	for range logBurst {
		l.take(t0.Add(logWindow + 2))
	}
	if held := l.flush(); held != 2 {
		t.Errorf("flush = %d, want the 2 lines held back", held)
	}
	if held := l.flush(); held != 0 {
		t.Errorf("second flush = %d, want 0", held)
	}
	// A clock that steps back starts a new window rather than stalling.
	if _, ok := l.take(t0); !ok {
		t.Error("a line after the clock stepped back was held back")
	}
}
