package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/tasks"
)

// wantPhases are the phases the stand-in runs for a run with artifacts.
var wantPhases = []string{"pack", "create", "start", "ready", "exec", "artifacts", "stop", "commit", "delete"}

// TestEventsResume: a client that reads a few phases, goes away while the
// run goes on, and reconnects with Last-Event-ID gets every phase it has
// not seen, in order, once, then done; Last-Event-ID: done is a 204.
func TestEventsResume(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, nil)
	step := make(chan struct{})
	a.serve(step)
	run := a.create(tokAcme, `{"image":"a","command":["x"],"artifacts":["/out/a.txt"]}`)

	var seen []sseEvent
	s := a.follow(tokAcme, run.ID, "")
	for range 3 {
		step <- struct{}{}
		ev, _ := s.next(t)
		seen = append(seen, ev)
	}
	s.close()
	// Phases go on while nobody follows: pack...stop start, one of them
	// between two reads of the poller or not.
	for range 4 {
		step <- struct{}{}
	}
	last := seen[len(seen)-1].id
	s = a.follow(tokAcme, run.ID, last)
	go func() {
		for range 2 {
			step <- struct{}{}
		}
	}()
	for {
		ev, ok := s.next(t)
		if !ok {
			break
		}
		seen = append(seen, ev)
	}
	if err := <-s.done; err != nil {
		t.Errorf("stream ended with %v, want a clean end", err)
	}
	var phases []string
	for i, ev := range seen[:len(seen)-1] {
		var pe PhaseEvent
		if ev.name != EventPhase || json.Unmarshal([]byte(ev.data), &pe) != nil || ev.id != fmt.Sprintf("1-%d", i) || pe.Index != i || pe.Attempt != 1 {
			t.Errorf("event %d: %+v", i, ev)
		}
		phases = append(phases, pe.Phase)
	}
	if strings.Join(phases, " ") != strings.Join(wantPhases, " ") {
		t.Errorf("phases %q, want %q", phases, wantPhases)
	}
	done := seen[len(seen)-1]
	var final Run
	if done.name != EventDone || done.id != doneID || json.Unmarshal([]byte(done.data), &final) != nil || final.State != StateCompleted || final.ID != run.ID {
		t.Errorf("last event %+v", done)
	}
	var res tasks.Result
	if json.Unmarshal(final.Result, &res) != nil || len(res.Phases) != len(wantPhases) {
		t.Errorf("done's result %s", final.Result)
	}
	// Reconnecting after done: nothing more, and an EventSource stops.
	if r := a.do("GET", "/v1/runs/"+run.ID+"/events", tokAcme, "", "Last-Event-ID: done"); r.status != http.StatusNoContent {
		t.Errorf("Last-Event-ID: done: %d %s", r.status, r.body)
	}
	// A reconnect after the run ended, from the middle: the rest, then done.
	s = a.follow(tokAcme, run.ID, "1-6")
	var rest []string
	for ev, ok := s.next(t); ok; ev, ok = s.next(t) {
		rest = append(rest, ev.id)
	}
	if strings.Join(rest, " ") != "1-7 1-8 done" {
		t.Errorf("after 1-6 of a finished run: %q", rest)
	}
}

// TestEventsOnePoller: many clients of one run share one poller, and all
// get the same events.
func TestEventsOnePoller(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, nil)
	step := make(chan struct{})
	a.serve(step)
	run := a.create(tokAcme, hello)
	const n = 5
	streams := make([]*sse, n)
	for i := range streams {
		streams[i] = a.follow(tokAcme, run.ID, "")
	}
	step <- struct{}{}
	for i, s := range streams {
		if ev, _ := s.next(t); ev.id != "1-0" {
			t.Errorf("stream %d: %+v", i, ev)
		}
	}
	m := string(a.do("GET", "/metrics", "", "").body)
	if !strings.Contains(m, fmt.Sprintf("bottleq_api_event_streams %d\n", n)) || !strings.Contains(m, "bottleq_api_event_pollers 1\n") {
		t.Errorf("metrics with %d streams of one run:\n%s", n, grep(m, "bottleq_api_event"))
	}
	for range 7 {
		step <- struct{}{}
	}
	for i, s := range streams {
		var ids []string
		for ev, ok := s.next(t); ok; ev, ok = s.next(t) {
			ids = append(ids, ev.id)
		}
		if strings.Join(ids, " ") != "1-1 1-2 1-3 1-4 1-5 1-6 1-7 done" {
			t.Errorf("stream %d: %q", i, ids)
		}
	}
}

