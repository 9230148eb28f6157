package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bot-bottle/bottleq/tasks"
)

// Event names of GET /v1/runs/{id}/events.
const (
	// EventPhase: the run started a phase. Its ID is "ATTEMPT-INDEX" and
	// its data {"attempt", "index", "phase"}.
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

// cursor is the last event a client has seen.
type cursor struct {
	attempt, index int
	done           bool
}

func parseLastEventID(s string) (cursor, *Error) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return cursor{index: -1}, nil
	case doneID:
		return cursor{done: true}, nil
	}
	a, i, ok := strings.Cut(s, "-")
	an, aerr := strconv.Atoi(a)
	in, ierr := strconv.Atoi(i)
	if !ok || aerr != nil || ierr != nil || an < 1 || in < 0 {
		return cursor{}, invalid("Last-Event-ID", "Last-Event-ID: must be an ID this stream sent: ATTEMPT-INDEX or done")
	}
	return cursor{attempt: an, index: in}, nil
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
}

func (st *stream) event(name, id string, data any) error {
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

// send writes the events of ri the client has not seen: the phases of
// the attempt ri is on past the cursor, then done if ri is final. It
// reports whether the stream is over.
func (st *stream) send(ri *runInfo) (bool, error) {
	if ri.hasRes && ri.res.Attempt > 0 {
		a, names := ri.res.Attempt, startedPhases(ri.res)
		from := 0
		switch {
		case st.cur.attempt == a:
			from = st.cur.index + 1
		case st.cur.attempt > a: // seen on a replica that read it later
			from = len(names)
		}
		for i := from; i < len(names); i++ {
			if err := st.event(EventPhase, fmt.Sprintf("%d-%d", a, i), PhaseEvent{Attempt: a, Index: i, Phase: names[i]}); err != nil {
				return true, err
			}
			st.cur = cursor{attempt: a, index: i}
		}
	}
	if ri.final() {
		return true, st.event(EventDone, doneID, ri.Run)
	}
	return false, nil
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
	st := &stream{w: w, rc: http.NewResponseController(w), cur: cur}
	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()
	if err := st.comment("run " + ri.ID); err != nil {
		return
	}
	if over, err := st.send(ri); over || err != nil {
		return
	}
	p := s.hub.subscribe(ri)
	defer s.hub.unsubscribe(p)
	ka := time.NewTicker(keepAlive)
	defer ka.Stop()
	for {
		snap, changed := p.latest()
		switch {
		case snap.gone:
			st.event(EventError, "", struct {
				Error *Error `json:"error"`
			}{errNoRun(ri.ID)})
			return
		case snap.run != nil:
			if over, err := st.send(snap.run); over || err != nil {
				return
			}
		}
		select {
		case <-changed:
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
