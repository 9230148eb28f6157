package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bot-bottle/bottleq/internal/livelog"
	"github.com/bot-bottle/bottleq/tasks"
)

// Event names of GET /v1/runs/{id}/events (the live output's are in
// live.go). Every event but done has the stream's place as its ID (see
// cursor.String), which a client sends back as Last-Event-ID to resume.
const (
	// EventPhase: the run started a phase. Its ID begins "ATTEMPT-INDEX"
	// and its data is a PhaseEvent.
	EventPhase = "phase"
	// EventDone: the run ended (completed, archived or cancelled). Its ID
	// is "done" and its data the Run, result included. The stream ends.
	EventDone = "done"
	// EventError: the run disappeared while followed (deleted, or its
	// retention ran out). Its data is an error object. The stream ends.
	EventError = "error"
)

// doneID is the ID of the done event. A client that sends it back as
// Last-Event-ID has seen everything: it gets 204, which tells an
// EventSource to stop reconnecting.
const doneID = "done"

// PhaseEvent is the data of an EventPhase.
type PhaseEvent struct {
	// Attempt is the delivery the phase belongs to, from 1.
	Attempt int `json:"attempt"`
	// Index is the phase's place in the attempt, from 0.
	Index int `json:"index"`
	// Phase is the phase's name (tasks.PhasePack ...).
	Phase string `json:"phase"`
}

// cursor is the last event a client has seen: the last phase (attempt 0:
// none) and the ID of the last live output entry passed ("": none).
type cursor struct {
	attempt, index int
	out            string
	done           bool
}

// String is the cursor as an event ID: "ATTEMPT-INDEX", or "0" before any
// phase, followed by "/" and the live output entry ID once there is one.
func (c cursor) String() string {
	p := "0"
	if c.attempt > 0 {
		p = fmt.Sprintf("%d-%d", c.attempt, c.index)
	}
	if c.out == "" {
		return p
	}
	return p + "/" + c.out
}

// after is where the live output resumes: after c.out, or from the start.
func (c cursor) after() string {
	if c.out == "" {
		return "0"
	}
	return c.out
}

func parseLastEventID(s string) (cursor, *Error) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return cursor{index: -1}, nil
	case doneID:
		return cursor{done: true}, nil
	}
	bad := invalid("Last-Event-ID", "Last-Event-ID: must be an ID this stream sent: ATTEMPT-INDEX[/OUTPUT-ID], 0/OUTPUT-ID or done")
	phase, out, hasOut := strings.Cut(s, "/")
	c := cursor{index: -1}
	if hasOut {
		if !livelog.ValidID(out) || !strings.Contains(out, "-") {
			return cursor{}, bad
		}
		c.out = out
	}
	if phase == "0" && hasOut {
		return c, nil
	}
	a, i, ok := strings.Cut(phase, "-")
	an, aerr := strconv.Atoi(a)
	in, ierr := strconv.Atoi(i)
	if !ok || aerr != nil || ierr != nil || an < 1 || in < 0 {
		return cursor{}, bad
	}
	c.attempt, c.index = an, in
	return c, nil
}

// startedPhases lists the phases an attempt has started, in order: the
// finished ones, then the one in progress. The list only grows while the
// attempt runs, which makes a phase's index a stable event ID.
func startedPhases(r tasks.Result) []string {
	names := make([]string, 0, len(r.Phases)+1)
	for _, p := range r.Phases {
		names = append(names, p.Name)
	}
	if r.State == tasks.StateRunning && r.Error == "" && r.Phase != "" {
		names = append(names, r.Phase)
	}
	return names
}

// stream writes events to one client.
type stream struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	cur cursor
	// run is the latest read of the run.
	run *runInfo
	// Where the live output is: the attempt its latest entries are of,
	// the phase its latest phase entry named, and whether that attempt's
	// end entry came. Phases of that attempt are sent no further than
	// the live output has come, so that phases and output arrive in the
	// order they happened.
	liveAttempt int
	livePhase   string
	liveEnded   bool
	// replay: the run has ended and its whole live output is being
	// read, so the phases of an attempt wait for its entries.
	replay bool
}

func (st *stream) event(name string, data any) error {
	return st.eventID(name, st.cur.String(), data)
}

func (st *stream) eventID(name, id string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "event: %s\nid: %s\ndata: %s\n\n", name, id, b)
	if _, err := st.w.Write(buf.Bytes()); err != nil {
		return err
	}
	return st.rc.Flush()
}

func (st *stream) comment(text string) error {
	if _, err := fmt.Fprintf(st.w, ": %s\n\n", text); err != nil {
		return err
	}
	return st.rc.Flush()
}

