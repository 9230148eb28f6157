package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/internal/lograte"
	"github.com/bot-bottle/bottleq/tasks"
)

// ServerConfig configures [Serve]. Zero values have working defaults.
type ServerConfig struct {
	// Redis is where the queues are. Required.
	Redis asynq.RedisConnOpt
	// Concurrency is how many tasks, so VMs, run at once. Zero or negative:
	// DefaultConcurrency.
	Concurrency int
	// Queues maps queue names to priorities. Empty: {tasks.DefaultQueue: 1}.
	Queues map[string]int
	// StrictPriority empties higher-priority queues first. Default false:
	// weighted.
	StrictPriority bool
	// ShutdownTimeout is how long running tasks may finish after a
	// shutdown starts; asynq then puts the others back in their queue
	// without burning a retry, and their VMs are torn down before Serve
	// returns. Zero or negative: DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// PollInterval is how often an idle worker checks for new tasks
	// (asynq's TaskCheckInterval). Zero or negative: DefaultPollInterval.
	PollInterval time.Duration
	// RetryBase and RetryMax shape the backoff of a retried task: the n-th
	// retry waits RetryBase·2ⁿ, capped at RetryMax, with jitter. Zero or
	// negative: DefaultRetryBase and DefaultRetryMax.
	RetryBase, RetryMax time.Duration
	// LiveOutputBytes caps the live output of each task: the Redis stream
	// (bottleq:out:{QUEUE}:ID) its phases and its agent's output are
	// written to as they come, which `enqueue --wait` and enqueue's
	// Client.Follow read. Output past the cap, for all the task's attempts
	// together, is dropped and marked, and the stream expires with the
	// task. Zero: DefaultLiveOutputBytes; negative: no live output.
	LiveOutputBytes int64
	// Logger gets asynq's lines. Zero: no lines.
	Logger zerolog.Logger
}

// Serve processes agent:run tasks with h until ctx ends, then shuts down
// gracefully and waits for h's VMs to be torn down. Each task's phases and
// output go to its live output stream in Redis as they come (see
// ServerConfig.LiveOutputBytes). It runs h's retention sweep
// ([Handler.Retain]) at start and every DefaultRetainInterval.
//
// A task a user cancels while it runs (asynq's Inspector.CancelProcessing,
// which the dashboard's cancel calls, or enqueue's Cancel) ends for good:
// its VM is deleted, its result says cancelled, and it is archived without
// a retry. The shutdown's cancel is not a user's: the task goes back to its
// queue without burning a retry, as asynq does.
func Serve(ctx context.Context, h *Handler, cfg ServerConfig) error {
	c, err := newCanceller(cfg.Redis, h)
	if err != nil {
		return err
	}
	defer c.close()
	h.cancels = c
	switch {
	case cfg.LiveOutputBytes == 0:
		h.live = newLiveSink(c.rdb, c.insp, DefaultLiveOutputBytes)
	case cfg.LiveOutputBytes > 0:
		h.live = newLiveSink(c.rdb, c.insp, cfg.LiveOutputBytes)
	}
	srv := newServer(cfg, c)
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeAgentRun, h)
	if err := srv.Start(mux); err != nil {
		return err
	}
	retainCtx, stopRetain := context.WithCancel(ctx)
	retained := make(chan struct{})
	go func() { h.retainLoop(retainCtx, DefaultRetainInterval); close(retained) }()
	<-ctx.Done()
	c.shuttingDown.Store(true)
	srv.Shutdown()
	h.Wait()
	stopRetain()
	<-retained
	return nil
}

// newServer returns an asynq server configured from cfg that, with c,
// tells a user's cancel from a shutdown.
func newServer(cfg ServerConfig, c *canceller) *asynq.Server {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if len(cfg.Queues) == 0 {
		cfg.Queues = map[string]int{tasks.DefaultQueue: 1}
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	log := cfg.Logger.With().Str("component", "asynq").Logger()
	ac := asynq.Config{
		Concurrency:       cfg.Concurrency,
		Queues:            cfg.Queues,
		StrictPriority:    cfg.StrictPriority,
		ShutdownTimeout:   cfg.ShutdownTimeout,
		TaskCheckInterval: cfg.PollInterval,
		// Retries and scheduled tasks wait at least RetryBase anyway; checking
		// for them once a second halves an idle worker's Redis load
		// (BENCHMARKS.md, scenario 4).
		DelayedTaskCheckInterval: max(cfg.PollInterval, time.Second),
		RetryDelayFunc:           retryDelay(cfg.RetryBase, cfg.RetryMax),
		Logger:                   newAsynqLogger(log),
		LogLevel:                 asynqLevel(log.GetLevel()),
	}
	if c != nil {
		ac.ErrorHandler = c
		ac.IsFailure = isFailure
		ac.RetryDelayFunc = c.retryDelay(ac.RetryDelayFunc)
	}
	return asynq.NewServer(cfg.Redis, ac)
}

// retryDelay returns an asynq.RetryDelayFunc: exponential backoff from base,
// capped at maxDelay, with "equal jitter" (between half and all of it) so a
// burst of failures does not retry in lockstep. A base or maxDelay of zero
// or less is DefaultRetryBase or DefaultRetryMax.
func retryDelay(base, maxDelay time.Duration) asynq.RetryDelayFunc {
	if base <= 0 {
		base = DefaultRetryBase
	}
	if maxDelay <= 0 {
		maxDelay = DefaultRetryMax
	}
	return func(n int, _ error, _ *asynq.Task) time.Duration {
		d := maxDelay
		if n < 30 && base<<n < maxDelay && base<<n > 0 {
			d = base << n
		}
		return d/2 + rand.N(d/2+1)
	}
}

// InspectorHostOf returns a HostOfTask that reads a task, in whatever queue
// it is: its tenant from its payload, its host and commit from its result.
// A task in no queue, or one that is no readable agent:run task, is
// ErrNoSuchTask.
func InspectorHostOf(insp *asynq.Inspector) HostOfTask {
	return func(ctx context.Context, taskID string) (EarlierTask, error) {
		qs, err := insp.Queues()
		if err != nil {
			return EarlierTask{}, err
		}
		for _, q := range qs {
			info, err := insp.GetTaskInfo(q, taskID)
			if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
				continue
			}
			if err != nil {
				return EarlierTask{}, err
			}
			return earlierTask(info)
		}
		return EarlierTask{}, ErrNoSuchTask
	}
}

