// Command worker runs bottleq's agent:run tasks from Redis in smolvm
// microVMs. Every flag has an environment fallback; see -h.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(Run(ctx, os.Args[1:], os.Getenv, os.Stderr))
}