// phases writes the phase events of ri the client has not seen: those of
// the attempt ri is on past the cursor, up to where the live output of
// that attempt has come (until its end entry). In a replay, an attempt
// whose entries have not come yet gets none.
func (st *stream) phases(ri *runInfo) error {
	if ri == nil || !ri.hasRes || ri.res.Attempt < 1 {
		return nil
	}
	a, names := ri.res.Attempt, startedPhases(ri.res)
	from := 0
	switch {
	case st.cur.attempt == a:
		from = st.cur.index + 1
	case st.cur.attempt > a: // seen on a replica that read it later
		from = len(names)
	}
	to := len(names)
	switch i := slices.Index(names, st.livePhase); {
	case a == st.liveAttempt && st.liveEnded:
	case a == st.liveAttempt && i >= 0:
		to = i + 1
	case st.replay && a >= st.liveAttempt:
		to = 0
	}
	for i := from; i < to; i++ {
		st.cur.attempt, st.cur.index = a, i
		if err := st.event(EventPhase, PhaseEvent{Attempt: a, Index: i, Phase: names[i]}); err != nil {
			return err
		}
	}
	return nil
}

// knows reports whether the run as last read has come to phase of
// attempt.
func (st *stream) knows(attempt int, phase string) bool {
	ri := st.run
	if ri == nil || !ri.hasRes {
		return false
	}
	return ri.res.Attempt > attempt || ri.res.Attempt == attempt && slices.Contains(startedPhases(ri.res), phase)
}

// passLive passes on what a read of the live output got, with the phases
// before each entry first. A phase the run as last read has not come to
// yet (the worker writes its result and its live output apart) makes it
// read the run again, once per phase entry, and share what it read with
// the run's poller.
func (s *Server) passLive(ctx context.Context, st *stream, p *poller, r liveRead) error {
	for _, e := range r.entries {
		if e.Attempt > st.liveAttempt {
			st.liveAttempt, st.livePhase, st.liveEnded = e.Attempt, "", false
		}
		st.cur.out = e.ID
		current := e.Attempt == st.liveAttempt // else an earlier attempt's, written late
		var err error
		switch e.Kind {
		case livelog.KindAttempt:
			if current { // a delivery again under the same attempt
				st.livePhase, st.liveEnded = "", false
			}
		case livelog.KindPhase:
			if !current {
				break
			}
			st.livePhase = e.Phase
			if !st.knows(e.Attempt, e.Phase) {
				if ri, found, rerr := s.read(ctx, st.run.Queue, st.run.ID); rerr == nil && found {
					st.run = ri
					if p != nil {
						p.publish(snapshot{run: ri}, signature(ri))
					}
				}
			}
			err = st.phases(st.run)
		case livelog.KindOutput:
			if current && st.livePhase == "" {
				st.livePhase = tasks.PhaseExec // only exec writes output
			}
			if err = st.phases(st.run); err == nil {
				name := EventStdout
				if e.Stream == livelog.Stderr {
					name = EventStderr
				}
				err = st.event(name, outputEvent(e))
			}
		case livelog.KindTruncated:
			err = st.event(EventTruncated, TruncatedEvent{Attempt: e.Attempt, Reason: e.Reason, StdoutDropped: e.StdoutDropped, StderrDropped: e.StderrDropped})
		case livelog.KindEnd:
			if current {
				st.liveEnded = true
				err = st.phases(st.run)
			}
		}
		if err != nil {
			return err
		}
	}
	st.cur.out = r.last
	return nil
}

// finish writes what is left of run ri, which has ended: the live output
// written before it ended with the phases in between, the phases left,
// then done.
func (s *Server) finish(ctx context.Context, st *stream, ri *runInfo) error {
	st.run, st.replay = ri, true
	for {
		r, err := readLive(ctx, s.rdb, ri.Queue, ri.ID, st.cur.after(), 0)
		if err != nil && ctx.Err() != nil {
			return err // the client went away
		}
		if err != nil {
			// The result keeps the output's head and tail.
			s.cfg.Log.Warn().Err(err).Str("run_id", ri.ID).Msg("events: reading the live output of an ended run failed; sending done")
			break
		}
		if r.last == "" {
			break
		}
		if err := s.passLive(ctx, st, nil, r); err != nil {
			return err
		}
	}
	st.run, st.replay = ri, false
	st.liveAttempt, st.liveEnded = max(st.liveAttempt, ri.res.Attempt), true
	if err := st.phases(ri); err != nil {
		return err
	}
	return st.eventID(EventDone, doneID, ri.Run)
}

