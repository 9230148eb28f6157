package lograte

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// clock is a fake clock a test moves by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)} }
func (c *clock) limiter() *Limiter   { return &Limiter{Now: c.now} }

func TestAllow(t *testing.T) {
	t.Parallel()
	type step struct {
		after time.Duration // clock moves this much first
		msg   string
		write bool
		held  int
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first line of a message is written", []step{
			{0, "a", true, 0},
		}},
		{"repeats within the window are held, the next one counts them", []step{
			{0, "a", true, 0},
			{time.Second, "a", false, 0},
			{time.Second, "a", false, 0},
			{time.Second, "a", false, 0},
			{2 * time.Second, "a", true, 3}, // 5s after the first
			{time.Second, "a", false, 0},
			{4 * time.Second, "a", true, 1},
		}},
		{"a repeat after a quiet window is written with nothing held", []step{
			{0, "a", true, 0},
			{time.Minute, "a", true, 0},
		}},
		{"messages are counted apart", []step{
			{0, "a", true, 0},
			{0, "b", true, 0},
			{time.Second, "a", false, 0},
			{time.Second, "b", false, 0},
			{time.Second, "b", false, 0},
			{3 * time.Second, "a", true, 1},
			{0, "b", true, 2},
			{0, "c", true, 0},
		}},
		{"just under the window still holds", []step{
			{0, "a", true, 0},
			{DefaultWindow - time.Nanosecond, "a", false, 0},
			{time.Nanosecond, "a", true, 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newClock()
			l := c.limiter()
			for i, s := range tt.steps {
				c.add(s.after)
				write, held := l.Allow(s.msg)
				if write != s.write || held != s.held {
					t.Errorf("step %d (%q at +%s): Allow = %v, %d; want %v, %d", i, s.msg, s.after, write, held, s.write, s.held)
				}
			}
		})
	}
}

// TestAllowBounded: a limiter remembers at most maxMessages messages; a
// new message beyond that is written (not lost), and once the old ones
// have been quiet for a window they make room again.
func TestAllowBounded(t *testing.T) {
	t.Parallel()
	c := newClock()
	l := c.limiter()
	for i := range maxMessages {
		if w, _ := l.Allow(fmt.Sprint(i)); !w {
			t.Fatalf("message %d was held the first time", i)
		}
	}
	// Full, none quiet yet: a new message is written every time.
	for range 3 {
		if w, _ := l.Allow("new"); !w {
			t.Fatal("a message beyond the bound was held")
		}
	}
	if len(l.seen) != maxMessages {
		t.Fatalf("remembers %d messages, want at most %d", len(l.seen), maxMessages)
	}
	c.add(DefaultWindow)
	if w, _ := l.Allow("new"); !w {
		t.Fatal("new message held")
	}
	if w, _ := l.Allow("new"); w {
		t.Error("after the old messages went quiet, the new one is still not tracked")
	}
	if len(l.seen) != 1 {
		t.Errorf("remembers %d messages after the quiet ones were dropped, want 1", len(l.seen))
	}
}

// TestAllowConcurrent: under -race, Allow is safe from many goroutines,
// and of n lines of one message within a window exactly one is written.
func TestAllowConcurrent(t *testing.T) {
	t.Parallel()
	c := newClock()
	l := c.limiter()
	const n = 64
	var wg sync.WaitGroup
	var mu sync.Mutex
	written := 0
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if w, _ := l.Allow("same"); w {
				mu.Lock()
				written++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if written != 1 {
		t.Errorf("%d of %d lines written, want 1", written, n)
	}
	c.add(DefaultWindow)
	if w, held := l.Allow("same"); !w || held != n-1 {
		t.Errorf("after the window: Allow = %v, %d; want true, %d", w, held, n-1)
	}
}
