package redisurl

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/internal/testredis"
)

// TestMain routes go-redis's lines before any test makes a client, as a
// command's start does: go-redis reads its logger without a lock.
func TestMain(m *testing.M) {
	RouteLogs(func(string, int) {})
	os.Exit(m.Run())
}

// handed records the lines RouteLogs hands on.
type handed struct {
	mu    sync.Mutex
	lines []handedLine
}

type handedLine struct {
	msg        string
	suppressed int
}

func (h *handed) write(msg string, suppressed int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lines = append(h.lines, handedLine{msg, suppressed})
}

func (h *handed) get() []handedLine {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]handedLine(nil), h.lines...)
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	return testredis.RefusedAddr(t)
}

func client(t *testing.T, raw string) redis.UniversalClient {
	t.Helper()
	rc, err := Open(raw, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	return rc
}

func TestPingAnswered(t *testing.T) {
	t.Parallel()
	for _, s := range []*testredis.Server{testredis.Mini(t), testredis.Real(t)} {
		t.Run(s.Kind, func(t *testing.T) {
			if err := Ping(context.Background(), client(t, s.URL()), time.Second); err != nil {
				t.Errorf("Ping: %v", err)
			}
		})
	}
}

// TestPingClosedPort: nothing listens; Ping gives up after its wait with
// ErrNoAnswer, wrapping the refused connection.
func TestPingClosedPort(t *testing.T) {
	t.Parallel()
	tests := []struct {
		wait    time.Duration
		refused bool // a try ended before the deadline, so the error says why
	}{
		{0, true},
		{5 * time.Second, true},
		{50 * time.Millisecond, false},
	}
	for _, tt := range tests {
		t.Run(tt.wait.String(), func(t *testing.T) {
			t.Parallel()
			err := Ping(context.Background(), client(t, "redis://"+closedAddr(t)), tt.wait)
			if !errors.Is(err, ErrNoAnswer) || errors.Is(err, syscall.ECONNREFUSED) != tt.refused {
				t.Errorf("Ping = %v, want ErrNoAnswer, wrapping ECONNREFUSED: %v", err, tt.refused)
			}
			if tt.wait > 0 && !strings.Contains(err.Error(), "within "+tt.wait.String()) {
				t.Errorf("%q does not say how long it waited", err)
			}
		})
	}
}

// TestPingWaitsForRedis: Redis starts listening after Ping's first tries
// failed; Ping keeps trying and returns nil.
func TestPingWaitsForRedis(t *testing.T) {
	t.Parallel()
	addr := closedAddr(t)
	rc := client(t, "redis://"+addr)
	done := make(chan error, 1)
	go func() { done <- Ping(context.Background(), rc, time.Minute) }()
	time.Sleep(300 * time.Millisecond) // not an assertion: lets a few tries fail
	select {
	case err := <-done:
		t.Fatalf("Ping returned before Redis listened: %v", err)
	default:
	}
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(addr); err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	defer m.Close()
	if err := <-done; err != nil {
		t.Errorf("Ping = %v, want nil once Redis listens", err)
	}
}

// TestPingRefusedAtOnce: an answer that waiting cannot change ends Ping
// at once, whatever its wait: with an hour's wait, the test's own
// deadline tells a Ping that kept trying.
func TestPingRefusedAtOnce(t *testing.T) {
	t.Parallel()
	m := miniredis.NewMiniRedis()
	m.RequireAuth("right")
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	tlsRedis := testredis.RealTLS(t)
	tests := []struct {
		name string
		url  string
		is   func(error) bool
	}{
		{"no password", "redis://" + m.Addr(), redis.IsAuthError},
		{"wrong password", "redis://:wrong@" + m.Addr(), redis.IsAuthError},
		{"TLS certificate not trusted", tlsRedis.URL(), func(err error) bool {
			var verify *tls.CertificateVerificationError
			return errors.As(err, &verify)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := Ping(ctx, client(t, tt.url), time.Hour)
			if !tt.is(err) || errors.Is(err, ErrNoAnswer) || ctx.Err() != nil {
				t.Errorf("Ping = %v, want the refusal, at once", err)
			}
		})
	}
}

// TestPingCancelled: ctx ends while Ping waits; it returns ctx's error.
func TestPingCancelled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	err := Ping(ctx, client(t, "redis://"+closedAddr(t)), time.Hour)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Ping = %v, want context.Canceled", err)
	}
}

// TestRouteLogs: a real go-redis client failing to dial hands its lines
// to RouteLogs's func, not to stderr: the same failure once per window
// however often it repeats, the next one with the count held back; none
// while a Ping waits. Not parallel: it takes the lines of the whole test
// binary.
func TestRouteLogs(t *testing.T) {
	var got handed
	RouteLogs(got.write)
	// The clock stands still: however long the dials take, they are
	// within one window. No other test runs meanwhile.
	frozen := time.Now()
	routed.rate.Now = func() time.Time { return frozen }
	t.Cleanup(func() {
		routed.rate.Now = nil
		RouteLogs(func(string, int) {})
	})

	addr := closedAddr(t)
	rc := client(t, "redis://"+addr)
	if err := Ping(context.Background(), rc, 300*time.Millisecond); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Ping = %v", err)
	}
	if lines := got.get(); len(lines) != 0 {
		t.Errorf("go-redis logged while Ping waited: %q", lines)
	}
	// A fresh client, whose pool dials again.
	rc = client(t, "redis://"+addr)
	for range 3 {
		if err := rc.Get(context.Background(), "k").Err(); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("GET = %v, want a refused connection", err)
		}
	}
	frozen = frozen.Add(time.Minute) // a window later, the same failure
	if err := rc.Get(context.Background(), "k").Err(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("GET = %v, want a refused connection", err)
	}
	lines := got.get()
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2: the failure, and a window later the failure with the count held back: %q", len(lines), lines)
	}
	for _, l := range lines {
		if !strings.Contains(l.msg, addr) || !strings.Contains(l.msg, "connection refused") || l.msg != lines[0].msg {
			t.Errorf("line %q: want the first line's message, a refused dial of %s", l.msg, addr)
		}
	}
	if lines[0].suppressed != 0 || lines[1].suppressed < 1 {
		t.Errorf("suppressed = %d then %d; want 0, then the repeats held back", lines[0].suppressed, lines[1].suppressed)
	}
}