func (s *Server) events(w http.ResponseWriter, r *http.Request, g Grant) {
	cur, e := parseLastEventID(r.Header.Get("Last-Event-ID"))
	if e != nil {
		writeError(w, e)
		return
	}
	ri, e := s.lookup(r.Context(), g, r.PathValue("id"))
	if e != nil {
		writeError(w, e)
		return
	}
	if cur.done {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	select {
	case <-s.stopping:
		e := errorf(http.StatusServiceUnavailable, CodeUnavailable, "", "the API is shutting down; reconnect")
		e.RetryAfter = time.Second
		writeError(w, e)
		return
	default:
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	st := &stream{w: w, rc: http.NewResponseController(w), cur: cur, run: ri}
	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()
	if err := st.comment("run " + ri.ID); err != nil {
		return
	}
	ctx := r.Context()
	if ri.final() {
		s.finish(ctx, st, ri)
		return
	}
	if st.phases(ri) != nil {
		return
	}
	p := s.hub.subscribe(ri)
	defer s.hub.unsubscribe(p)
	live := make(chan liveRead)
	tailCtx, stopTail := context.WithCancel(ctx)
	defer stopTail()
	go s.tail(tailCtx, ri.Queue, ri.ID, st.cur.after(), live)
	ka := time.NewTicker(keepAlive)
	defer ka.Stop()
	// seen passes on what the poller read; it reports whether the stream
	// is over.
	seen := func(snap snapshot) bool {
		switch {
		case snap.gone:
			st.event(EventError, struct {
				Error *Error `json:"error"`
			}{errNoRun(ri.ID)})
			return true
		case snap.run == nil:
			return false
		case snap.run.final():
			stopTail() // finish reads what is left itself
			s.finish(ctx, st, snap.run)
			return true
		}
		st.run = snap.run
		return st.phases(snap.run) != nil
	}
	snap, changed := p.latest()
	if seen(snap) {
		return
	}
	for {
		select {
		case <-changed:
			snap, changed = p.latest()
			if seen(snap) {
				return
			}
		case lr := <-live:
			if s.passLive(ctx, st, p, lr) != nil {
				return
			}
		case <-ka.C:
			if st.comment("keep-alive") != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-s.stopping:
			st.comment("the API is shutting down; reconnect with Last-Event-ID")
			return
		}
	}
}

// snapshot is what a poller read last.
type snapshot struct {
	run  *runInfo
	gone bool
}

// poller reads one run for every stream that follows it.
type poller struct {
	queue, id string
	refs      int // guarded by hub.mu

	mu      sync.Mutex
	snap    snapshot
	sig     string        // what snap was read from, to tell a change
	changed chan struct{} // closed when snap changes
}

func (p *poller) latest() (snapshot, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.snap, p.changed
}

func (p *poller) publish(snap snapshot, sig string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if sig == p.sig {
		return
	}
	p.snap, p.sig = snap, sig
	close(p.changed)
	p.changed = make(chan struct{})
}

// hub keeps one poller per followed run.
type hub struct {
	s        *Server
	interval time.Duration
	mu       sync.Mutex
	pollers  map[string]*poller
	wg       sync.WaitGroup
}

func newHub(s *Server, interval time.Duration) *hub {
	return &hub{s: s, interval: interval, pollers: map[string]*poller{}}
}

// subscribe returns the poller of run ri, starting one if there is none.
func (h *hub) subscribe(ri *runInfo) *poller {
	key := ri.Queue + " " + ri.ID
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.pollers[key]
	if !ok {
		p = &poller{queue: ri.Queue, id: ri.ID, snap: snapshot{run: ri}, sig: signature(ri), changed: make(chan struct{})}
		h.pollers[key] = p
		h.wg.Add(1)
		go h.poll(key, p)
	}
	p.refs++
	return p
}

func (h *hub) unsubscribe(p *poller) {
	h.mu.Lock()
	p.refs--
	h.mu.Unlock()
}

// wait returns once every poller has stopped.
func (h *hub) wait() { h.wg.Wait() }

// signature is what tells one read of a run from the next.
func signature(ri *runInfo) string {
	if ri == nil {
		return "gone"
	}
	return fmt.Sprintf("%s\x00%d\x00%s\x00%s", ri.State, ri.info.Retried, ri.LastError, ri.info.Result)
}

// poll reads the run every interval while any stream follows it, until
// it ends or disappears.
func (h *hub) poll(key string, p *poller) {
	defer h.wg.Done()
	h.s.metrics.pollers.Inc()
	defer h.s.metrics.pollers.Dec()
	stop := func(force bool) bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		if force || p.refs == 0 {
			delete(h.pollers, key)
			return true
		}
		return false
	}
	t := time.NewTimer(h.interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-t.C:
		case <-h.s.stopping:
			stop(true)
			return
		}
		if stop(false) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ri, found, err := h.s.read(ctx, p.queue, p.id)
		cancel()
		h.s.metrics.polls.Inc()
		switch {
		case err != nil:
			if !failing { // once, not at every poll while Redis is away
				h.s.cfg.Log.Warn().Err(err).Str("run_id", p.id).Msg("events: reading the run failed; trying again")
			}
			failing = true
		case !found:
			failing = false
			p.publish(snapshot{gone: true}, signature(nil))
			stop(true)
			return
		default:
			failing = false
			p.publish(snapshot{run: ri}, signature(ri))
			if ri.final() {
				stop(true)
				return
			}
		}
		t.Reset(h.interval)
	}
}