// TestEventsRetry: a failed attempt's phases, then the next attempt's,
// each under its own attempt number.
func TestEventsRetry(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, nil)
	step := make(chan struct{})
	a.serve(step)
	run := a.create(tokAcme, `{"image":"a","command":["flaky"]}`)
	s := a.follow(tokAcme, run.ID, "")
	var ids []string
	for range 5 {
		step <- struct{}{}
		ev, _ := s.next(t)
		ids = append(ids, ev.id)
	}
	go func() {
		for range 8 {
			step <- struct{}{}
		}
	}()
	for ev, ok := s.next(t); ok; ev, ok = s.next(t) {
		ids = append(ids, ev.id)
	}
	if got := strings.Join(ids, " "); got != "1-0 1-1 1-2 1-3 1-4 2-0 2-1 2-2 2-3 2-4 2-5 2-6 2-7 done" {
		t.Errorf("events %q", got)
	}
	if r := a.do("GET", "/v1/runs/"+run.ID, tokAcme, "").run(t); r.Attempts != 2 || r.State != StateCompleted {
		t.Errorf("run %+v", r)
	}
}

// TestEventsStreamsEndOnClose: CloseStreams, which the HTTP server's
// shutdown calls, ends open streams cleanly, and refuses new ones.
func TestEventsStreamsEndOnClose(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, nil)
	run := a.create(tokAcme, `{"image":"a","command":["x"],"queue":"fast"}`) // no worker: stays pending
	s := a.follow(tokAcme, run.ID, "")
	a.s.CloseStreams()
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("stream ended with %v, want a clean end", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end within 10s of CloseStreams")
	}
	r := a.do("GET", "/v1/runs/"+run.ID+"/events", tokAcme, "")
	if r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Errorf("a stream opened while shutting down: %d %s", r.status, r.body)
	}
}

// TestLastEventID reads Last-Event-ID.
func TestLastEventID(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want cursor
		bad  bool
	}{
		{"", cursor{index: -1}, false},
		{"done", cursor{done: true}, false},
		{"1-0", cursor{attempt: 1}, false},
		{" 3-12 ", cursor{attempt: 3, index: 12}, false},
		{"0-1", cursor{}, true},
		{"1--1", cursor{}, true},
		{"1", cursor{}, true},
		{"a-b", cursor{}, true},
		{"1-4/1733050000000-3", cursor{attempt: 1, index: 4, out: "1733050000000-3"}, false},
		{"0/1733050000000-0", cursor{index: -1, out: "1733050000000-0"}, false},
		{"0", cursor{}, true},
		{"1-4/", cursor{}, true},
		{"1-4/x-1", cursor{}, true},
		{"1-4/1733050000000", cursor{}, true},
		{"/1733050000000-0", cursor{}, true},
	} {
		got, e := parseLastEventID(tt.in)
		if (e != nil) != tt.bad || !tt.bad && got != tt.want {
			t.Errorf("parseLastEventID(%q) = %+v, %v", tt.in, got, e)
		}
		if in := strings.TrimSpace(tt.in); !tt.bad && in != "" && in != doneID && got.String() != in {
			t.Errorf("parseLastEventID(%q).String() = %q", tt.in, got.String())
		}
	}
}

// TestStartedPhases: the phases an attempt started, from a result.
func TestStartedPhases(t *testing.T) {
	t.Parallel()
	r := tasks.Result{State: tasks.StateRunning, Phase: "exec"}
	r.Add("pack", 0)
	r.Add("create", 0)
	if got := strings.Join(startedPhases(r), " "); got != "pack create exec" {
		t.Errorf("running: %q", got)
	}
	r.Add("exec", 0)
	r.Error = "exec: boom"
	if got := strings.Join(startedPhases(r), " "); got != "pack create exec" {
		t.Errorf("failed in exec: %q", got)
	}
	r.Error, r.State = "", tasks.StateDone
	r.Add("delete", 0)
	if got := strings.Join(startedPhases(r), " "); got != "pack create exec delete" {
		t.Errorf("done: %q", got)
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
