package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/internal/livelog"
	"github.com/bot-bottle/bottleq/internal/testredis"
)

// talk is what the stand-in's agent writes in exec: both streams, an "é"
// cut between two chunks, and output dropped for backlog.
var talk = []livelog.Entry{
	{Kind: livelog.KindOutput, Stream: livelog.Stdout, Data: []byte("hello\n")},
	{Kind: livelog.KindOutput, Stream: livelog.Stderr, Data: []byte("warning: x\n")},
	{Kind: livelog.KindOutput, Stream: livelog.Stdout, Data: []byte("caf\xc3")},
	{Kind: livelog.KindOutput, Stream: livelog.Stdout, Data: []byte("\xa9 au lait\n")},
	{Kind: livelog.KindTruncated, Reason: livelog.ReasonBacklog, StdoutDropped: 42},
	{Kind: livelog.KindOutput, Stream: livelog.Stdout, Data: []byte("bye\n")},
}

// wantTalk is the events of a talking run, as describe writes them: five
// phases, talk, three phases, done.
var wantTalk = []string{
	"phase 1 pack", "phase 1 create", "phase 1 start", "phase 1 ready", "phase 1 exec",
	`stdout 1 "hello\n"`, `stderr 1 "warning: x\n"`, `stdout 1 "caf\xc3"`, `stdout 1 "\xa9 au lait\n"`,
	"truncated 1 backlog 42/0", `stdout 1 "bye\n"`,
	"phase 1 stop", "phase 1 commit", "phase 1 delete", "done completed",
}

// describe is an event as "name attempt data", checking what each kind's data
// must hold: an output event's text is its bytes as valid UTF-8, and
// data_base64 is there exactly when they are not.
func describe(t *testing.T, ev sseEvent) string {
	t.Helper()
	switch ev.name {
	case EventPhase:
		var pe PhaseEvent
		if err := json.Unmarshal([]byte(ev.data), &pe); err != nil {
			t.Fatalf("%+v: %v", ev, err)
		}
		if want := fmt.Sprintf("%d-%d", pe.Attempt, pe.Index); !strings.HasPrefix(ev.id, want) {
			t.Errorf("phase event %+v: id does not start with %s", ev, want)
		}
		return fmt.Sprintf("phase %d %s", pe.Attempt, pe.Phase)
	case EventStdout, EventStderr:
		var o OutputEvent
		if err := json.Unmarshal([]byte(ev.data), &o); err != nil || o.Attempt < 1 {
			t.Fatalf("%+v: %v", ev, err)
		}
		data := []byte(o.Data)
		if o.DataBase64 != "" {
			b, err := base64.StdEncoding.DecodeString(o.DataBase64)
			if err != nil || strings.ToValidUTF8(string(b), "\uFFFD") != o.Data || string(b) == o.Data {
				t.Errorf("%+v: data_base64 %q (%v) does not go with data %q", ev, b, err, o.Data)
			}
			data = b
		}
		return fmt.Sprintf("%s %d %s", ev.name, o.Attempt, strconv.Quote(string(data)))
	case EventTruncated:
		var tr TruncatedEvent
		if err := json.Unmarshal([]byte(ev.data), &tr); err != nil || tr.Attempt < 1 {
			t.Fatalf("%+v: %v", ev, err)
		}
		return fmt.Sprintf("truncated %d %s %d/%d", tr.Attempt, tr.Reason, tr.StdoutDropped, tr.StderrDropped)
	case EventDone:
		var r Run
		if err := json.Unmarshal([]byte(ev.data), &r); err != nil || ev.id != doneID {
			t.Fatalf("%+v: %v", ev, err)
		}
		return "done " + r.State
	}
	t.Fatalf("unexpected event %+v", ev)
	return ""
}

// unquote writes want's quoted data as describe does.
func unquote(t *testing.T, want []string) []string {
	t.Helper()
	out := make([]string, len(want))
	for i, w := range want {
		head, data, ok := strings.Cut(w, ` "`)
		if !ok {
			out[i] = w
			continue
		}
		s, err := strconv.Unquote(`"` + data)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = head + " " + strconv.Quote(s)
	}
	return out
}

