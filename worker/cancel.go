package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/internal/cancelmark"
	"github.com/bot-bottle/bottleq/tasks"
)

// How a user's cancel is told from a shutdown, and made final.
//
// asynq cancels a handler's context in three cases: a user asked for it
// (Inspector.CancelProcessing: the dashboard's cancel, `enqueue cancel`),
// the worker lost its lease on the task, or the server shuts down and gives
// up on the task. In the first two asynq hands the error to the server's
// ErrorHandler before it retries or archives the task: context.Canceled
// for a cancel, ErrLeaseExpired for a lost lease. On shutdown it puts the
// task back in its queue without calling it. So a handler whose context
// was cancelled waits for that report (not when the server is shutting
// down) and knows which it was.
//
// For a user's cancel the ErrorHandler sets the task's cancel mark and
// holds asynq back until the handler has deleted the VM and written the
// cancelled result, so whoever sees the task leave the active list sees
// it cancelled. asynq then archives the task if it had no retry left, or
// else retries it: the server's IsFailure does not count that retry and
// its RetryDelayFunc holds it back for cancelledRetryDelay, while the
// handler archives it. A delivery that finds the mark (its handler died
// before it archived the task) ends at once.
const (
	// cancelledRetryDelay holds a cancelled task in asynq's retry set
	// until the handler archives it.
	cancelledRetryDelay = time.Hour
	// verdictWait bounds the wait for asynq's report on a cancelled
	// context; it comes within milliseconds.
	verdictWait = 5 * time.Second
	// archiveWait bounds the wait for asynq to take the task off the
	// active list after a cancel.
	archiveWait = 30 * time.Second
)

// delivery is a task in flight here, as the ErrorHandler and the handler
// see it.
type delivery struct {
	// verdict gets the error asynq failed the delivery with.
	verdict chan error
	// settled is closed once the handler has written a user-cancelled
	// task's result, or knows the cancel was no user's.
	settled chan struct{}
	once    sync.Once
}

func (d *delivery) settle() { d.once.Do(func() { close(d.settled) }) }

// canceller ends tasks that users cancel. Serve sets one on its Handler; a
// Handler without one (a test calling Run) handles a cancel as before.
type canceller struct {
	rdb  redis.UniversalClient
	insp *asynq.Inspector
	log  zerolog.Logger
	// shuttingDown is set before the server's shutdown starts.
	shuttingDown atomic.Bool

	mu sync.Mutex
	// inFlight holds the deliveries running here, by task ID.
	inFlight map[string]*delivery
	// settleWait bounds how long asynq is held back while a cancelled
	// task's VM is torn down: the teardown's own bound, and a little.
	settleWait time.Duration
}

func newCanceller(r asynq.RedisConnOpt, h *Handler) (*canceller, error) {
	rdb, err := cancelmark.Client(r)
	if err != nil {
		return nil, err
	}
	return &canceller{
		rdb: rdb, insp: asynq.NewInspectorFromRedisClient(rdb), log: h.log,
		inFlight: map[string]*delivery{}, settleWait: h.cfg.TeardownTimeout + verdictWait + 10*time.Second,
	}, nil
}

func (c *canceller) close() error { return c.rdb.Close() }

// HandleError implements asynq.ErrorHandler: asynq calls it with the
// error of each failed delivery, before it retries or archives the task.
// For a cancel it sets the mark and waits until the handler has settled.
func (c *canceller) HandleError(ctx context.Context, _ *asynq.Task, err error) {
	id, _ := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	cancelled := errors.Is(err, context.Canceled)
	if cancelled {
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := cancelmark.Set(mctx, c.rdb, queue, id, cancelmark.ByAsynq); err != nil {
			c.log.Warn().Str("task_id", id).Err(err).Msg("cancel mark not set")
		}
		cancel()
	}
	c.mu.Lock()
	d := c.inFlight[id]
	c.mu.Unlock()
	if d == nil {
		return
	}
	select {
	case d.verdict <- err:
	default:
	}
	if !cancelled {
		return
	}
	timer := time.NewTimer(c.settleWait)
	defer timer.Stop()
	select {
	case <-d.settled:
	case <-timer.C:
		c.log.Warn().Str("task_id", id).Msg("a cancelled task's teardown is slow: asynq moves it on before its result is written")
	}
}

// retryDelay holds a cancelled task back; see cancelledRetryDelay.
func (c *canceller) retryDelay(next asynq.RetryDelayFunc) asynq.RetryDelayFunc {
	return func(n int, err error, t *asynq.Task) time.Duration {
		if errors.Is(err, context.Canceled) {
			return cancelledRetryDelay
		}
		return next(n, err, t)
	}
}

// isFailure does not count a cancel as a failed delivery, so it burns no
// retry.
func isFailure(err error) bool { return !errors.Is(err, context.Canceled) }

