// Command egress-proxy runs bottleq's egress proxy standalone, with one
// static policy for one token. The worker normally embeds the proxy
// in-process instead; see package egress. Flags: see -h.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop() // before os.Exit, which runs no deferred call
	os.Exit(code)
}
