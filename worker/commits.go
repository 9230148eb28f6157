package worker

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/bot-bottle/bottleq/smolvm"
)

// Commits finds the commit an earlier task left, for payloads with
// from "task:ID". Commits live in the data directory of the host that made
// them; this is the one seam to swap for shared storage.
type Commits interface {
	// Lookup returns the pack of taskID's commit on this host, or a
	// *CommitError saying why it cannot be used here.
	Lookup(ctx context.Context, taskID string) (smolvm.Pack, error)
}

// CommitError is a from "task:ID" that this host cannot serve. It is bad
// input for this host and is not retried.
type CommitError struct {
	// TaskID is the task whose commit was asked for, the ID in "task:ID".
	TaskID string
	// Host holds the commit, when it is known and is another host.
	Host string
	// Reason says what is wrong when Host is empty.
	Reason string
}

// Error names the task and either the host that holds its commit or why
// there is none here. It starts with "from: ", the payload field at fault.
func (e *CommitError) Error() string {
	if e.Host != "" {
		return fmt.Sprintf("from: the commit of task %s is on host %s, not on this one", e.TaskID, e.Host)
	}
	return fmt.Sprintf("from: task %s has no commit here: %s", e.TaskID, e.Reason)
}

// HostOfTask finds which host ran a task and whether it committed, from the
// task's result. The server wires it to asynq's Inspector.
type HostOfTask func(ctx context.Context, taskID string) (host string, committed bool, err error)

// localCommits is Commits for one host's data directory.
type localCommits struct {
	store  packStore
	host   string
	hostOf HostOfTask // may be nil
}

func (c localCommits) Lookup(ctx context.Context, taskID string) (smolvm.Pack, error) {
	p := c.store.pack(fileKey(taskID))
	if _, err := os.Stat(p.Machine); err == nil {
		return p, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return smolvm.Pack{}, err
	}
	if c.hostOf == nil {
		return smolvm.Pack{}, &CommitError{TaskID: taskID, Reason: "no such commit on this host"}
	}
	host, committed, err := c.hostOf(ctx, taskID)
	switch {
	case err != nil:
		return smolvm.Pack{}, &CommitError{TaskID: taskID, Reason: err.Error()}
	case !committed:
		return smolvm.Pack{}, &CommitError{TaskID: taskID, Reason: "it has not finished with a commit"}
	case host != c.host:
		return smolvm.Pack{}, &CommitError{TaskID: taskID, Host: host}
	}
	return smolvm.Pack{}, &CommitError{TaskID: taskID, Reason: "its commit is missing from this host's data directory"}
}