// earlierTask reads what a from "task:ID" needs of a task's info. What is
// wrong with the task itself reads as ErrNoSuchTask: a task of another
// tenant must not be told apart from a missing one by its error.
func earlierTask(info *asynq.TaskInfo) (EarlierTask, error) {
	if info.Type != tasks.TypeAgentRun {
		return EarlierTask{}, ErrNoSuchTask
	}
	p, err := tasks.Decode(info.Payload)
	if err != nil {
		return EarlierTask{}, ErrNoSuchTask
	}
	var res tasks.Result
	if len(info.Result) > 0 && json.Unmarshal(info.Result, &res) != nil {
		res = tasks.Result{} // a result it cannot read names no commit
	}
	done := info.State == asynq.TaskStateCompleted
	return EarlierTask{
		Tenant:    p.TenantName(),
		Host:      res.Host,
		State:     info.State.String(),
		Committed: done && (res.Commit != "" || res.CommitKey != ""),
		NoCommit:  !p.CommitEnabled(),
	}, nil
}

// asynqLogger adapts zerolog to asynq.Logger. While Redis is away asynq
// logs the same error several times a second from each of its loops: a
// warning or error repeated within rate's window is written once, and the
// next one written carries "suppressed", the number held back.
type asynqLogger struct {
	l    zerolog.Logger
	rate *lograte.Limiter
}

func newAsynqLogger(l zerolog.Logger) asynqLogger {
	return asynqLogger{l: l, rate: &lograte.Limiter{}}
}

func (a asynqLogger) Debug(args ...any) { a.l.Debug().Msg(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info().Msg(fmt.Sprint(args...)) }

// Warn logs asynq's warnings, but for its word on a task it archives (see
// archivedTaskID), which it logs at debug.
func (a asynqLogger) Warn(args ...any) {
	msg := fmt.Sprint(args...)
	if id, ok := archivedTaskID(msg); ok {
		a.l.Debug().Str("task_id", id).Msg("asynq archived the task")
		return
	}
	a.limited(a.l.Warn(), msg)
}
func (a asynqLogger) Error(args ...any) { a.limited(a.l.Error(), fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Fatal().Msg(fmt.Sprint(args...)) }

// asynqArchived is how asynq v0.26's processor starts the warning it logs
// when it archives a task, whether the handler asked for it (SkipRetry) or
// the task had no retry left: "Retry exhausted for task id=ID". The handler
// has already said why, in the user's terms (failedMsg), so the warning is
// logged at debug; were asynq to reword it, it would show as a warning
// again, and TestAsynqArchiveLogIsDebug would fail.
const asynqArchived = "Retry exhausted for task id="

// archivedTaskID returns the task ID of asynq's archive warning msg, and
// whether msg is one.
func archivedTaskID(msg string) (string, bool) {
	id, ok := strings.CutPrefix(msg, asynqArchived)
	return id, ok && id != "" && !strings.ContainsAny(id, " \n")
}

// limited writes e with msg unless rate holds it back.
func (a asynqLogger) limited(e *zerolog.Event, msg string) {
	if e == nil {
		return // below the level: neither written nor counted
	}
	write, held := a.rate.Allow(msg)
	if !write {
		e.Discard()
		return
	}
	if held > 0 {
		e = e.Int("suppressed", held)
	}
	e.Msg(msg)
}

func asynqLevel(l zerolog.Level) asynq.LogLevel {
	switch {
	case l <= zerolog.DebugLevel:
		return asynq.DebugLevel
	case l == zerolog.InfoLevel:
		return asynq.InfoLevel
	case l == zerolog.WarnLevel:
		return asynq.WarnLevel
	}
	return asynq.ErrorLevel
}
