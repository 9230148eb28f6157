package enqueue

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/internal/cancelmark"
	"github.com/bot-bottle/bottleq/internal/redisurl"
	"github.com/bot-bottle/bottleq/internal/validate"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// Errors to match with errors.Is.
var (
	// ErrDuplicate: Options.TaskID names a task that still exists (pending,
	// running, or finished and within its retention). The error also
	// matches asynq.ErrTaskIDConflict.
	ErrDuplicate = errors.New("task ID already in use")
	// ErrNotFound: Wait found no such task, because the queue or ID is
	// wrong, or the task was deleted or its retention ran out. The error
	// also matches asynq.ErrTaskNotFound or asynq.ErrQueueNotFound.
	ErrNotFound = errors.New("task not found")
	// ErrInvalidOptions: an [Options] field asynq would misread, or a
	// queue name that is not valid (see [ValidateQueue]).
	ErrInvalidOptions = errors.New("invalid options")
	// ErrFinished: Cancel found the task already completed or archived
	// (and not cancelled): there is nothing left to cancel.
	ErrFinished = errors.New("task already finished")
	// ErrCancelled: Wait found the task cancelled by a user. The error is
	// a [*TaskFailedError] with Cancelled set.
	ErrCancelled = errors.New("task cancelled")
)

// NoRetry as Options.MaxRetry means the task is never retried.
const NoRetry = -1

// Client enqueues agent:run tasks, waits for their results, reads their
// status and cancels them. It is safe for concurrent use; Close it when
// done.
type Client struct {
	client    *asynq.Client
	inspector *asynq.Inspector
	// redis is the one connection pool client and inspector share; Close
	// closes it when the Client made it.
	redis      redis.UniversalClient
	ownsClient bool
	// minPoll and maxPoll bound Wait's polling interval.
	minPoll, maxPoll time.Duration
}

// Polling intervals of [Client.Wait]: it starts at firstPoll, so a short
// task is seen finishing quickly, and doubles up to longestPoll, so a long
// one costs Redis a few reads a second.
const (
	firstPoll   = 10 * time.Millisecond
	longestPoll = 250 * time.Millisecond
)

// New returns a client for the Redis r describes. It does not connect: the
// first Enqueue or Wait does.
func New(r asynq.RedisConnOpt) *Client {
	rc, ok := r.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		panic(fmt.Sprintf("enqueue.New: unsupported RedisConnOpt type %T", r))
	}
	c := NewFromRedisClient(rc)
	c.ownsClient = true
	return c
}

// NewFromRedisClient returns a client that enqueues and waits through rc,
// a go-redis client the caller already has (a Sentinel failover client,
// say). Close leaves rc open: the caller closes it after the Client.
func NewFromRedisClient(rc redis.UniversalClient) *Client {
	return &Client{
		client:    asynq.NewClientFromRedisClient(rc),
		inspector: asynq.NewInspectorFromRedisClient(rc),
		redis:     rc,
		minPoll:   firstPoll,
		maxPoll:   longestPoll,
	}
}

// NewFromURL returns a client for a Redis URL: one server,
// redis://[USER:PASSWORD@]HOST[:PORT][/DB] (rediss:// for TLS; the port
// defaults to 6379), or a master behind Redis Sentinel, in asynq's form
// redis-sentinel://[:PASSWORD@]S1:PORT[,S2:PORT...][/DB]?master=NAME (the
// password is the sentinels') or go-redis's
// redis://[USER:PASSWORD@]S1:PORT[/DB]?master_name=NAME[&addr=S2:PORT...][&password=MASTERPASSWORD]
// (rediss:// for TLS). Its errors never quote the URL, which may hold a
// password.
func NewFromURL(redisURL string) (*Client, error) {
	rc, err := redisurl.Open(redisURL, "")
	if err != nil {
		return nil, err
	}
	c := NewFromRedisClient(rc)
	c.ownsClient = true
	return c, nil
}

// ValidateQueue checks a queue name: 1 to 64 characters of A-Z a-z 0-9
// and _ . : -. Its error is a reason, without the field's name.
func ValidateQueue(name string) error { return validate.Queue(name) }

// Close closes the connections to Redis, unless they came from
// [NewFromRedisClient].
func (c *Client) Close() error {
	if !c.ownsClient {
		return nil
	}
	return c.redis.Close()
}

