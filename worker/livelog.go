package worker

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/internal/livelog"
	"github.com/bot-bottle/bottleq/tasks"
)

// Live output: while a task runs, its worker appends its phases and its
// agent's output to a Redis stream of the task's (see internal/livelog),
// which `enqueue --wait` and enqueue's Client.Follow read as it grows.
//
// The agent never waits for Redis: its output is batched in memory (a
// chunk of liveChunk bytes, or whatever came within liveInterval) and a
// goroutine of the attempt's writes the batches. Output that comes while
// the attempt's backlog is full (liveBacklogFor) is dropped and counted, and
// the stream says where with a truncated entry; so is output past the
// task's cap.
const (
	// DefaultLiveOutputBytes is ServerConfig.LiveOutputBytes's default.
	DefaultLiveOutputBytes = 1 << 20
	// liveChunk is the most output one entry holds, and the batch that
	// is written at once.
	liveChunk = 4 << 10
	// liveInterval is how long output waits for more before it is
	// written.
	liveInterval = 100 * time.Millisecond
	// liveBacklogMax is how much output of one attempt may wait to be
	// written, more being dropped, while the worker streams few attempts;
	// liveBacklogTotal is shared by all it streams at once, down to
	// liveBacklogMin each (see liveBacklogFor).
	liveBacklogMax   = 256 << 10
	liveBacklogMin   = 64 << 10
	liveBacklogTotal = 3 << 20
	// liveControlEntries is room in the stream, besides its cap in bytes,
	// for the entries that say what happened (attempts, phases, ends).
	liveControlEntries = 1024
	// liveSendTimeout bounds one write to Redis.
	liveSendTimeout = 5 * time.Second
	// liveCloseWait bounds how long the end of an attempt waits for its
	// output to be written.
	liveCloseWait = 5 * time.Second
	// liveMinTTL is the least a stream is kept, even for a task asynq
	// deletes at once (no retention), so its followers can read its end.
	liveMinTTL = time.Minute
	// liveNoDeadline is how long past its retention a stream is kept
	// while an attempt without a deadline runs.
	liveNoDeadline = time.Hour
	// liveAfterEnd is how long a completed task's stream is kept once its
	// final result is written, for followers still reading its last
	// entries. Later ones read the result, which keeps the output's head
	// and tail, or its tail and the keys of the whole streams in the
	// store: the stream does not cost Redis for the task's retention.
	liveAfterEnd = time.Minute
)

// liveBacklogFor is each attempt's backlog while n attempts stream at
// once: a burst of a few loud agents keeps up to liveBacklogMax, and fifty
// of them hold no more than fifty times liveBacklogMin.
func liveBacklogFor(n int64) int {
	return int(min(liveBacklogMax, max(liveBacklogMin, liveBacklogTotal/max(n, 1))))
}

// liveLimits are the limits of a stream of maxBytes.
func liveLimits(maxBytes int64) livelog.Limits {
	return livelog.Limits{MaxBytes: maxBytes, MaxEntries: maxBytes/livelog.EntryOverhead + liveControlEntries}
}

// liveSink writes the live output of this worker's tasks to Redis.
type liveSink struct {
	rdb    redis.UniversalClient
	limits livelog.Limits
	// retention returns how long asynq keeps the task once it is done.
	retention func(ctx context.Context, queue, id string) (time.Duration, error)
	now       func() time.Time
	// closeWait is liveCloseWait, shorter in tests.
	closeWait time.Duration
	// streaming counts the attempts whose output is being written.
	streaming atomic.Int64
}

func newLiveSink(rdb redis.UniversalClient, insp *asynq.Inspector, maxBytes int64) *liveSink {
	return &liveSink{
		rdb:    rdb,
		limits: liveLimits(maxBytes),
		retention: func(_ context.Context, queue, id string) (time.Duration, error) {
			info, err := insp.GetTaskInfo(queue, id)
			if err != nil {
				return 0, err
			}
			return info.Retention, nil
		},
		now:       time.Now,
		closeWait: liveCloseWait,
	}
}

