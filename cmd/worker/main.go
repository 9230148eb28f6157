// Command worker runs bottleq's agent:run tasks from Redis in smolvm
// microVMs. Every flag has an environment fallback; see -h.
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
	// go-redis and Go's log package write on their own go to the worker's
	// logger.
	routeLibraryLogs = cliflag.RouteLibraryLogs
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop() // before os.Exit, which runs no deferred call
	os.Exit(code)
}