// Options adjusts one task. The zero value keeps the defaults of
// [tasks.NewAgentRun].
type Options struct {
	// Queue is the queue to put the task on: 1 to 64 characters of A-Z
	// a-z 0-9 and _ . : - (see [ValidateQueue]). Default
	// tasks.DefaultQueue.
	Queue string
	// MaxRetry is how often asynq retries a failed delivery. Zero keeps
	// tasks.DefaultMaxRetry; NoRetry (or any negative value) means none.
	MaxRetry int
	// Timeout is asynq's deadline for the whole task, VM pipeline
	// included. Zero keeps the command's timeout plus
	// tasks.PipelineOverhead. asynq counts whole seconds, so it must be at
	// least a second, and it must not be shorter than the command's own
	// timeout.
	Timeout time.Duration
	// TaskID makes the enqueue idempotent: while a task with this ID
	// exists (including its retention after it finished), enqueueing it
	// again fails with ErrDuplicate. Default: a random ID.
	TaskID string
	// Retention is how long the finished task and its result stay
	// readable by Wait. Zero keeps tasks.DefaultRetention, or with a
	// Store, DefaultStoreRetention; asynq counts whole seconds, so it must
	// be at least a second.
	Retention time.Duration
	// Store is the object store the workers share (their -store, opened
	// with store.Open). With it, Enqueue uploads each of the payload's
	// files bigger than InlineFileBytes to the store, create-only, under
	// tasks.InputKey(TENANT, RANDOM), and the task carries a
	// tasks.FileRef with the file's size and SHA-256 instead of its
	// content, which the worker downloads and checks; the caller's
	// payload is not changed. The task's retention then defaults to
	// DefaultStoreRetention. The store's retention (the workers'
	// -retention) must outlast the task's wait in its queue. Default: none,
	// and files travel inside the task, in Redis.
	Store store.Store
	// InlineFileBytes is the largest file that stays in the payload when
	// Store is set. Zero keeps DefaultInlineFileBytes; negative sends every
	// file with content to the store.
	InlineFileBytes int64
	// MaxFilesBytes caps the total content of the payload's files. Zero
	// keeps tasks.DefaultMaxFilesBytes, what a worker accepts unless its
	// -max-files-bytes says more; raise it only for such workers.
	MaxFilesBytes int64
	// Replicas, when positive, makes Enqueue return only once this many
	// Redis replicas hold the task (Redis's WAIT), so that a failover
	// cannot lose it: Redis replicates asynchronously, and a task only the
	// old master took is gone once a replica is promoted. Until they do,
	// Enqueue enqueues again under the same task ID (TaskID, or one it
	// picks), for up to a minute or until ctx ends. Behind Sentinel
	// set it to the number of replicas. Zero: return once the master has
	// the task.
	Replicas int
}

// replicasTimeout bounds how long Enqueue tries to get a task onto
// Options.Replicas replicas: a Sentinel failover takes seconds, and the
// new master has its replicas back some 10 s later.
const replicasTimeout = time.Minute

// replicaWait is how long one attempt waits for the replicas.
const replicaWait = time.Second

func (o Options) asynq(p tasks.AgentRun) ([]asynq.Option, error) {
	var opts []asynq.Option
	if o.Queue != "" {
		if err := validate.Queue(o.Queue); err != nil {
			return nil, fmt.Errorf("%w: Queue %w", ErrInvalidOptions, err)
		}
		opts = append(opts, asynq.Queue(o.Queue))
	}
	switch {
	case o.MaxRetry < 0:
		opts = append(opts, asynq.MaxRetry(0))
	case o.MaxRetry > 0:
		opts = append(opts, asynq.MaxRetry(o.MaxRetry))
	}
	switch {
	case o.Timeout == 0:
	case o.Timeout < time.Second:
		return nil, fmt.Errorf("%w: Timeout %s is shorter than a second", ErrInvalidOptions, o.Timeout)
	case o.Timeout < p.CommandTimeout():
		return nil, fmt.Errorf("%w: Timeout %s is shorter than the command's timeout %s", ErrInvalidOptions, o.Timeout, p.CommandTimeout())
	default:
		opts = append(opts, asynq.Timeout(o.Timeout))
	}
	if o.TaskID != "" {
		opts = append(opts, asynq.TaskID(o.TaskID))
	}
	if o.MaxFilesBytes < 0 {
		return nil, fmt.Errorf("%w: MaxFilesBytes must not be negative", ErrInvalidOptions)
	}
	if o.Replicas < 0 {
		return nil, fmt.Errorf("%w: Replicas must not be negative", ErrInvalidOptions)
	}
	switch {
	case o.Retention == 0 && o.Store != nil:
		opts = append(opts, asynq.Retention(DefaultStoreRetention))
	case o.Retention == 0:
	case o.Retention < time.Second:
		return nil, fmt.Errorf("%w: Retention %s is shorter than a second", ErrInvalidOptions, o.Retention)
	default:
		opts = append(opts, asynq.Retention(o.Retention))
	}
	return opts, nil
}

