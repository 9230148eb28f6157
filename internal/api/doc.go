// Package api is bottleq's HTTP front door: a small JSON API over the queue
// for upstream services in any language, served by cmd/api. It starts runs
// (agent:run tasks, through package enqueue), reads them, follows their
// progress as Server-Sent Events, cancels them and streams their artifacts,
// with tenants told apart by bearer token.
//
// A [Server] is stateless: everything it knows lives in Redis (asynq's
// tasks, plus a few keys of its own under "bottleq:api:" for idempotency
// keys and the per-tenant count of open runs), so any number of replicas
// may serve the same queues behind a load balancer. Only the request rate
// cap is counted per process.
//
// Tenants: a token's [Grant] names its tenant and the queues it may use.
// A run's tenant is the token's, whatever the body says (a body that names
// another is refused); a run of another tenant reads as missing (404),
// exactly like a run that does not exist.
//
// Events: one poller per run, shared by every client that follows it,
// reads the task at [Config.EventsPoll] and fans the changes out as phase
// events. The agent's output comes from the live output stream the worker
// writes (package internal/livelog), which each event stream reads with
// blocking XREADs on [Config.LiveRedis]: stdout and stderr events, in the
// order written, between the phases they came between. An event ID holds
// both places: "ATTEMPT-INDEX" for the INDEX-th phase of an attempt, then
// "/" and the stream ID of the last live output entry passed, so a client
// that reconnects with Last-Event-ID, to this replica or another, gets
// every phase it has not seen of the attempt the task is on and every
// chunk of output after the last it got.
//
// The package never logs a token, an env value or a request body; it
// never runs agents or talks to smolvm.
package api
