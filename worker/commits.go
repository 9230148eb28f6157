package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/store"
)

// CommitError is a from "task:ID" that names no commit the task's tenant
// may use. It is bad input and is not retried.
type CommitError struct {
	// TaskID is the task whose commit was asked for, the ID in "task:ID".
	TaskID string
	// Tenant is the tenant that asked.
	Tenant string
	// Reason says, in a sentence about the task, what became of its
	// commit. It is set only for a task of Tenant.
	Reason string
}

// Error says what became of the task's commit; without a Reason, that the
// tenant has no such commit, the same words for a task that does not exist
// and one of another tenant. It starts with "from: ", the payload field at
// fault.
func (e *CommitError) Error() string {
	if e.Reason != "" {
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

// commitOwner is the record beside each commit in the store: whose it is.
// A commit is served only to a task of the tenant it names, asking for the
// task it names.
type commitOwner struct {
	TaskID  string `json:"task_id"`
	Tenant  string `json:"tenant"`
	Attempt int    `json:"attempt"`
	Host    string `json:"host"`
}

// ownerSuffix ends the key of a commit's owner record.
const ownerSuffix = ".owner.json"

// maxOwnerBytes bounds what is read of an owner record.
const maxOwnerBytes = 64 << 10

// commitKey is the store key of a task's commit: commits/TENANT/KEY.smolmachine,
// KEY being the task's fileKey. Its owner record is ownerKey.
func commitKey(tenant, taskID string) string {
	return "commits/" + tenant + "/" + fileKey(taskID) + ".smolmachine"
}

// ownerKey is the store key of a task's commit owner record:
// commits/TENANT/KEY.owner.json.
func ownerKey(tenant, taskID string) string {
	return "commits/" + tenant + "/" + fileKey(taskID) + ownerSuffix
}

// commits keeps tasks' commits in the store, where every host of the pool
// finds them, and a copy in this host's cache (under the same path as the
// key). Both objects are create-only: a duplicate delivery of a task that
// finds its commit taken keeps the one stored.
type commits struct {
	cache  *cache
	hostOf HostOfTask // may be nil
}

// committed is a commit in the store.
type committed struct {
	// Path is this host's copy, in the cache.
	Path string
	// Key is its store key.
	Key string
	// Stored is when the store took it, the start of its retention.
	Stored time.Time
}

// write commits a VM with pack (smolvm writes the pack it is given, in the
// cache's temporary directory), uploads it create-only, then its owner
// record, and keeps it in the cache. When a duplicate delivery of the task
// stored a commit first, that one stands and this VM's is dropped.
func (s *commits) write(ctx context.Context, o commitOwner, pack func(ctx context.Context, out string) (smolvm.Pack, error)) (committed, error) {
	key := commitKey(o.Tenant, o.TaskID)
	out, err := s.cache.tempPath("commit")
	if err != nil {
		return committed{}, err
	}
	p, err := pack(ctx, out)
	os.Remove(out) // the stub: a VM is created from the .smolmachine alone
	if err != nil {
		os.Remove(out + ".smolmachine")
		return committed{}, smolvmDiskErr("commit", filepath.Dir(out), err)
	}
	obj, err := s.cache.put(ctx, key, p.Machine, "")
	if errors.Is(err, store.ErrExists) {
		os.Remove(p.Machine)
		return s.taken(ctx, o)
	}
	if err != nil {
		os.Remove(p.Machine)
		return committed{}, fmt.Errorf("commit: storing it: %w", err)
	}
	if err := s.claim(ctx, o); err != nil {
		os.Remove(p.Machine)
		return committed{}, err
	}
	if err := s.cache.adopt(ctx, p.Machine, key); err != nil {
		os.Remove(p.Machine)
		return committed{}, err
	}
	return committed{Path: s.cache.path(key), Key: key, Stored: obj.Modified}, nil
}

// taken handles a commit key found taken: a delivery of the same task
// stored its commit first (and may have died before its owner record).
// That commit is the task's; this host fetches it into its cache.
func (s *commits) taken(ctx context.Context, o commitOwner) (committed, error) {
	key := commitKey(o.Tenant, o.TaskID)
	if err := s.claim(ctx, o); err != nil {
		return committed{}, err
	}
	obj, err := s.cache.st.Stat(ctx, key)
	if err != nil {
		return committed{}, fmt.Errorf("commit: %w", err)
	}
	l, _, err := s.cache.fetch(ctx, key, key)
	if err != nil {
		return committed{}, fmt.Errorf("commit: fetching the one stored first: %w", err)
	}
	l.Release()
	return committed{Path: l.Path, Key: key, Stored: obj.Modified}, nil
}

// claim stores o's owner record, create-only. A record already there for
// the same task and tenant is a duplicate delivery's, and will do.
func (s *commits) claim(ctx context.Context, o commitOwner) error {
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	key := ownerKey(o.Tenant, o.TaskID)
	_, err = s.cache.st.Put(ctx, key, bytes.NewReader(b), store.PutOptions{})
	if !errors.Is(err, store.ErrExists) {
		if err != nil {
			return fmt.Errorf("commit owner record: %w", err)
		}
		return nil
	}
	_, ok, err := s.owner(ctx, o.Tenant, o.TaskID)
	switch {
	case err != nil:
		return fmt.Errorf("commit owner record: %w", err)
	case !ok:
		return fmt.Errorf("commit owner record: %s holds a record of another task", key)
	}
	return nil
}

// owner reads the owner record of taskID's commit for tenant; ok is false
// when there is none, or it names another task or tenant, or cannot be
// read as one.
func (s *commits) owner(ctx context.Context, tenant, taskID string) (o commitOwner, ok bool, err error) {
	rc, _, err := s.cache.st.Get(ctx, ownerKey(tenant, taskID))
	if errors.Is(err, store.ErrNotFound) {
		return o, false, nil
	}
	if err != nil {
		return o, false, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxOwnerBytes))
	if err != nil {
		return o, false, err
	}
	if json.Unmarshal(b, &o) != nil || o.TaskID != taskID || o.Tenant != tenant {
		return commitOwner{}, false, nil
	}
	return o, true, nil
}

// Lookup leases this host's copy of taskID's commit when that task ran for
// tenant, fetching it from the store first when needed. Otherwise it is a
// *CommitError saying why it cannot be used: a task of another tenant reads
// exactly as one that does not exist. A store or queue it cannot read is
// another error, retried.
func (s *commits) Lookup(ctx context.Context, tenant, taskID string) (*lease, error) {
	_, ok, err := s.owner(ctx, tenant, taskID)
	if err != nil {
		return nil, fmt.Errorf("from: reading the commit of task %s: %w", taskID, err)
	}
	if ok {
		key := commitKey(tenant, taskID)
		l, _, err := s.cache.fetch(ctx, key, key)
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("from: fetching the commit of task %s: %w", taskID, err)
		}
		// The record outlived its commit by moments: both expire.
	}
	none := &CommitError{TaskID: taskID, Tenant: tenant}
	if s.hostOf == nil {
		return nil, none
	}
	t, err := s.hostOf(ctx, taskID)
	switch {
	case errors.Is(err, ErrNoSuchTask):
		return nil, none
	case err != nil:
		// The queue could not be read: worth a retry. The error is the
		// queue's, the same whoever's the task.
		return nil, fmt.Errorf("from: looking up task %s: %w", taskID, err)
	case t.Tenant != tenant:
		return nil, none
	}
	// The task is this tenant's: say what became of its commit.
	switch {
	case t.Committed:
		none.Reason = "committed, but its commit is no longer in the store (its retention ended, or it was deleted)"
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
	return nil, none
}
