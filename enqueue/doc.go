// Package enqueue is the producer side of bottleq: a small client that
// upstream services use to put agent:run tasks on the queue and to wait for
// their results.
//
// A [Client] wraps an asynq client and inspector on the same Redis.
// [Client.Enqueue] builds the task with [tasks.NewAgentRun], so a producer
// gets bottleq's defaults (a timeout that covers the whole VM pipeline,
// retries of smolvm failures, a retention long enough to read the result)
// unless its [Options] say otherwise. [Client.Wait] polls the task until it
// is completed or archived, reports each new phase the worker writes, and
// returns an [Outcome]. [Client.Status] reads the same Outcome once, and
// [Client.Workers] counts the live workers that serve a queue.
//
// [Client.Follow] passes on a task's live output as its worker writes it:
// each attempt, each phase in order, the agent's stdout and stderr within
// moments, and how each attempt ended, as [Event]s. An event's ID is its
// Redis stream ID, and Follow resumes after one, so an HTTP server can
// relay the events as server-sent events and resume at a Last-Event-ID.
// The worker caps each task's live output and expires it a minute after
// the task completes.
//
// [Client.Cancel] ends a task for good: one waiting to run is archived at
// once, a running one is cancelled through asynq and its worker deletes
// the VM and archives it; either way it is not retried and its result
// says tasks.StateCancelled. Cancelling from asynq's own tools (the
// dashboard's cancel button) ends a task the same way. A worker's shutdown
// is no cancel: it puts running tasks back in their queue.
//
// Everything the worker needs to know about a run is in its
// [tasks.AgentRun]: the image or pack, the command, and whose run it is
// (Tenant) and how big its VM is (CPUs, MemMiB), set there like Image and
// Env. [Options] only say how asynq handles the task, and where its bulk
// goes: with Options.Store, the workers' object store, files over
// [DefaultInlineFileBytes] are uploaded there and the task carries a
// reference to each instead of its bytes, so that Redis holds a task's
// control state and the store its bulk. A worker with a store keeps its
// agent's whole output there too, the result keeping the output's tail
// and keys; [ReadOutput] reads a stored stream back.
//
// A command that exits non-zero still completes its task: Wait returns the
// Outcome with Result.ExitCode set and no error. A task the worker gave up
// on, or a user cancelled (archived), is a [*TaskFailedError]. Errors to
// match with errors.Is are [ErrDuplicate], [ErrNotFound], [ErrCancelled],
// [ErrFinished] and [ErrInvalidOptions]; an invalid payload is a
// [*tasks.ValidationError] and nothing is enqueued.
//
// [AttachFile] adds a local file to a payload's files, within the cap
// workers accept. [FetchArtifact] downloads an artifact the result lists
// from the workers' store (package store: the URL of the workers' -store,
// file:// on their host or s3:// from anywhere), checking its size and
// SHA-256; [ArtifactFileNames] names a result's artifacts safely for one
// directory. Importing store links the AWS SDK for Go v2 (its S3 client).
//
// The package must not run agents or talk to smolvm, and it never logs: env
// values in a payload are secrets and stay out of every error it returns.
package enqueue
