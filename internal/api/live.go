package api

import (
	"context"
	"encoding/base64"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/internal/livelog"
)

// Live output: while a worker runs a task, it appends the agent's output,
// and the attempts, phases and end of each delivery, to a Redis stream of
// the task's (package internal/livelog, which enqueue's Client.Follow
// reads too). An event stream reads it after the client's place with
// blocking XREADs, on a connection of its own (Config.LiveRedis), and
// passes the output on as EventStdout and EventStderr events. The stream's
// entry IDs go into the event IDs, so that a client that reconnects with
// Last-Event-ID resumes right after the last chunk it got.

// Event names of the live output.
const (
	// EventStdout and EventStderr: a chunk of the agent's output on that
	// stream. Data: an OutputEvent.
	EventStdout = "stdout"
	EventStderr = "stderr"
	// EventTruncated: output was dropped just before the next chunk (the
	// task's live output cap, or Redis fell behind). Data: a
	// TruncatedEvent. The run's result still keeps the head and tail of
	// the output.
	EventTruncated = "truncated"
)

// OutputEvent is the data of an EventStdout or EventStderr.
type OutputEvent struct {
	// Attempt is the delivery that wrote it, from 1.
	Attempt int `json:"attempt"`
	// Data is the chunk as text, where each byte that is not valid UTF-8
	// is shown as U+FFFD.
	Data string `json:"data"`
	// DataBase64 is set only when the chunk is not valid UTF-8: its exact
	// bytes, in standard base64. A chunk may end inside a character,
	// which the next chunk of its stream then completes.
	DataBase64 string `json:"data_base64,omitempty"`
}

// TruncatedEvent is the data of an EventTruncated.
type TruncatedEvent struct {
	// Attempt is the delivery whose output was dropped, from 1.
	Attempt int `json:"attempt"`
	// Reason is "cap" (the task's live output reached its cap: no more
	// of this attempt's output is streamed) or "backlog" (Redis did not
	// take the output as fast as the agent wrote it).
	Reason string `json:"reason"`
	// StdoutDropped and StderrDropped count the bytes dropped.
	StdoutDropped int64 `json:"stdout_dropped"`
	StderrDropped int64 `json:"stderr_dropped"`
}

// outputEvent is the data of output entry e.
func outputEvent(e livelog.Entry) OutputEvent {
	o := OutputEvent{Attempt: e.Attempt, Data: string(e.Data)}
	if !utf8.Valid(e.Data) {
		o.Data = toValidUTF8(e.Data)
		o.DataBase64 = base64.StdEncoding.EncodeToString(e.Data)
	}
	return o
}

// toValidUTF8 is b as text with each invalid byte as U+FFFD.
func toValidUTF8(b []byte) string {
	out := make([]rune, 0, len(b))
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		out = append(out, r) // utf8.RuneError for an invalid byte
		b = b[n:]
	}
	return string(out)
}

const (
	// liveBlock is the longest one read of a run's live output waits for
	// an entry. go-redis does not cut a blocking command short when its
	// context ends, so it also bounds how long a read outlives its event
	// stream.
	liveBlock = 5 * time.Second
	// liveBatch is the most entries one read returns.
	liveBatch = 256
	// liveRetry is the wait before a read that failed is tried again.
	liveRetry = time.Second
	// LiveReaders is how many connections the client cmd/api makes for
	// Config.LiveRedis keeps at most: each open event stream of an
	// unfinished run holds one while its read blocks. Streams past it
	// wait their turn for output (their phases and done are not held up).
	LiveReaders = 1024
)

// liveRead is what one read of the live output got: its entries that
// decode, and the ID of the last entry read ("" for none), past which the
// next read starts (an entry that does not decode is skipped).
type liveRead struct {
	entries []livelog.Entry
	last    string
}

// readLive reads the live output of task id on queue after the entry ID
// after ("0": from the start), waiting up to block for one when there is
// none (0: not at all).
func readLive(ctx context.Context, rdb redis.Cmdable, queue, id, after string, block time.Duration) (liveRead, error) {
	a := &redis.XReadArgs{Streams: []string{livelog.Key(queue, id), after}, Count: liveBatch, Block: -1}
	if block > 0 {
		a.Block = block
	}
	streams, err := rdb.XRead(ctx, a).Result()
	if errors.Is(err, redis.Nil) {
		return liveRead{}, nil
	}
	if err != nil {
		return liveRead{}, err
	}
	var r liveRead
	for _, s := range streams {
		for _, m := range s.Messages {
			r.last = m.ID
			if e, err := livelog.Parse(m.ID, m.Values); err == nil {
				r.entries = append(r.entries, e)
			}
		}
	}
	return r, nil
}

// tail reads the live output of task id on queue after the entry ID
// after, with blocking reads on s.liveRdb, and sends each read that got
// entries to out, until ctx ends. A read that fails is tried again after
// liveRetry, from the same place.
func (s *Server) tail(ctx context.Context, queue, id, after string, out chan<- liveRead) {
	failing := false
	for ctx.Err() == nil {
		r, err := readLive(ctx, s.liveRdb, queue, id, after, liveBlock)
		s.metrics.liveReads.Inc()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !failing { // once, not at every try while Redis is away
				s.cfg.Log.Warn().Err(err).Str("run_id", id).Msg("events: reading the live output failed; trying again")
			}
			failing = true
			select {
			case <-ctx.Done():
				return
			case <-time.After(liveRetry):
			}
			continue
		}
		failing = false
		if r.last == "" {
			continue
		}
		select {
		case out <- r:
			after = r.last
		case <-ctx.Done():
			return
		}
	}
}