// Enqueue validates p and puts it on the queue. An invalid payload is a
// [*tasks.ValidationError] and an invalid option matches
// [ErrInvalidOptions]; neither enqueues anything. A TaskID in use matches
// [ErrDuplicate].
func (c *Client) Enqueue(ctx context.Context, p tasks.AgentRun, o Options) (*asynq.TaskInfo, error) {
	ownID := o.TaskID == ""
	if o.Replicas > 0 && ownID {
		// Enqueueing again must not make a second task.
		o.TaskID = newTaskID()
	}
	opts, err := o.asynq(p)
	if err != nil {
		return nil, err
	}
	task, err := tasks.NewAgentRunWithMaxFilesBytes(p, o.MaxFilesBytes, opts...)
	if err != nil {
		return nil, err
	}
	uploaded, err := o.uploadFiles(ctx, &p)
	if err != nil {
		return nil, err
	}
	if len(uploaded) > 0 {
		if task, err = tasks.NewAgentRunWithMaxFilesBytes(p, o.MaxFilesBytes, opts...); err != nil {
			o.forget(ctx, uploaded)
			return nil, err
		}
	}
	info, err := c.enqueue(ctx, task, o, ownID)
	if errors.Is(err, ErrDuplicate) {
		// No task will read them. After another failure the task may
		// have reached Redis all the same (a lost reply): its inputs stay,
		// for the store's retention to delete.
		o.forget(ctx, uploaded)
	}
	return info, err
}

// enqueue puts the built task on its queue.
func (c *Client) enqueue(ctx context.Context, task *asynq.Task, o Options, ownID bool) (*asynq.TaskInfo, error) {
	if o.TaskID != "" {
		// A cancel of an earlier task of this ID, since deleted, must not
		// end this one.
		queue := o.Queue
		if queue == "" {
			queue = tasks.DefaultQueue
		}
		if err := cancelmark.Clear(ctx, c.redis, queue, o.TaskID); err != nil {
			return nil, fmt.Errorf("enqueue: %w", err)
		}
	}
	if o.Replicas > 0 {
		return c.enqueueReplicated(ctx, task, o, ownID)
	}
	info, err := c.client.EnqueueContext(ctx, task)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return nil, fmt.Errorf("enqueue: task %q: %w (%w)", o.TaskID, ErrDuplicate, err)
	case err != nil:
		return nil, fmt.Errorf("enqueue: %w", err)
	}
	return info, nil
}

// enqueueReplicated enqueues task until o.Replicas replicas confirm it.
// After a failed attempt the task may be on the master or not: the next
// attempt either enqueues it or finds its ID taken, which then means it is
// there (and, confirmed, on the replicas too). On the first attempt a
// taken ID the caller chose is a duplicate.
func (c *Client) enqueueReplicated(ctx context.Context, task *asynq.Task, o Options, ownID bool) (*asynq.TaskInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, replicasTimeout)
	defer cancel()
	// A client per call: it also re-adds the queue to asynq's list of
	// queues, on whichever master is current.
	client := asynq.NewClientFromRedisClient(redisurl.Replicated(c.redis, o.Replicas, replicaWait))
	queue := o.Queue
	if queue == "" {
		queue = tasks.DefaultQueue
	}
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		info, err := client.EnqueueContext(ctx, task)
		switch {
		case err == nil:
			return info, nil
		case errors.Is(err, asynq.ErrTaskIDConflict) && attempt == 1 && !ownID:
			return nil, fmt.Errorf("enqueue: task %q: %w (%w)", o.TaskID, ErrDuplicate, err)
		case errors.Is(err, asynq.ErrTaskIDConflict):
			if info, err = c.inspector.GetTaskInfo(queue, o.TaskID); err == nil {
				return info, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("enqueue: task %q not confirmed by %d replicas: %w (last: %v)", o.TaskID, o.Replicas, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// newTaskID returns a random ID in asynq's own form, a UUID.
func newTaskID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
