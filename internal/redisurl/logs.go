package redisurl

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/internal/lograte"
)

// router is go-redis's logger once RouteLogs has run: it hands each of
// go-redis's lines to the func last given to RouteLogs.
type router struct {
	write atomic.Pointer[func(msg string, suppressed int)]
	rate  lograte.Limiter
}

var (
	routed    router
	routeOnce sync.Once
	// pinging counts the Pings under way; while there are any the
	// router drops go-redis's lines.
	pinging atomic.Int32
)

// RouteLogs makes go-redis hand its own log lines (a dial that failed, a
// Sentinel failover seen) to write, instead of printing them as plain text
// on stderr, so that a command can log them as it logs the rest. A line
// repeated within [lograte.DefaultWindow] is handed on once; the next one
// handed on comes with suppressed, the number held back.
//
// go-redis's logger is one per process, and go-redis reads it without a
// lock: call RouteLogs from a command's start (not from a library), and
// the first time before any go-redis client exists. Later calls only
// change where the lines go; any call is safe alongside another.
func RouteLogs(write func(msg string, suppressed int)) {
	routed.write.Store(&write)
	routeOnce.Do(func() { redis.SetLogger(&routed) })
}

// Printf hands on one of go-redis's lines.
func (r *router) Printf(_ context.Context, format string, v ...any) {
	if pinging.Load() > 0 {
		return
	}
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	if write, held := r.rate.Allow(msg); write {
		(*r.write.Load())(msg, held)
	}
}
