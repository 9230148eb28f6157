// Package livelog is the wire format of a task's live output: the Redis
// stream the worker appends a task's output and progress to while it runs,
// and that enqueue's Client.Follow, `enqueue --wait` and `enqueue wait`
// read.
//
// Each task has one stream, [Key], and a counter of what the stream has
// taken of its byte cap; braces put both in the queue's Redis
// Cluster slot, as asynq's own keys are. Each delivery of the task starts
// with a [KindAttempt] entry and ends with a [KindEnd] entry, so a retry's
// output is told from an earlier attempt's by the attempt entry before it.
// Each entry is one event, with its kind in the field "kind"; see [Entry]
// for the others.
//
// [Append] enforces the cap in Redis, for all the deliveries of a task
// together: output that would pass it is refused, while the few events
// that say what happened (attempts, phases, truncation, ends) are always
// added. The stream is also capped in entries (XADD MAXLEN), and both keys
// expire as the caller says.
//
// Both sides of the contract, the producer (package enqueue) and the
// worker, use this package; it must not grow into a client of its own.
package livelog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Key is the Redis stream of task id's live output on queue.
func Key(queue, id string) string { return "bottleq:out:{" + queue + "}:" + id }

// SizeKey is the counter of what task id's stream on queue has taken of
// its cap, in Entry.cost units.
func SizeKey(queue, id string) string { return "bottleq:outsize:{" + queue + "}:" + id }

// Kinds of entry.
const (
	// KindAttempt starts a delivery of the task: Attempt, Host. A
	// delivery asynq hands out again after a worker's shutdown has the
	// same Attempt as the one before it.
	KindAttempt = "attempt"
	// KindPhase says the delivery entered Phase.
	KindPhase = "phase"
	// KindOutput is a chunk of the agent's output: Stream and Data.
	KindOutput = "output"
	// KindTruncated says output was dropped just before it: Reason, and
	// StdoutDropped and StderrDropped bytes (see ReasonCap for what
	// follows one of that reason).
	KindTruncated = "truncated"
	// KindEnd ends a delivery: Outcome, Phase, and ExitCode and TimedOut
	// or Error, and the bytes of output it dropped in all.
	KindEnd = "end"
)

// Output streams.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// Reasons output was dropped.
const (
	// ReasonCap: the task's stream reached its byte cap. The delivery
	// streams no more output, and its end entry counts what it dropped.
	ReasonCap = "cap"
	// ReasonBacklog: Redis did not take the output as fast as the agent
	// wrote it (or failed), and the worker dropped output rather than make
	// the agent wait.
	ReasonBacklog = "backlog"
)

// Outcomes of a delivery, in its end entry.
const (
	// OutcomeDone: the command ran; ExitCode and TimedOut say how it
	// ended. The task completes.
	OutcomeDone = "done"
	// OutcomeFailed: the delivery failed, in Phase, with Error. asynq
	// retries the task if it may; the task's state says whether it did.
	OutcomeFailed = "failed"
	// OutcomeStopped: the delivery's context ended, in Phase: a user
	// cancelled the task, its worker shut down, or its deadline passed.
	// The task's state says which became of it.
	OutcomeStopped = "stopped"
)

// EntryOverhead is what each entry costs besides its fields' bytes: it
// keeps an agent that writes a byte at a time from filling Redis with
// entries that cost nothing.
const EntryOverhead = 64

// Entry is one event of a task's live output. Which fields are set depends
// on Kind.
type Entry struct {
	// ID is the entry's stream ID, set by [Read].
	ID string
	// Kind is one of the Kind constants.
	Kind string
	// Attempt counts the task's deliveries from 1, as asynq counts
	// retries; every entry has it.
	Attempt int
	// Host is the worker's host an attempt runs on.
	Host string
	// Phase is the phase entered, or the one the delivery ended in.
	Phase string
	// Stream is Stdout or Stderr, and Data the bytes of an output entry.
	Stream string
	Data   []byte
	// Reason is one of the Reason constants.
	Reason string
	// StdoutDropped and StderrDropped count output bytes not streamed:
	// just before a truncated entry, or in all the delivery, in its end.
	StdoutDropped, StderrDropped int64
	// Outcome is one of the Outcome constants.
	Outcome string
	// ExitCode and TimedOut say how the command ended.
	ExitCode int
	TimedOut bool
	// Error is why a delivery failed or stopped.
	Error string
}

