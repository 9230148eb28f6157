package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/bot-bottle/bottleq/smolvm"
)

// Commits finds the commit an earlier task left, for payloads with
// from "task:ID". Commits live in the data directory of the host that made
// them, per tenant; this is the one seam to swap for shared storage.
type Commits interface {
	// Lookup returns the pack of taskID's commit on this host when that
	// task ran for tenant, or a *CommitError saying why it cannot be used
	// here. A task of another tenant must read exactly as one that does
	// not exist.
	Lookup(ctx context.Context, tenant, taskID string) (smolvm.Pack, error)
}

// CommitError is a from "task:ID" that this host cannot serve. It is bad
// input for this host and is not retried.
type CommitError struct {
	// TaskID is the task whose commit was asked for, the ID in "task:ID".
	TaskID string
	// Tenant is the tenant that asked.
	Tenant string
	// Host holds the commit, when it is known and is another host.
	Host string
	// Reason says, in a sentence about the task, what became of its
	// commit, when Host is empty. Both are set only for a task of Tenant.
	Reason string
}

// Error names the task and the host that holds its commit, or what became
// of it; with neither, it says that the tenant has no such commit, the same
// words for a task that does not exist and one of another tenant. It starts
// with "from: ", the payload field at fault.
func (e *CommitError) Error() string {
	switch {
	case e.Host != "":
		return fmt.Sprintf("from: the commit of task %s is on host %s, not on this one", e.TaskID, e.Host)
	case e.Reason != "":
		return fmt.Sprintf("from: task %s %s", e.TaskID, e.Reason)
	}
	return fmt.Sprintf("from: tenant %s has no commit of task %s", e.Tenant, e.TaskID)
}

// EarlierTask is what the queue holds of the task a from "task:ID" names.
type EarlierTask struct {
	// Tenant is the tenant its payload names (tasks.AgentRun.TenantName).
	Tenant string
	// Host is the host that ran it, from its result; empty before one did.
	Host string
	// State is asynq's state of the task: "pending", "active", "retry",
	// "archived", "completed", …
	State string
	// Committed reports that it completed and its result names a commit.
	Committed bool
	// NoCommit reports that its payload says commit: false.
	NoCommit bool
}

// ErrNoSuchTask is what a HostOfTask returns for a task the queue does not
// hold, or holds as no agent:run task it can read.
var ErrNoSuchTask = errors.New("no such task")

// HostOfTask finds what the queue holds of a task: its tenant, the host
// that ran it and whether it committed. It returns ErrNoSuchTask (wrapped
// or not) for a task it does not know, and other errors for a queue it
// cannot read. The server wires it to asynq's Inspector.
type HostOfTask func(ctx context.Context, taskID string) (EarlierTask, error)

// commitOwner is the record beside each commit: whose it is. A commit is
// served only to a task of the tenant it names, asking for the task it
// names.
type commitOwner struct {
	TaskID  string `json:"task_id"`
	Tenant  string `json:"tenant"`
	Attempt int    `json:"attempt"`
	Host    string `json:"host"`
}

// ownerSuffix ends the name of a commit's owner record.
const ownerSuffix = ".owner.json"

// maxOwnerBytes bounds what is read of an owner record.
const maxOwnerBytes = 64 << 10

// commitStore lays commits out under DATA/commits, one directory per
// tenant: KEY and KEY.smolmachine (the pack), KEY.owner.json (its
// commitOwner).
type commitStore struct {
	dir string
}

// tenant is the pack store of one tenant's commits.
func (s commitStore) tenant(tenant string) packStore {
	return packStore{dir: filepath.Join(s.dir, tenant)}
}

