// Command enqueue puts one agent:run task on bottleq's queue and, with
// --wait, follows it to the end and exits with the agent's exit code. Its
// verbs act on a task by ID: status prints it, wait follows it, cancel
// ends it for good.
//
//	enqueue [--redis URL] [--redis-ca FILE] [--redis-wait D] [--tenant T] (--image IMG | --from REF)
//	        [--env K=V]... [--allow-host HOST[:PORT]]... [--file LOCAL:GUEST]...
//	        [--artifact GUEST]... [--workdir DIR] [--cpus N] [--mem MiB]
//	        [--timeout DUR] [--no-commit] [--task-id ID] [--queue Q]
//	        [--max-retry N] [--replicas N] [--store URL] [--retention DUR]
//	        [--wait [--wait-timeout DUR] [--artifacts-dir DIR]] -- CMD [ARG...]
//	enqueue status [--queue Q] [--json] ID
//	enqueue wait   [--queue Q] [--wait-timeout DUR] [--store URL] [--artifacts-dir DIR] ID
//	enqueue cancel [--queue Q] [--wait-timeout DUR] ID
//	enqueue -version
//
// The verbs take --redis, --redis-ca and --redis-wait too. REDIS_URL,
// REDIS_CA_FILE, BOTTLEQ_TENANT and BOTTLEQ_STORE stand in for --redis,
// --redis-ca, --tenant and --store when those are not given; without
// either, --artifacts-dir downloads from the worker's default store,
// file://DATA/store, when it is on this machine (DATA is
// $BOTTLEQ_DATA_DIR or the worker's default data directory).
//
// Everything is validated before it connects to Redis. Exit codes: 0 done
// (status: the task exists; cancel: it is cancelled); with --wait and wait,
// the agent's exit code; 1 the task failed, was cancelled or is unknown, a
// wait gave up, a cancel was not confirmed in time, an artifact could not
// be downloaded, or Redis or the store failed; 2 a usage error. Each error
// is one line on stderr that never quotes an env value. See `enqueue -h`.
//
// It is a thin shell over the package enqueue: it must not run agents
// itself.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"
)

func main() {
	// go-redis logs its dial retries itself; the error it returns is
	// reported once, on one line.
	redis.SetLogger(quiet{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// quiet discards go-redis's own log lines.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}
