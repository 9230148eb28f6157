// Package worker runs agent:run tasks: it is the asynq handler that takes a
// task from pack to delete, and the server that feeds it from Redis.
//
// The pipeline of one task: decode and validate the payload (bad input is
// archived at once, without a smolvm call); pack the image once per host or
// reuse the pack; create a VM named after the task and attempt, with egress
// restricted to the configured proxy; start it and wait until exec works;
// run the command with the payload's env, workdir and timeout; stop the VM
// and commit its state with pack --from-vm; and delete the VM, always, under
// a context of its own so cancellation cannot skip it.
//
// A smolvm failure is returned as the [*smolvm.Error] it is, so asynq retries
// it with backoff; a command that runs and exits non-zero completes the task
// with its exit code in the result. The package never logs an env value.
package worker
