package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/internal/livelog"
	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// kinds sums up entries: "phase:exec", "output:stdout:3" (bytes),
// "truncated:backlog:5/0", "end:done".
func kinds(es []livelog.Entry) []string {
	var out []string
	for _, e := range es {
		s := e.Kind
		switch e.Kind {
		case livelog.KindPhase:
			s += ":" + e.Phase
		case livelog.KindOutput:
			s += ":" + e.Stream + ":" + itoa(len(e.Data))
		case livelog.KindTruncated:
			s += ":" + e.Reason + ":" + itoa(int(e.StdoutDropped)) + "/" + itoa(int(e.StderrDropped))
		case livelog.KindEnd:
			s += ":" + e.Outcome
		}
		out = append(out, s)
	}
	return out
}

func itoa(n int) string {
	b := []byte{}
	if n == 0 {
		return "0"
	}
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// TestBatcher drives the batcher with a clock of the test's: output waits
// up to an interval or a full chunk, other entries go at once, in order
// with the output; a full backlog drops output and marks where; a failed
// write drops its output and keeps the rest; the cap stops the output for
// good.
func TestBatcher(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1700000000, 0)
	newB := func() *batcher { return &batcher{attempt: 2, chunk: 4, interval: 100 * time.Millisecond, backlog: 10} }
	check := func(t *testing.T, got []livelog.Entry, want ...string) {
		t.Helper()
		if k := kinds(got); !reflect.DeepEqual(k, want) {
			t.Errorf("entries %q, want %q", k, want)
		}
	}

	t.Run("interval", func(t *testing.T) {
		t.Parallel()
		b := newB()
		if send, wait := b.due(t0); send || wait != 0 {
			t.Errorf("empty batcher due: %v %v", send, wait)
		}
		b.output(t0, 0, []byte("ab"))
		b.output(t0.Add(30*time.Millisecond), 0, []byte("c"))
		if send, wait := b.due(t0.Add(40 * time.Millisecond)); send || wait != 60*time.Millisecond {
			t.Errorf("3 bytes after 40ms: send %v, wait %v; want to wait 60ms more", send, wait)
		}
		if send, _ := b.due(t0.Add(100 * time.Millisecond)); !send {
			t.Error("not due once the oldest byte is an interval old")
		}
		got := b.take()
		check(t, got, "output:stdout:3")
		if string(got[0].Data) != "abc" || got[0].Attempt != 2 {
			t.Errorf("entry %+v", got[0])
		}
		if send, wait := b.due(t0.Add(time.Second)); send || wait != 0 {
			t.Error("due again after take")
		}
	})

	t.Run("wake", func(t *testing.T) {
		t.Parallel()
		b := newB()
		for i, tt := range []struct {
			out  string
			wake bool
		}{
			{"ab", true},      // the first output
			{"c", false},      // short of a chunk
			{"d", true},       // fills a chunk
			{"efghij", false}, // past it: being written already
			{"klmnop", false}, // over the backlog: dropped
		} {
			if got := b.output(t0, 0, []byte(tt.out)); got != tt.wake {
				t.Errorf("write %d (%q) wakes the writer: %v, want %v", i, tt.out, got, tt.wake)
			}
		}
		b.take()
		if !b.output(t0, 1, []byte("q")) {
			t.Error("the first output after a take does not wake the writer")
		}
	})

	t.Run("chunks and order", func(t *testing.T) {
		t.Parallel()
		b := newB()
		b.output(t0, 0, []byte("abcdef"))
		if send, _ := b.due(t0); !send {
			t.Error("a full chunk is not due at once")
		}
		b.output(t0, 1, []byte("E"))
		b.control(livelog.Entry{Kind: livelog.KindPhase, Phase: "artifacts"})
		b.output(t0, 1, []byte("F"))
		got := b.take()
		check(t, got, "output:stdout:4", "output:stdout:2", "output:stderr:1", "phase:artifacts", "output:stderr:1")
		if string(got[0].Data)+string(got[1].Data) != "abcdef" {
			t.Errorf("stdout split as %q %q", got[0].Data, got[1].Data)
		}
		b.control(livelog.Entry{Kind: livelog.KindPhase, Phase: "stop"})
		if send, _ := b.due(t0); !send {
			t.Error("a phase is not due at once")
		}
	})

	t.Run("backlog", func(t *testing.T) {
		t.Parallel()
		b := newB()
		b.output(t0, 0, []byte("0123456789abc")) // 3 over the backlog
		b.output(t0, 1, []byte("xy"))            // all dropped, same gap
		check(t, b.items, "output:stdout:4", "output:stdout:4", "output:stdout:2", "truncated:backlog:3/2")
		got := b.take()
		b.output(t0, 0, []byte("d"))
		b.output(t0, 0, bytes.Repeat([]byte("e"), 10)) // 9 fit
		check(t, b.take(), "output:stdout:4", "output:stdout:4", "output:stdout:2", "truncated:backlog:1/0")
		if b.dropped != [2]int64{4, 2} || got[3].Attempt != 2 {
			t.Errorf("dropped %v, marker %+v", b.dropped, got[3])
		}
	})

	t.Run("failed write", func(t *testing.T) {
		t.Parallel()
		b := newB()
		b.control(livelog.Entry{Kind: livelog.KindAttempt})
		b.output(t0, 0, []byte("abc"))
		b.control(livelog.Entry{Kind: livelog.KindPhase, Phase: "stop"})
		batch := b.take()
		b.output(t0, 1, []byte("late"))
		b.sent(batch, nil, errors.New("redis down"))
		check(t, b.items, "attempt", "truncated:backlog:3/0", "phase:stop", "output:stderr:4")
		if send, _ := b.due(t0); !send {
			t.Error("what failed is not written again at once")
		}
	})

	t.Run("cap", func(t *testing.T) {
		t.Parallel()
		b := newB()
		b.output(t0, 0, []byte("abcdef"))
		batch := b.take()
		b.output(t0, 1, []byte("gh"))
		b.control(livelog.Entry{Kind: livelog.KindPhase, Phase: "stop"})
		b.sent(batch, []string{"1-0", ""}, nil) // the second chunk was refused
		check(t, b.items, "truncated:cap:2/2", "phase:stop")
		b.output(t0, 0, []byte("more"))
		b.control(livelog.Entry{Kind: livelog.KindEnd, Outcome: livelog.OutcomeDone})
		got := b.take()
		check(t, got, "truncated:cap:2/2", "phase:stop", "end:done")
		if e := got[2]; e.StdoutDropped != 6 || e.StderrDropped != 2 {
			t.Errorf("end counts %d/%d dropped, want 6/2", e.StdoutDropped, e.StderrDropped)
		}
		b.sent(got, []string{"2-0", "3-0", "4-0"}, nil)
		if len(b.items) != 0 {
			t.Errorf("left %q", kinds(b.items))
		}
	})
}

