package enqueue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/internal/cancelmark"
	"github.com/bot-bottle/bottleq/internal/redisurl"
	"github.com/bot-bottle/bottleq/internal/validate"
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
	rdb       redis.UniversalClient // shared by client and inspector
	client    *asynq.Client
	inspector *asynq.Inspector
	// minPoll and maxPoll bound Wait's polling interval.
	minPoll, maxPoll time.Duration
}

// Polling intervals of [Client.Wait]: it starts at MinPoll, so a short task
// is seen finishing quickly, and doubles up to MaxPoll, so a long one costs
// Redis a few reads a second.
const (
	MinPoll = 10 * time.Millisecond
	MaxPoll = 250 * time.Millisecond
)

// New returns a client for the Redis r describes. It does not connect:
// the first call that needs Redis does. Like asynq.NewClient, it panics
// when r makes no go-redis v9 client, which asynq's own RedisConnOpts all
// do.
func New(r asynq.RedisConnOpt) *Client {
	rdb, err := cancelmark.Client(r)
	if err != nil {
		panic("enqueue.New: " + err.Error())
	}
	return &Client{
		rdb:       rdb,
		client:    asynq.NewClientFromRedisClient(rdb),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		minPoll:   MinPoll,
		maxPoll:   MaxPoll,
	}
}

// NewFromURL returns a client for a redis:// or rediss:// (TLS) URL; see
// [ParseURL].
func NewFromURL(redisURL string) (*Client, error) {
	r, err := ParseURL(redisURL)
	if err != nil {
		return nil, err
	}
	return New(r), nil
}

// ParseURL reads redis://[user:password@]host[:port][/db], or rediss://
// for TLS; the port defaults to 6379. Its errors never quote the URL, which may hold a password.
func ParseURL(redisURL string) (asynq.RedisConnOpt, error) {
	opt, err := redisurl.Parse(redisURL)
	if err != nil {
		return nil, err
	}
	return opt, nil
}

// Close closes the connections to Redis.
func (c *Client) Close() error { return c.rdb.Close() }

// ValidateQueue checks a queue name: 1 to 64 characters of A-Z a-z 0-9
// and _ . : -. Its error is a reason, without the field's name.
func ValidateQueue(name string) error { return validate.Queue(name) }

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
	// readable by Wait. Zero keeps tasks.DefaultRetention; asynq counts
	// whole seconds, so it must be at least a second.
	Retention time.Duration
	// MaxFilesBytes caps the total content of the payload's files. Zero
	// keeps tasks.DefaultMaxFilesBytes, what a worker accepts unless its
	// -max-files-bytes says more; raise it only for such workers.
	MaxFilesBytes int64
}

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
	switch {
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
	opts, err := o.asynq(p)
	if err != nil {
		return nil, err
	}
	task, err := tasks.NewAgentRunWithMaxFilesBytes(p, o.MaxFilesBytes, opts...)
	if err != nil {
		return nil, err
	}
	if o.TaskID != "" {
		// A cancel of an earlier task of this ID, since deleted, must not
		// end this one.
		queue := o.Queue
		if queue == "" {
			queue = tasks.DefaultQueue
		}
		if err := cancelmark.Clear(ctx, c.rdb, queue, o.TaskID); err != nil {
			return nil, fmt.Errorf("enqueue: %w", err)
		}
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