// open starts the live output of one delivery with its attempt entry. A
// nil sink opens nothing: a nil *liveLog does nothing either.
func (s *liveSink) open(ctx context.Context, m Meta, res tasks.Result, log zerolog.Logger) *liveLog {
	if s == nil {
		return nil
	}
	l := &liveLog{
		sink: s, queue: m.Queue, id: m.ID, attempt: res.Attempt, log: log,
		b:    batcher{attempt: res.Attempt, chunk: liveChunk, interval: liveInterval, backlog: liveBacklogMax},
		kick: make(chan struct{}, 1), done: make(chan struct{}),
	}
	if l.queue == "" {
		l.queue = tasks.DefaultQueue
	}
	l.deadline, _ = ctx.Deadline()
	l.ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.b.control(livelog.Entry{Kind: livelog.KindAttempt, Attempt: l.attempt, Host: res.Host})
	s.streaming.Add(1)
	go l.loop()
	return l
}

// liveLog is one delivery's live output. Its methods may be called on nil.
type liveLog struct {
	sink      *liveSink
	queue, id string
	attempt   int
	deadline  time.Time // the task's; zero: none
	log       zerolog.Logger
	ctx       context.Context
	cancel    context.CancelFunc

	mu     sync.Mutex
	b      batcher
	closed bool
	kick   chan struct{}
	done   chan struct{}
}

// phase adds a phase entry.
func (l *liveLog) phase(name string) {
	if l == nil {
		return
	}
	l.add(livelog.Entry{Kind: livelog.KindPhase, Attempt: l.attempt, Phase: name})
}

func (l *liveLog) add(e livelog.Entry) {
	l.mu.Lock()
	if !l.closed {
		l.b.control(e)
	}
	l.mu.Unlock()
	l.poke()
}

func (l *liveLog) poke() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// stdout and stderr are writers for smolvm.ExecOptions; nil for a nil
// liveLog.
func (l *liveLog) stdout() io.Writer { return l.writer(0) }
func (l *liveLog) stderr() io.Writer { return l.writer(1) }

func (l *liveLog) writer(stream int) io.Writer {
	if l == nil {
		return nil
	}
	return liveWriter{l: l, stream: stream}
}

// liveWriter is one output stream of a delivery. Write never blocks on
// Redis and never fails.
type liveWriter struct {
	l      *liveLog
	stream int
}

func (w liveWriter) Write(p []byte) (int, error) {
	l := w.l
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return len(p), nil
	}
	l.b.backlog = liveBacklogFor(l.sink.streaming.Load())
	wake := l.b.output(l.sink.now(), w.stream, p)
	l.mu.Unlock()
	if wake {
		l.poke()
	}
	return len(p), nil
}

// close ends the delivery's live output with its end entry, from res and
// the delivery's error, and waits up to liveCloseWait for what is left to
// be written.
func (l *liveLog) close(ctx context.Context, res tasks.Result, err error) {
	if l == nil {
		return
	}
	e := livelog.Entry{Kind: livelog.KindEnd, Attempt: l.attempt, Phase: res.Phase, Outcome: livelog.OutcomeDone,
		ExitCode: res.ExitCode, TimedOut: res.TimedOut}
	switch {
	case err != nil && ctx.Err() != nil:
		e.Outcome, e.Error, e.ExitCode, e.TimedOut = livelog.OutcomeStopped, err.Error(), 0, false
	case err != nil:
		e.Outcome, e.Error, e.ExitCode, e.TimedOut = livelog.OutcomeFailed, err.Error(), 0, false
	}
	l.mu.Lock()
	l.b.control(e) // take counts what was dropped before it
	l.closed = true
	l.mu.Unlock()
	l.poke()
	timer := time.NewTimer(l.sink.closeWait)
	defer timer.Stop()
	select {
	case <-l.done:
	case <-timer.C:
		l.log.Warn().Msg("live output: Redis did not take the end of this attempt's output in time; it is dropped")
	}
	l.cancel()
	<-l.done
	l.mu.Lock()
	dropped := l.b.dropped
	l.mu.Unlock()
	if dropped[0]+dropped[1] > 0 {
		l.log.Info().Int64("stdout_dropped_bytes", dropped[0]).Int64("stderr_dropped_bytes", dropped[1]).
			Msg("live output: some of the agent's output was not streamed (the task's cap, or Redis fell behind)")
	}
}

// linger shortens the stream's TTL to liveAfterEnd: call it once the
// task's final result is written and the delivery's output closed. A
// failure costs only Redis memory until the stream's old TTL, and is
// logged.
func (l *liveLog) linger(ctx context.Context) {
	if l == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), liveSendTimeout)
	defer cancel()
	if err := livelog.Expire(ctx, l.sink.rdb, l.queue, l.id, liveAfterEnd); err != nil {
		l.log.Warn().Err(err).Msg("live output: could not shorten the finished task's stream; it expires with the task")
	}
}

