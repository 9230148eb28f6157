package redisurl

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/internal/lograte"
)

// router is go-redis's logger once RouteLogs has run: it writes each of
// go-redis's lines to the logger last given to RouteLogs.
type router struct {
	log  atomic.Pointer[zerolog.Logger]
	rate lograte.Limiter
}

var (
	routed    router
	routeOnce sync.Once
	// pinging counts the Pings under way; while there are any the
	// router drops go-redis's lines.
	pinging atomic.Int32
)

// RouteLogs makes go-redis write its own log lines (a dial that failed, a
// Sentinel failover seen) to log, at warn level with "component":"redis",
// instead of as plain text on stderr: a command's log stays JSON. A line
// repeated within [lograte.DefaultWindow] is written once; the next one
// written carries "suppressed": the number held back.
//
// go-redis's logger is one per process, and go-redis reads it without a
// lock: call RouteLogs from a command's start (not from a library), and
// the first time before any go-redis client exists. Later calls only
// change the logger the lines go to; any call is safe alongside another.
func RouteLogs(log zerolog.Logger) {
	routed.log.Store(&log)
	routeOnce.Do(func() { redis.SetLogger(&routed) })
}

// Printf writes one of go-redis's lines.
func (r *router) Printf(_ context.Context, format string, v ...any) {
	if pinging.Load() > 0 {
		return
	}
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	write, held := r.rate.Allow(msg)
	if !write {
		return
	}
	e := r.log.Load().Warn().Str("component", "redis")
	if held > 0 {
		e = e.Int("suppressed", held)
	}
	e.Msg(msg)
}