// testSink is a sink on rdb whose tasks are kept an hour.
func testSink(rdb redis.UniversalClient, maxBytes int64) *liveSink {
	return &liveSink{
		rdb: rdb, limits: liveLimits(maxBytes), now: time.Now, closeWait: liveCloseWait,
		retention: func(context.Context, string, string) (time.Duration, error) { return time.Hour, nil },
	}
}

// TestLiveLogWrites: a delivery's entries reach its stream in order, the
// output whole, and the stream expires after the task's retention.
func TestLiveLogWrites(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"miniredis", "redis-server"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := testredis.Mini(t)
			if kind == "redis-server" {
				s = testredis.Real(t)
			}
			rdb := redis.NewClient(&redis.Options{Addr: s.Addr})
			defer rdb.Close()
			ctx := context.Background()
			l := testSink(rdb, DefaultLiveOutputBytes).open(ctx, Meta{ID: "t1", Queue: "q"}, tasks.Result{Attempt: 1, Host: "h"}, zerolog.Nop())
			l.phase(tasks.PhaseExec)
			var want bytes.Buffer
			for i := range 1000 {
				line := []byte(strings.Repeat("x", i%97) + "\n")
				want.Write(line)
				l.stdout().Write(line)
			}
			l.stderr().Write([]byte("warn\n"))
			l.phase(tasks.PhaseDelete)
			l.close(ctx, tasks.Result{Phase: tasks.PhaseExec, ExitCode: 3}, nil)

			es, err := livelog.Read(ctx, rdb, "q", "t1", "0", 10000, 0)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			var rest []string
			for _, e := range es {
				if e.Attempt != 1 {
					t.Errorf("entry of attempt %d: %+v", e.Attempt, e)
				}
				switch {
				case e.Kind == livelog.KindOutput && e.Stream == livelog.Stdout:
					got.Write(e.Data)
					if len(e.Data) > liveChunk {
						t.Errorf("a chunk of %d bytes", len(e.Data))
					}
				default:
					rest = append(rest, kinds([]livelog.Entry{e})...)
				}
			}
			if got.String() != want.String() {
				t.Errorf("stdout came back as %d bytes, want %d", got.Len(), want.Len())
			}
			if w := []string{"attempt", "phase:exec", "output:stderr:5", "phase:delete", "end:done"}; !reflect.DeepEqual(rest, w) {
				t.Errorf("entries %q, want %q", rest, w)
			}
			if end := es[len(es)-1]; end.ExitCode != 3 || end.Phase != tasks.PhaseExec || es[0].Host != "h" {
				t.Errorf("first %+v, last %+v", es[0], end)
			}
			if ttl := rdb.PTTL(ctx, livelog.Key("q", "t1")).Val(); ttl <= 0 || ttl > time.Hour {
				t.Errorf("the stream expires in %v, want the task's retention, an hour", ttl)
			}
		})
	}
}