// process is ProcessTask with cancels handled: a task marked cancelled
// ends before it starts, and a task a user cancels while it runs ends for
// good once its VM is deleted.
func (c *canceller) process(ctx context.Context, h *Handler, m Meta, payload []byte, w io.Writer) error {
	h.wg.Add(1) // Serve waits until a cancelled task is archived, too
	defer h.wg.Done()
	by, err := cancelmark.Get(ctx, c.rdb, m.Queue, m.ID)
	if err != nil {
		c.log.Warn().Str("task_id", m.ID).Err(err).Msg("cancel mark not read; running the task")
	}
	if by != "" {
		return c.endUnstarted(h, m, by, w)
	}

	d := &delivery{verdict: make(chan error, 1), settled: make(chan struct{})}
	c.mu.Lock()
	c.inFlight[m.ID] = d
	c.mu.Unlock()
	defer func() {
		d.settle()
		c.mu.Lock()
		if c.inFlight[m.ID] == d {
			delete(c.inFlight, m.ID)
		}
		c.mu.Unlock()
	}()

	rec := &lastReport{w: w}
	err = h.Run(ctx, m, payload, rec)
	if err == nil || !errors.Is(ctx.Err(), context.Canceled) {
		return err // done, failed, or asynq's deadline
	}
	by, ok := c.byUser(ctx, m, d.verdict)
	h.cancelled(ctx, m, err, ok, rec.last)
	if !ok {
		return err // shutdown (asynq put it back) or a lost lease
	}
	c.finish(ctx, h, m, by, rec.last, d)
	return noRetry(fmt.Errorf("task cancelled by %s", by))
}

// byUser tells whether a user cancelled the task whose context ended, and
// who.
func (c *canceller) byUser(ctx context.Context, m Meta, verdict <-chan error) (string, bool) {
	var asynqErr error
	if c.shuttingDown.Load() {
		select { // a cancel during the shutdown's grace period is a user's
		case asynqErr = <-verdict:
		default:
		}
	} else {
		timer := time.NewTimer(verdictWait)
		defer timer.Stop()
		select {
		case asynqErr = <-verdict:
		case <-timer.C:
		}
	}
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	by, err := cancelmark.Get(mctx, c.rdb, m.Queue, m.ID)
	if err != nil {
		c.log.Warn().Str("task_id", m.ID).Err(err).Msg("cancel mark not read")
	}
	switch {
	case errors.Is(asynqErr, context.Canceled) && by == "":
		return "a user", true // the mark could not be set or read
	case errors.Is(asynqErr, context.Canceled), by != "":
		return by, true
	}
	return "", false
}

// finish ends a task a user cancelled while it ran, its VM deleted: it
// writes the cancelled result, lets asynq move the task on (settles d),
// and archives the task if asynq meant to retry it.
func (c *canceller) finish(ctx context.Context, h *Handler, m Meta, by string, last []byte, d *delivery) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), archiveWait)
	defer cancel()
	log := c.log.With().Str("task_id", m.ID).Logger()
	var res tasks.Result
	if len(last) == 0 || json.Unmarshal(last, &res) != nil {
		res = tasks.Result{Host: h.cfg.Host, Attempt: m.Retried + 1}
	}
	res.State, res.Error = tasks.StateCancelled, "cancelled by "+by
	b, err := json.Marshal(res)
	if err == nil {
		_, err = cancelmark.WriteResult(ctx, c.rdb, m.Queue, m.ID, b)
	}
	d.settle()
	if err != nil {
		log.Error().Err(err).Str("by", by).Msg("cancelled result not written")
	}
	state, err := c.awaitInactive(ctx, m)
	if err == nil && state != asynq.TaskStateArchived {
		err = c.insp.ArchiveTask(m.Queue, m.ID)
		if errors.Is(err, asynq.ErrTaskNotFound) {
			err = nil // deleted meanwhile: nothing left to end
		}
	}
	if err != nil {
		log.Error().Err(err).Str("by", by).Msg("task cancelled, but not archived: its next delivery ends it at once (cancel mark)")
		return
	}
	log.Info().Str("phase", res.Phase).Str("by", by).Msg("task cancelled by a user: VM deleted, archived without retry")
}

// awaitInactive waits until the task is no longer active and returns its
// state.
func (c *canceller) awaitInactive(ctx context.Context, m Meta) (asynq.TaskState, error) {
	for {
		info, err := c.insp.GetTaskInfo(m.Queue, m.ID)
		if err != nil {
			return 0, err
		}
		if info.State != asynq.TaskStateActive {
			return info.State, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("asynq still lists it as active: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// endUnstarted ends a delivery of a task that was cancelled before it
// started, without touching smolvm.
func (c *canceller) endUnstarted(h *Handler, m Meta, by string, w io.Writer) error {
	res := tasks.Result{
		State: tasks.StateCancelled, Host: h.cfg.Host, Attempt: m.Retried + 1,
		SmolvmVersion: h.cfg.Smolvm.Version().String(), Error: "cancelled by " + by + " before it ran",
	}
	if w != nil {
		if b, err := json.Marshal(res); err == nil {
			if _, err := w.Write(b); err != nil {
				c.log.Debug().Str("task_id", m.ID).Err(err).Msg("result not written")
			}
		}
	}
	c.log.Info().Str("task_id", m.ID).Str("by", by).Msg("task cancelled before it ran: archived without retry")
	h.outcome(OutcomeCancelled, "")
	return noRetry(fmt.Errorf("task cancelled by %s before it ran", by))
}

// lastReport passes reports on to w and keeps the last one, which asynq's
// ResultWriter refuses once the task's context is cancelled.
type lastReport struct {
	w    io.Writer
	last []byte
}

func (l *lastReport) Write(p []byte) (int, error) {
	l.last = append(l.last[:0], p...)
	if l.w == nil {
		return len(p), nil
	}
	return l.w.Write(p)
}