// describeAll describes a stream's events.
func describeAll(t *testing.T, evs []sseEvent) string {
	t.Helper()
	var out []string
	for _, ev := range evs {
		out = append(out, describe(t, ev))
	}
	return strings.Join(out, "\n")
}

// readAll reads a stream's events to its end.
func readAll(t *testing.T, s *sse) []sseEvent {
	t.Helper()
	var evs []sseEvent
	for ev, ok := s.next(t); ok; ev, ok = s.next(t) {
		evs = append(evs, ev)
	}
	if err := <-s.done; err != nil {
		t.Errorf("stream ended with %v, want a clean end", err)
	}
	return evs
}

// TestEventsLiveOutput: the agent's output, from the live output stream
// the worker writes, comes as stdout, stderr and truncated events between
// the phase events, in the order it was written. A client that drops out
// in the middle of the output and reconnects with Last-Event-ID gets the
// rest, nothing twice; a client that follows the run after it ended gets
// the same events, and one that resumes from a chunk the rest after it.
func TestEventsLiveOutput(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, nil)
	step := make(chan struct{})
	a.serveLive(step, talk)
	run := a.create(tokAcme, `{"image":"a","command":["talk"]}`)
	want := unquote(t, wantTalk)

	// Live: each step is one event. Out after "caf\xc3"; two more chunks
	// are written meanwhile; back with Last-Event-ID to the end.
	var live []sseEvent
	s := a.follow(tokAcme, run.ID, "")
	for range 5 + 3 {
		step <- struct{}{}
		ev, _ := s.next(t)
		live = append(live, ev)
	}
	s.close()
	step <- struct{}{}
	step <- struct{}{}
	s = a.follow(tokAcme, run.ID, live[len(live)-1].id)
	go func() {
		for range 1 + 3 {
			step <- struct{}{}
		}
	}()
	live = append(live, readAll(t, s)...)
	var got []string
	ids := map[string]bool{}
	for _, ev := range live {
		got = append(got, describe(t, ev))
		if ids[ev.id] {
			t.Errorf("event id %s twice", ev.id)
		}
		ids[ev.id] = true
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("live events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// After the end: the same events from the stream as it was written.
	var replay []string
	for _, ev := range readAll(t, a.follow(tokAcme, run.ID, "")) {
		replay = append(replay, describe(t, ev))
	}
	if strings.Join(replay, "\n") != strings.Join(want, "\n") {
		t.Errorf("events of the ended run:\n%s\nwant:\n%s", strings.Join(replay, "\n"), strings.Join(want, "\n"))
	}
	// Resumed from each event the live client got: exactly the rest.
	for i, ev := range live[:len(live)-1] {
		var rest []string
		for _, ev := range readAll(t, a.follow(tokAcme, run.ID, ev.id)) {
			rest = append(rest, describe(t, ev))
		}
		if strings.Join(rest, "\n") != strings.Join(want[i+1:], "\n") {
			t.Errorf("after %s (%s):\n%s\nwant:\n%s", ev.id, want[i], strings.Join(rest, "\n"), strings.Join(want[i+1:], "\n"))
		}
	}
	if r := a.do("GET", "/v1/runs/"+run.ID+"/events", tokGlobex, "", "Last-Event-ID: "+live[6].id); r.status != http.StatusNotFound {
		t.Errorf("another tenant resuming the run: %d %s", r.status, r.body)
	}
}

// TestEventsLiveBlocks: a stream that waits for output holds one blocking
// XREAD at a time (real redis-server's command counts), not a poll, and
// the read wakes when the worker writes.
func TestEventsLiveBlocks(t *testing.T) {
	t.Parallel()
	srv := testredis.Real(t)
	a := newAPI(t, srv, nil)
	step := make(chan struct{})
	a.serveLive(step, talk[:1])
	run := a.create(tokAcme, `{"image":"a","command":["talk"]}`)
	s := a.follow(tokAcme, run.ID, "")
	for range 5 { // to exec, where the agent is quiet until the next step
		step <- struct{}{}
		s.next(t)
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	xreads := func() int {
		info, err := rdb.Info(context.Background(), "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(info, "\n") {
			if rest, ok := strings.CutPrefix(l, "cmdstat_xread:calls="); ok {
				n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
				return n
			}
		}
		return 0
	}
	before := xreads()
	time.Sleep(2 * time.Second)
	if n := xreads() - before; n > 1 {
		t.Errorf("%d XREADs in 2s of quiet, want at most 1 (each blocks for %s)", n, liveBlock)
	}
	start := time.Now()
	step <- struct{}{}
	if ev, _ := s.next(t); ev.name != EventStdout || time.Since(start) > liveBlock-time.Second {
		t.Errorf("the output came as %+v after %s; a blocked read must wake when it is written", ev, time.Since(start))
	}
	for range 3 {
		step <- struct{}{}
	}
	readAll(t, s)
}

// TestEventsLiveRetry: a run whose first attempt failed in exec, followed
// after it ended: the first attempt's output, then the phases of the
// second, the attempt the run ended on, with its output in exec.
func TestEventsLiveRetry(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, nil)
	a.serveLive(nil, talk[:2])
	run := a.create(tokAcme, `{"image":"a","command":["flaky"]}`)
	a.waitState(tokAcme, run.ID, StateCompleted)
	want := unquote(t, []string{
		`stdout 1 "hello\n"`, `stderr 1 "warning: x\n"`,
		"phase 2 pack", "phase 2 create", "phase 2 start", "phase 2 ready", "phase 2 exec",
		`stdout 2 "hello\n"`, `stderr 2 "warning: x\n"`,
		"phase 2 stop", "phase 2 commit", "phase 2 delete", "done completed",
	})
	if got := describeAll(t, readAll(t, a.follow(tokAcme, run.ID, ""))); got != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

// TestEventsLiveReadsFail: while the blocking reads of live output fail
// (here: LiveRedis is a closed port), a stream still gets the phases as
// the run goes, and once the run ends, every chunk of its output, once,
// before done.
func TestEventsLiveReadsFail(t *testing.T) {
	t.Parallel()
	closed := testredis.RefusedAddr(t)
	a := newAPI(t, nil, func(c *Config) { c.LiveRedis = asynq.RedisClientOpt{Addr: closed, DialTimeout: 100 * time.Millisecond} })
	step := make(chan struct{})
	a.serveLive(step, talk)
	run := a.create(tokAcme, `{"image":"a","command":["talk"]}`)
	s := a.follow(tokAcme, run.ID, "")
	var evs []sseEvent
	for range 5 {
		step <- struct{}{}
		ev, _ := s.next(t)
		evs = append(evs, ev)
	}
	for range talk { // written, but not read while the run goes on
		step <- struct{}{}
	}
	for range 2 { // stop, commit
		step <- struct{}{}
		ev, _ := s.next(t)
		evs = append(evs, ev)
	}
	step <- struct{}{} // delete, and the end
	evs = append(evs, readAll(t, s)...)
	// The phases as they came, the output once the run ended (before or
	// after delete, which only the last result of the run has), then done.
	var phases, output []string
	for _, d := range strings.Split(describeAll(t, evs), "\n") {
		if strings.HasPrefix(d, "phase ") {
			phases = append(phases, d)
		} else {
			output = append(output, d)
		}
	}
	want := unquote(t, wantTalk)
	wantPhases := slices.Concat(want[:5], want[11:14])
	wantOutput := slices.Concat(want[5:11], want[14:])
	if !slices.Equal(phases, wantPhases) || !slices.Equal(output, wantOutput) {
		t.Errorf("events:\n%s\nwant the phases\n%s\nand the output\n%s", describeAll(t, evs), strings.Join(wantPhases, "\n"), strings.Join(wantOutput, "\n"))
	}
}