// TestLiveLogNeverBlocks: with a Redis that never answers, the agent's
// writes still return, output past the backlog is dropped and counted,
// and the end of the delivery waits only its bound.
func TestLiveLogNeverBlocks(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	rdb := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), ReadTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer rdb.Close()
	sink := testSink(rdb, DefaultLiveOutputBytes)
	sink.closeWait = 50 * time.Millisecond
	l := sink.open(context.Background(), Meta{ID: "t1"}, tasks.Result{Attempt: 1}, zerolog.Nop())

	const total = 10 << 20
	chunk := bytes.Repeat([]byte("y"), 64<<10)
	for range total / len(chunk) {
		if n, err := l.stdout().Write(chunk); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	l.close(context.Background(), tasks.Result{}, nil)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.dropped[0] != total {
		t.Errorf("%d bytes dropped, want all %d: none reached Redis", l.b.dropped[0], total)
	}
}

// TestServeLiveOutput: under Serve, a task's attempts, phases and output
// go to its stream as they happen: the command's first line is there
// while it still runs; a failed attempt ends failed and the retry starts
// with an attempt entry of its own.
func TestServeLiveOutput(t *testing.T) {
	t.Parallel()
	s := testredis.Real(t)
	r := asynq.RedisClientOpt{Addr: s.Addr}
	f := newFake()
	var starts int
	f.start = func(context.Context, string) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if starts++; starts == 1 {
			return f.toolErr("machine start", "", "kvm not available", nil)
		}
		return nil
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer rdb.Close()
	seen := make(chan error, 1)
	f.exec = func(ctx context.Context, name string, _ []string, o smolvm.ExecOptions) (smolvm.ExecResult, error) {
		o.Stdout.Write([]byte("first\n"))
		// The command goes on only once its first line is in the stream.
		for {
			es, err := livelog.Read(ctx, rdb, tasks.DefaultQueue, "live1", "0", 1000, 0)
			if err != nil {
				seen <- err
				return smolvm.ExecResult{}, err
			}
			for _, e := range es {
				if e.Kind == livelog.KindOutput && string(e.Data) == "first\n" {
					seen <- nil
					o.Stderr.Write([]byte("second\n"))
					return smolvm.ExecResult{ExitCode: 0, Stdout: []byte("first\n"), Stderr: []byte("second\n")}, nil
				}
			}
			select {
			case <-ctx.Done():
				return smolvm.ExecResult{}, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	h, _ := newHandler(t, f, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, h, ServerConfig{Redis: r, PollInterval: 5 * time.Millisecond, RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond})
	}()
	defer func() { cancel(); <-done }()
	client := asynq.NewClient(r)
	defer client.Close()
	task, err := tasks.NewAgentRun(tasks.AgentRun{Image: "alpine:3", Command: []string{"agent"}}, asynq.TaskID("live1"), asynq.Retention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Enqueue(task); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-seen:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the command's first line never reached the stream while it ran")
	}
	sv := &served{t: t, insp: asynq.NewInspector(r)}
	defer sv.insp.Close()
	sv.await(&asynq.TaskInfo{Queue: tasks.DefaultQueue, ID: "live1"}, asynq.TaskStateCompleted)

	es, err := livelog.Read(context.Background(), rdb, tasks.DefaultQueue, "live1", "0", 1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"attempt", "phase:pack", "phase:create", "phase:start", "phase:delete", "end:failed",
		"attempt", "phase:pack", "phase:create", "phase:start", "phase:ready", "phase:exec", "output:stdout:6", "output:stderr:7",
		"phase:stop", "phase:commit", "phase:delete", "end:done",
	}
	if got := kinds(es); !reflect.DeepEqual(got, want) {
		t.Errorf("stream:\n%q\nwant\n%q", got, want)
	}
	if len(es) == len(want) {
		if es[0].Attempt != 1 || es[6].Attempt != 2 || es[5].Phase != tasks.PhaseStart || !strings.Contains(es[5].Error, "kvm not available") {
			t.Errorf("attempt 1 %+v ended %+v; attempt 2 %+v", es[0], es[5], es[6])
		}
	}
	// Completed, the task keeps its retention of an hour; its stream only
	// liveAfterEnd, for followers still reading it.
	for _, k := range []string{livelog.Key(tasks.DefaultQueue, "live1"), livelog.SizeKey(tasks.DefaultQueue, "live1")} {
		if ttl := rdb.PTTL(context.Background(), k).Val(); ttl <= 0 || ttl > liveAfterEnd {
			t.Errorf("%s expires in %v, want within %v of the task's end", k, ttl, liveAfterEnd)
		}
	}
}

// TestLiveBacklogFor: an attempt's backlog shrinks as more stream at once,
// from liveBacklogMax to liveBacklogMin, so that the worker's total stays
// near liveBacklogTotal.
func TestLiveBacklogFor(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		streaming int64
		want      int
	}{
		{0, 256 << 10}, {1, 256 << 10}, {12, 256 << 10}, {13, 3 << 20 / 13}, {24, 128 << 10}, {48, 64 << 10}, {50, 64 << 10}, {1000, 64 << 10},
	} {
		if got := liveBacklogFor(tt.streaming); got != tt.want {
			t.Errorf("liveBacklogFor(%d) = %d, want %d", tt.streaming, got, tt.want)
		}
	}
}

// TestLiveLogBurst: a burst the agent writes at once waits whole while few
// attempts stream (the backlog is liveBacklogMax), and is cut to
// liveBacklogMin when 49 do; once all are closed the worker streams none.
func TestLiveLogBurst(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: testredis.Mini(t).Addr})
	defer rdb.Close()
	ctx := context.Background()
	sink := testSink(rdb, 4<<20)
	burst := bytes.Repeat([]byte("b"), 200<<10)
	streamed := func(id string) int {
		t.Helper()
		es, err := livelog.Read(ctx, rdb, "q", id, "0", 100000, 0)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range es {
			if e.Kind == livelog.KindOutput {
				n += len(e.Data)
			}
		}
		return n
	}

	l := sink.open(ctx, Meta{ID: "alone", Queue: "q"}, tasks.Result{Attempt: 1}, zerolog.Nop())
	l.stdout().Write(burst)
	l.close(ctx, tasks.Result{}, nil)
	if n := streamed("alone"); n != len(burst) {
		t.Errorf("alone, %d of a %d-byte burst streamed; want all of it", n, len(burst))
	}

	var others []*liveLog
	for i := range 48 {
		others = append(others, sink.open(ctx, Meta{ID: fmt.Sprintf("other-%d", i), Queue: "q"}, tasks.Result{Attempt: 1}, zerolog.Nop()))
	}
	l = sink.open(ctx, Meta{ID: "crowded", Queue: "q"}, tasks.Result{Attempt: 1}, zerolog.Nop())
	l.stdout().Write(burst)
	l.close(ctx, tasks.Result{}, nil)
	if n := streamed("crowded"); n != liveBacklogMin {
		t.Errorf("among 49, %d of a %d-byte burst streamed; want %d", n, len(burst), liveBacklogMin)
	}
	for _, o := range others {
		o.close(ctx, tasks.Result{}, nil)
	}
	if n := sink.streaming.Load(); n != 0 {
		t.Errorf("%d attempts still counted as streaming after all closed", n)
	}
}
