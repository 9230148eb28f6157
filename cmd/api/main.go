// Command api serves bottleq's HTTP API for upstream services in any
// language: start runs, read them, follow their events, cancel them and
// download their artifacts, with tenants told apart by bearer token. It
// listens on 127.0.0.1:8090 unless told otherwise, with TLS when given a
// certificate and key. SIGHUP reloads the tokens file; SIGTERM shuts down
// gracefully, ending open event streams cleanly. Every flag has an
// environment fallback; see -h.
//
// It talks only to Redis and, for artifacts, the workers' store (-store),
// or the worker's data directory for results that name no store key: it
// runs no tasks and never talks to smolvm. Any number of
// replicas may serve the same Redis.
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
	// libraries write on their own go to the API's logger.
	routeLibraryLogs = cliflag.RouteLibraryLogs
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop() // before os.Exit, which runs no deferred call
	os.Exit(code)
}
