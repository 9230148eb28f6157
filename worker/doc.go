// Package worker runs agent:run tasks: it is the asynq handler that takes a
// task from pack to delete, and the server that feeds it from Redis.
//
// The pipeline of one task: decode and validate the payload (bad input is
// archived at once, without a smolvm call); find the image's pack in this
// host's cache or the pool's store, or pack it, once per pool, and share it
// there (or fetch the commit a from "task:ID" names); create a VM named
// after the task and attempt, with egress restricted to the configured
// proxy; start it and wait until exec works; run the command with the
// payload's env, workdir and timeout; store its artifacts; stop the VM,
// commit its state with pack --from-vm and store the commit; and delete the
// VM, always, under a context of its own so cancellation cannot skip it.
//
// Commits, artifacts and packs live in a [store.Store] (Config.Store) that
// every worker of a pool shares; what a host takes from it is cached under
// its data directory, within Config.CacheMaxBytes. [Serve] expires what is
// older than Config.Retention.
//
// A smolvm failure is returned as the [*smolvm.Error] it is, so asynq retries
// it with backoff; a command that runs and exits non-zero completes the task
// with its exit code in the result. The package never logs an env value.
package worker