// Fields returns the entry as XADD's field-value pairs, without empty
// fields and without ID.
func (e Entry) Fields() []string {
	p := e.pairs()
	f := make([]string, len(p))
	for i, v := range p {
		switch v := v.(type) {
		case string:
			f[i] = v
		case []byte:
			f[i] = string(v)
		}
	}
	return f
}

// pairs is Fields for Append: an output entry's data is the entry's own
// []byte (go-redis writes it as it is), not a string copy of it, so a batch
// on its way to Redis is not held twice.
func (e Entry) pairs() []any {
	f := []any{"kind", e.Kind, "attempt", strconv.Itoa(e.Attempt)}
	add := func(k, v string) {
		if v != "" {
			f = append(f, k, v)
		}
	}
	num := func(k string, n int64) {
		if n != 0 {
			f = append(f, k, strconv.FormatInt(n, 10))
		}
	}
	add("host", e.Host)
	add("phase", e.Phase)
	add("stream", e.Stream)
	if e.Kind == KindOutput {
		f = append(f, "data", e.Data)
	}
	add("reason", e.Reason)
	num("stdout_dropped", e.StdoutDropped)
	num("stderr_dropped", e.StderrDropped)
	add("outcome", e.Outcome)
	if e.Kind == KindEnd && e.Outcome == OutcomeDone {
		f = append(f, "exit_code", strconv.Itoa(e.ExitCode))
	}
	if e.TimedOut {
		f = append(f, "timed_out", "1")
	}
	add("error", e.Error)
	return f
}

// cost is what the entry takes of its stream's cap: its fields' bytes and
// EntryOverhead.
func (e Entry) cost() int64 {
	return cost(e.pairs())
}

func cost(pairs []any) int64 {
	n := int64(EntryOverhead)
	for _, v := range pairs {
		switch v := v.(type) {
		case string:
			n += int64(len(v))
		case []byte:
			n += int64(len(v))
		}
	}
	return n
}

// errBadEntry is an entry that does not decode: not one of this package's.
var errBadEntry = errors.New("not a live output entry")

// Parse decodes the entry of stream ID id with the field values values, as
// go-redis returns them.
func Parse(id string, values map[string]any) (Entry, error) {
	e := Entry{ID: id}
	str := func(k string) string { s, _ := values[k].(string); return s }
	var err error
	num := func(k string) int64 {
		s := str(k)
		if s == "" || err != nil {
			return 0
		}
		n, perr := strconv.ParseInt(s, 10, 64)
		if perr != nil {
			err = fmt.Errorf("%w: entry %s: %s is %q", errBadEntry, id, k, s)
		}
		return n
	}
	e.Kind = str("kind")
	switch e.Kind {
	case KindAttempt, KindPhase, KindOutput, KindTruncated, KindEnd:
	default:
		return e, fmt.Errorf("%w: entry %s has kind %q", errBadEntry, id, e.Kind)
	}
	e.Attempt = int(num("attempt"))
	e.Host, e.Phase, e.Stream = str("host"), str("phase"), str("stream")
	if e.Kind == KindOutput {
		e.Data = []byte(str("data"))
	}
	e.Reason = str("reason")
	e.StdoutDropped, e.StderrDropped = num("stdout_dropped"), num("stderr_dropped")
	e.Outcome, e.Error = str("outcome"), str("error")
	e.ExitCode = int(num("exit_code"))
	e.TimedOut = str("timed_out") == "1"
	return e, err
}

// Limits bound one task's stream.
type Limits struct {
	// MaxBytes caps what the stream's entries cost (each its fields'
	// bytes plus EntryOverhead), for all the task's deliveries together:
	// an output entry that would pass it is refused. Other entries are always added, and counted.
	MaxBytes int64
	// MaxEntries caps the stream's length: past it XADD trims the oldest
	// entries (MAXLEN).
	MaxEntries int64
}