// write commits a VM with pack, then records its owner beside it; both
// are written under temporary names, renamed into place and private.
func (s commitStore) write(ctx context.Context, o commitOwner, pack func(ctx context.Context, out string) (smolvm.Pack, error)) (smolvm.Pack, error) {
	store := s.tenant(o.Tenant)
	key := fileKey(o.TaskID)
	p, err := store.write(ctx, key, pack)
	if err != nil {
		return smolvm.Pack{}, err
	}
	b, err := json.Marshal(o)
	if err != nil {
		return smolvm.Pack{}, err
	}
	if err := writeAtomic(filepath.Join(store.dir, key+ownerSuffix), b); err != nil {
		return smolvm.Pack{}, fmt.Errorf("commit owner record: %w", err)
	}
	return p, nil
}

// find returns the commit of taskID for tenant when its pack exists and
// its owner record names that task and tenant; ok is false otherwise.
func (s commitStore) find(tenant, taskID string) (p smolvm.Pack, ok bool, err error) {
	store := s.tenant(tenant)
	key := fileKey(taskID)
	f, err := os.Open(filepath.Join(store.dir, key+ownerSuffix))
	if errors.Is(err, os.ErrNotExist) {
		return smolvm.Pack{}, false, nil
	}
	if err != nil {
		return smolvm.Pack{}, false, err
	}
	defer f.Close()
	var o commitOwner
	if err := json.NewDecoder(io.LimitReader(f, maxOwnerBytes)).Decode(&o); err != nil || o.TaskID != taskID || o.Tenant != tenant {
		return smolvm.Pack{}, false, nil
	}
	p = store.pack(key)
	if _, err := os.Stat(p.Machine); errors.Is(err, os.ErrNotExist) {
		return smolvm.Pack{}, false, nil
	} else if err != nil {
		return smolvm.Pack{}, false, err
	}
	return p, true, nil
}

// writeAtomic writes data to path through a private temporary file in its
// directory, renamed into place: path is 0600 and whole, or absent.
func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename, a no-op
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(privateFile)
	}
	if err == nil {
		err = f.Sync()
	}
	if err := errors.Join(err, f.Close()); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// localCommits is Commits for one host's data directory.
type localCommits struct {
	store  commitStore
	host   string
	hostOf HostOfTask // may be nil
}

func (c localCommits) Lookup(ctx context.Context, tenant, taskID string) (smolvm.Pack, error) {
	p, ok, err := c.store.find(tenant, taskID)
	if err != nil {
		return smolvm.Pack{}, fmt.Errorf("from: reading the commit of task %s: %w", taskID, err)
	}
	if ok {
		return p, nil
	}
	none := &CommitError{TaskID: taskID, Tenant: tenant}
	if c.hostOf == nil {
		return smolvm.Pack{}, none
	}
	t, err := c.hostOf(ctx, taskID)
	switch {
	case errors.Is(err, ErrNoSuchTask):
		return smolvm.Pack{}, none
	case err != nil:
		// The queue could not be read: worth a retry. The error is the
		// queue's, the same whoever's the task.
		return smolvm.Pack{}, fmt.Errorf("from: looking up task %s: %w", taskID, err)
	case t.Tenant != tenant:
		return smolvm.Pack{}, none
	}
	// The task is this tenant's: say what became of its commit.
	switch {
	case t.Committed && t.Host != c.host:
		return smolvm.Pack{}, &CommitError{TaskID: taskID, Tenant: tenant, Host: t.Host}
	case t.Committed:
		none.Reason = "committed on this host, but its commit is missing from the data directory"
	case t.NoCommit && t.State == "completed":
		none.Reason = "ran without a commit (its payload set commit: false)"
	case t.NoCommit:
		none.Reason = "runs without a commit (its payload sets commit: false)"
	case t.State == "completed":
		none.Reason = "finished without a commit"
	case t.State == "archived":
		none.Reason = "failed and left no commit"
	case t.State == "active":
		none.Reason = "is still running: it has no commit yet"
	case t.State == "retry":
		none.Reason = "failed and waits for a retry: it has no commit yet"
	default:
		none.Reason = "has not run yet (it is " + t.State + "): it has no commit yet"
	}
	return smolvm.Pack{}, none
}
