package cliflag

import (
	"bufio"
	"context"
	"encoding/json"
	"log"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/internal/testredis"
)

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.WriteString(string(p))
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestRouteLibraryLogs: after RouteLibraryLogs, what Go's log package and
// a real go-redis client failing to dial would print as plain text comes
// out as JSON lines of the logger given, with their component; a line of
// Go's log repeated within the window is written once. Not parallel: it
// changes this test binary's log package and go-redis logger.
func TestRouteLibraryLogs(t *testing.T) {
	var buf syncBuffer
	RouteLibraryLogs(zerolog.New(&buf))
	frozen := time.Now()
	stdLog.rate.Now = func() time.Time { return frozen }
	t.Cleanup(func() {
		stdLog.rate.Now = nil
		RouteLibraryLogs(zerolog.New(os.Stderr))
	})

	for range 3 {
		log.Printf("Failed to collect metrics data: %s", "failed to get queue names")
	}
	frozen = frozen.Add(time.Minute)
	log.Print("Failed to collect metrics data: failed to get queue names")

	addr := testredis.RefusedAddr(t)
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	if err := rc.Ping(context.Background()).Err(); err == nil {
		t.Fatal("PING to a closed port succeeded")
	}

	type line struct {
		Level, Component, Message string
		Suppressed                int
	}
	var std, red []line
	sc := bufio.NewScanner(strings.NewReader(buf.String()))
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("not a JSON line: %q", sc.Text())
		}
		switch l.Component {
		case "stdlog":
			std = append(std, l)
		case "redis":
			red = append(red, l)
		default:
			t.Errorf("line of no known component: %+v", l)
		}
	}
	want := []line{
		{"warn", "stdlog", "Failed to collect metrics data: failed to get queue names", 0},
		{"warn", "stdlog", "Failed to collect metrics data: failed to get queue names", 2},
	}
	if len(std) != len(want) || std[0] != want[0] || std[1] != want[1] {
		t.Errorf("Go's log lines = %+v, want %+v", std, want)
	}
	if len(red) == 0 {
		t.Errorf("no go-redis line about the failed dial:\n%s", buf.String())
	}
	for _, l := range red {
		if l.Level != "warn" || !strings.Contains(l.Message, addr) {
			t.Errorf("go-redis line %+v: want a warning naming %s", l, addr)
		}
	}
}