// loop writes batches to Redis as they fall due, until the delivery's
// output is closed and written, or its context ends.
func (l *liveLog) loop() {
	defer close(l.done)
	defer l.sink.streaming.Add(-1)
	defer func() { // what is left was not streamed
		l.mu.Lock()
		for _, e := range l.b.take() {
			if e.Kind == livelog.KindOutput {
				l.b.dropped[streamOf(e)] += int64(len(e.Data))
			}
		}
		l.mu.Unlock()
	}()
	retention, err := l.sink.retention(l.ctx, l.queue, l.id)
	if err != nil {
		retention = tasks.DefaultRetention
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	backoff, warned := liveInterval, false
	for {
		l.mu.Lock()
		now := l.sink.now()
		send, wait := l.b.due(now)
		closing := l.closed
		var batch []livelog.Entry
		if send || (closing && len(l.b.items) > 0) {
			batch = l.b.take()
		}
		l.mu.Unlock()

		if batch != nil {
			ttl := max(retention, liveMinTTL)
			if !closing {
				ttl = retention + liveNoDeadline
				if !l.deadline.IsZero() {
					ttl = retention + max(l.deadline.Sub(now), 0) + liveMinTTL
				}
			}
			ctx, cancel := context.WithTimeout(l.ctx, liveSendTimeout)
			ids, err := livelog.Append(ctx, l.sink.rdb, l.queue, l.id, l.sink.limits, ttl, batch)
			cancel()
			l.mu.Lock()
			l.b.sent(batch, ids, err)
			l.mu.Unlock()
			if err == nil {
				backoff = liveInterval
				continue
			}
			if !warned && !errors.Is(err, context.Canceled) {
				warned = true
				l.log.Warn().Err(err).Msg("live output: Redis write failed; output is dropped until it works again")
			}
			select { // Redis failed: give it a moment
			case <-l.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		if closing || l.ctx.Err() != nil {
			return
		}
		var fire <-chan time.Time
		if wait > 0 {
			timer.Reset(wait)
			fire = timer.C
		}
		select {
		case <-l.kick:
		case <-fire:
		case <-l.ctx.Done():
			return
		}
		timer.Stop()
	}
}

// batcher holds a delivery's entries until they are written: output
// merged into chunks, in order with the other entries. It reads no clock
// and starts nothing; the liveLog's lock guards it.
type batcher struct {
	// attempt goes into the entries the batcher makes.
	attempt  int
	chunk    int
	interval time.Duration
	backlog  int

	// items wait to be written, in order.
	items []livelog.Entry
	// pending counts the output bytes in items, and oldest says when the
	// oldest of them came (zero: none).
	pending int
	oldest  time.Time
	// urgent: items hold an entry that is not output, written at once.
	urgent bool
	// gap is 1 + the index in items of the truncated entry that output
	// dropped now is added to; 0 when output was taken since.
	gap int
	// capped: the stream reached its cap, and output is only counted.
	capped bool
	// dropped counts the output not streamed, stdout and stderr.
	dropped [2]int64
}

var streamNames = [2]string{livelog.Stdout, livelog.Stderr}

// control adds an entry that is not output.
func (b *batcher) control(e livelog.Entry) {
	b.items = append(b.items, e)
	b.urgent = true
}

// output adds p, written to stream (0 stdout, 1 stderr) at now: what does
// not fit in the backlog is dropped. It reports whether the writing
// goroutine needs waking: the output is the first that waits, or fills a
// chunk.
func (b *batcher) output(now time.Time, stream int, p []byte) (wake bool) {
	if len(p) == 0 {
		return false
	}
	if b.capped {
		b.dropped[stream] += int64(len(p))
		return false
	}
	if room := b.backlog - b.pending; len(p) > room {
		defer b.drop(stream, int64(len(p)-max(room, 0)), livelog.ReasonBacklog)
		p = p[:max(room, 0)]
		if len(p) == 0 {
			return false // the backlog is full: it is being written
		}
	}
	wake = b.pending == 0 || (b.pending < b.chunk && b.pending+len(p) >= b.chunk)
	b.pending += len(p)
	if b.oldest.IsZero() {
		b.oldest = now
	}
	b.gap = 0
	for len(p) > 0 {
		if n := len(b.items); n > 0 && b.items[n-1].Kind == livelog.KindOutput &&
			b.items[n-1].Stream == streamNames[stream] && len(b.items[n-1].Data) < b.chunk {
			last := &b.items[n-1]
			k := min(b.chunk-len(last.Data), len(p))
			last.Data = append(last.Data, p[:k]...)
			p = p[k:]
			continue
		}
		k := min(b.chunk, len(p))
		data := make([]byte, k, b.chunk)
		copy(data, p)
		b.items = append(b.items, livelog.Entry{Kind: livelog.KindOutput, Attempt: b.attempt, Stream: streamNames[stream], Data: data})
		p = p[k:]
	}
	return wake
}

// drop counts n bytes of stream dropped now, in the open truncated entry
// or a new one.
func (b *batcher) drop(stream int, n int64, reason string) {
	b.dropped[stream] += n
	if b.gap == 0 {
		b.items = append(b.items, b.truncated(reason))
		b.gap = len(b.items)
	}
	addDropped(&b.items[b.gap-1], stream, n)
}

func (b *batcher) truncated(reason string) livelog.Entry {
	return livelog.Entry{Kind: livelog.KindTruncated, Attempt: b.attempt, Reason: reason}
}

func addDropped(e *livelog.Entry, stream int, n int64) {
	if stream == 0 {
		e.StdoutDropped += n
	} else {
		e.StderrDropped += n
	}
}

func streamOf(e livelog.Entry) int {
	if e.Stream == livelog.Stderr {
		return 1
	}
	return 0
}

// due says whether the items should be written at now, or else how long
// until they should (0: there is nothing to write).
func (b *batcher) due(now time.Time) (bool, time.Duration) {
	switch {
	case len(b.items) == 0:
		return false, 0
	case b.urgent, b.pending >= b.chunk, b.oldest.IsZero():
		return true, 0
	}
	if wait := b.oldest.Add(b.interval).Sub(now); wait > 0 {
		return false, wait
	}
	return true, 0
}

// take returns the items to write, and forgets them. An end entry among
// them gets the counts of the output dropped so far.
func (b *batcher) take() []livelog.Entry {
	items := b.items
	for i := range items {
		if items[i].Kind == livelog.KindEnd {
			items[i].StdoutDropped, items[i].StderrDropped = b.dropped[0], b.dropped[1]
		}
	}
	b.items, b.pending, b.oldest, b.urgent, b.gap = nil, 0, time.Time{}, false, 0
	return items
}

// sent settles a batch take returned, Append's ids or err for it. Output
// Redis refused for the task's cap is dropped, with everything that waits
// and comes after it; output of a batch that failed is dropped; the other
// entries of a failed batch are written with the next one.
func (b *batcher) sent(batch []livelog.Entry, ids []string, err error) {
	var again []livelog.Entry // goes before the items that came since
	switch {
	case err != nil:
		for _, e := range batch {
			if e.Kind != livelog.KindOutput {
				again = append(again, e)
				continue
			}
			n := len(again)
			if n == 0 || again[n-1].Kind != livelog.KindTruncated || again[n-1].Reason != livelog.ReasonBacklog {
				again = append(again, b.truncated(livelog.ReasonBacklog))
				n++
			}
			addDropped(&again[n-1], streamOf(e), int64(len(e.Data)))
			b.dropped[streamOf(e)] += int64(len(e.Data))
		}
	case !b.capped:
		var refused *livelog.Entry
		for i, e := range batch {
			if e.Kind != livelog.KindOutput || (i < len(ids) && ids[i] != "") {
				continue
			}
			if refused == nil {
				again = append(again, b.truncated(livelog.ReasonCap))
				refused = &again[0]
			}
			addDropped(refused, streamOf(e), int64(len(e.Data)))
			b.dropped[streamOf(e)] += int64(len(e.Data))
		}
		if refused == nil {
			return
		}
		b.capped = true
		kept := b.items[:0]
		for _, e := range b.items {
			if e.Kind != livelog.KindOutput {
				kept = append(kept, e)
				continue
			}
			addDropped(refused, streamOf(e), int64(len(e.Data)))
			b.dropped[streamOf(e)] += int64(len(e.Data))
		}
		b.items, b.pending, b.oldest, b.gap = kept, 0, time.Time{}, 0
	}
	if len(again) == 0 {
		return
	}
	b.items = append(again, b.items...)
	b.urgent = true
	if b.gap > 0 {
		b.gap += len(again)
	}
}
