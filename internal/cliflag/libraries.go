package cliflag

import (
	"log"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/internal/lograte"
	"github.com/bot-bottle/bottleq/internal/redisurl"
)

// RouteLibraryLogs sends the lines that libraries log on their own to
// log, so that a command's log stays one format (JSON lines, unless it
// logs to a terminal): go-redis's, through [redisurl.RouteLogs] (which
// drops them while redisurl.Ping waits: its error says it all), and
// those of Go's log package, which asynq's queue metrics, asynqmon and an
// http.Server without an ErrorLog write to. Each is a warn line with
// "component" "redis" or "stdlog"; a line repeated within
// [lograte.DefaultWindow] is written once, and the next one written
// carries "suppressed", the number held back.
//
// Both loggers are one per process: a command's main hands this to its
// Run, which calls it once its logger exists and before it opens Redis.
// Tests that call Run in-process do not, and leave them alone. Later calls
// only change the logger the lines go to; any call is safe alongside
// another.
func RouteLibraryLogs(l zerolog.Logger) {
	redisurl.RouteLogs(func(msg string, suppressed int) {
		warn(&l, "redis", msg, suppressed)
	})
	stdLog.log.Store(&l)
	stdLogOnce.Do(func() {
		log.SetFlags(0) // the line's own time stamp is the logger's
		log.SetPrefix("")
		log.SetOutput(&stdLog)
	})
}

var (
	stdLog     stdLogWriter
	stdLogOnce sync.Once
)

// stdLogWriter is the output of Go's log package once RouteLibraryLogs
// has run: each Write is one line.
type stdLogWriter struct {
	log  atomic.Pointer[zerolog.Logger]
	rate lograte.Limiter
}

func (w *stdLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if write, held := w.rate.Allow(msg); write {
		warn(w.log.Load(), "stdlog", msg, held)
	}
	return len(p), nil
}

// warn writes a library's line msg as a warning of component, with the
// number of its repeats held back before it.
func warn(l *zerolog.Logger, component, msg string, suppressed int) {
	e := l.Warn().Str("component", component)
	if suppressed > 0 {
		e = e.Int("suppressed", suppressed)
	}
	e.Msg(msg)
}
