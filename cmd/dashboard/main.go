// Command dashboard serves the asynq web UI (asynqmon) for bottleq's queues
// and Prometheus metrics at /metrics, on 127.0.0.1:8080 unless told
// otherwise, read-only unless -writable. It answers only to its own host
// names and takes writes only from its own pages. Every flag has an
// environment fallback; see -h.
//
// It only reads and manages the queues in Redis: it runs no tasks and
// never talks to smolvm.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/bot-bottle/bottleq/internal/cliflag"
)

func main() {
	// Process-wide, so set here and not by tests that call Run: the lines
	// libraries write on their own go to the dashboard's logger.
	routeLibraryLogs = cliflag.RouteLibraryLogs
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop() // before os.Exit, which runs no deferred call
	os.Exit(code)
}
