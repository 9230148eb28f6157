// Package smolvm drives the smolvm command-line tool, which runs OCI images
// as microVMs.
//
// The package is a thin, faithful wrapper: each smolvm subcommand is one
// method on [Client], its argv is built by a pure function, and exactly one
// unexported function starts processes. That function puts smolvm in its own
// process group, sends SIGTERM to the group when the caller's context ends and
// SIGKILL after a grace period, and keeps only a bounded head and tail of what
// smolvm prints.
//
// smolvm changed its argv across releases. Versions up to 1.0.1 take
// positional machine names for create and delete; from 1.0.2 every name is a
// --name flag. [New] runs `smolvm --version` once and the client speaks the
// matching [Dialect]. docs/smolvm.md is the contract this package relies on:
// the argv it sends, smolvm's exit codes and messages, per release.
//
// Every failure of smolvm itself is an [*Error] carrying the operation, the
// exit code and smolvm's own message. Callers match it with errors.As, and
// its cause with errors.Is against the sentinels of this package
// ([ErrNotFound], [ErrNotRunning], [ErrExists], [ErrUsage], [ErrNotReady],
// [ErrNoSuchFile], [ErrNoSpace], [ErrNotInstalled]). Input that smolvm would misread is refused before any
// process starts with an error matching [ErrInvalid].
//
// The package must not decide policy: it does not retry, does not log env
// values, and knows nothing about queues or tasks.
package smolvm