// appendScript adds entries in order, refusing an output entry that would
// pass the byte cap, and every output entry after it, and sets both keys'
// expiry.
//
// KEYS: stream, size counter. ARGV: max bytes, max entries, ttl in ms,
// then per entry: cost, "1" if the cap may refuse it, the number of
// field-value strings, and those strings. It returns each entry's ID, or 0
// for one refused.
var appendScript = redis.NewScript(`
local cap, maxlen, ttl = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local used = tonumber(redis.call("GET", KEYS[2]) or "0")
local full = false
local ids = {}
local i = 4
while i <= #ARGV do
	local cost, capped, n = tonumber(ARGV[i]), ARGV[i + 1] == "1", tonumber(ARGV[i + 2])
	local fields = {}
	for j = 1, n do
		fields[j] = ARGV[i + 2 + j]
	end
	i = i + 3 + n
	if capped and (full or used + cost > cap) then
		full = true
		ids[#ids + 1] = 0
	else
		used = used + cost
		ids[#ids + 1] = redis.call("XADD", KEYS[1], "MAXLEN", maxlen, "*", unpack(fields))
	end
end
redis.call("SET", KEYS[2], used, "PX", ttl)
redis.call("PEXPIRE", KEYS[1], ttl)
return ids
`)

// Append adds entries, in order, to the stream of task id on queue within
// l, and makes both of the task's keys expire ttl from now (at least a
// millisecond). It returns each entry's stream ID, or "" for an output
// entry refused because the stream reached l.MaxBytes; once one is
// refused, so are the output entries after it in entries, so that what
// the stream holds of the output has no hole.
func Append(ctx context.Context, rdb redis.Scripter, queue, id string, l Limits, ttl time.Duration, entries []Entry) ([]string, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	args := []any{l.MaxBytes, l.MaxEntries, max(ttl.Milliseconds(), 1)}
	for _, e := range entries {
		f := e.pairs()
		capped := "0"
		if e.Kind == KindOutput {
			capped = "1"
		}
		args = append(args, cost(f), capped, len(f))
		args = append(args, f...)
	}
	res, err := appendScript.Run(ctx, rdb, []string{Key(queue, id), SizeKey(queue, id)}, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("live output of task %s: %w", id, err)
	}
	ids := make([]string, len(entries))
	for i := range min(len(res), len(ids)) {
		ids[i], _ = res[i].(string)
	}
	return ids, nil
}

// Expire makes task id's stream on queue and its counter expire ttl from
// now (at least a millisecond), whatever TTL Append last gave them: the
// worker shortens it once the task's final result is written, so that a
// finished task's output does not stay in Redis for the task's retention.
// Keys that are gone stay gone.
func Expire(ctx context.Context, rdb redis.Cmdable, queue, id string, ttl time.Duration) error {
	ms := max(ttl, time.Millisecond)
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.PExpire(ctx, Key(queue, id), ms)
		p.PExpire(ctx, SizeKey(queue, id), ms)
		return nil
	})
	if err != nil {
		return fmt.Errorf("live output of task %s: %w", id, err)
	}
	return nil
}

// Read returns up to count entries of task id's stream on queue after the
// stream ID after ("0" for all), waiting up to block for one to come when
// there is none yet (0: not at all). No entries is no error.
func Read(ctx context.Context, rdb redis.Cmdable, queue, id, after string, count int64, block time.Duration) ([]Entry, error) {
	a := &redis.XReadArgs{Streams: []string{Key(queue, id), after}, Count: count, Block: -1}
	if block > 0 {
		a.Block = block
	}
	streams, err := rdb.XRead(ctx, a).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("live output of task %s: %w", id, err)
	}
	var out []Entry
	for _, s := range streams {
		for _, m := range s.Messages {
			e, err := Parse(m.ID, m.Values)
			if err != nil {
				return out, err
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// ValidID checks a stream ID given to resume after: MS or MS-SEQ, decimal.
func ValidID(id string) bool {
	ms, seq, hasSeq := cut(id)
	if _, err := strconv.ParseUint(ms, 10, 64); err != nil {
		return false
	}
	if hasSeq {
		if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
			return false
		}
	}
	return true
}

func cut(id string) (string, string, bool) {
	for i := 0; i < len(id); i++ {
		if id[i] == '-' {
			return id[:i], id[i+1:], true
		}
	}
	return id, "", false
}
