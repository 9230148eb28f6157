package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/cancelmark"
	"github.com/bot-bottle/bottleq/tasks"
)

// Run states, as a Run's State says them.
const (
	// StatePending: waiting to run (asynq's pending, scheduled or
	// aggregating).
	StatePending = "pending"
	// StateActive: a worker runs it now.
	StateActive = "active"
	// StateRetry: an attempt failed; it waits for its next one.
	StateRetry = "retry"
	// StateCompleted: the command ran to an exit code (see the result's
	// exit_code, which may be non-zero).
	StateCompleted = "completed"
	// StateArchived: the worker gave up on it (last_error says why).
	StateArchived = "archived"
	// StateCancelled: a user cancelled it; it will not run again.
	StateCancelled = "cancelled"
)

// Run is a run as the API shows it: the task's state in the queue and the
// result the worker wrote.
type Run struct {
	// ID is the run's ID, the asynq task ID; a later run starts from its
	// commit with from "task:ID".
	ID string `json:"id"`
	// State is one of the State constants.
	State string `json:"state"`
	// Queue and Tenant say where it runs and whose it is.
	Queue  string `json:"queue"`
	Tenant string `json:"tenant"`
	// Attempts counts the deliveries to a worker so far.
	Attempts int `json:"attempts"`
	// MaxRetry is how many retries the run allows.
	MaxRetry int `json:"max_retry"`
	// LastError is the error of the last failed attempt.
	LastError string `json:"last_error,omitempty"`
	// NextAttemptAt is when a run in StateRetry is tried again.
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	// CompletedAt is when a completed run finished.
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	// Result is the worker's result object as it wrote it (tasks.Result):
	// its progress while the run is active, the final result once it is
	// completed. Absent before the worker writes one.
	Result json.RawMessage `json:"result,omitempty"`
}

// final reports whether the run has ended for good.
func (r Run) final() bool {
	return r.State == StateCompleted || r.State == StateArchived || r.State == StateCancelled
}

// runInfo is a run with its decoded result and task.
type runInfo struct {
	Run
	res    tasks.Result
	hasRes bool
	info   *asynq.TaskInfo
}

// maxIDLen bounds a run ID in a path; longer ones cannot exist.
const maxIDLen = 256

func validID(id string) bool {
	if id == "" || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] == 0x7f {
			return false
		}
	}
	return true
}

// errNoRun is the 404 of a run that is missing or another tenant's: the
// two read the same.
func errNoRun(id string) *Error {
	return errorf(http.StatusNotFound, CodeNotFound, "id", "no run "+id)
}

func errRedis(err error) *Error {
	e := errorf(http.StatusServiceUnavailable, CodeUnavailable, "", "the queue's Redis did not answer")
	e.RetryAfter = time.Second
	return e
}

// lookup finds run id among the queues g may use and returns it if it is
// g's tenant's.
func (s *Server) lookup(ctx context.Context, g Grant, id string) (*runInfo, *Error) {
	if !validID(id) {
		return nil, errNoRun(id)
	}
	var candidates []string
	if q, ok := s.queues.get(id); ok && g.Allows(q) {
		candidates = append(candidates, q)
	}
	if g.Queues != nil {
		candidates = append(candidates, g.Queues...)
	} else {
		all, err := s.insp.Queues()
		if err != nil {
			return nil, errRedis(err)
		}
		slices.Sort(all)
		candidates = append(candidates, all...)
	}
	tried := map[string]bool{}
	for _, q := range candidates {
		if tried[q] {
			continue
		}
		tried[q] = true
		info, err := s.insp.GetTaskInfo(q, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
			continue
		case err != nil:
			return nil, errRedis(err)
		}
		ri, ok, err := s.view(ctx, info)
		if err != nil {
			return nil, errRedis(err)
		}
		if !ok || ri.Tenant != g.Tenant {
			return nil, errNoRun(id)
		}
		s.queues.put(id, q)
		return ri, nil
	}
	return nil, errNoRun(id)
}

// read reads a run whose queue is known, for the event pollers: found is
// false when the task no longer exists.
func (s *Server) read(ctx context.Context, queue, id string) (ri *runInfo, found bool, err error) {
	info, err := s.insp.GetTaskInfo(queue, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	}
	return s.view(ctx, info)
}

// view turns asynq's task into a Run. ok is false for a task that is no
// agent:run or whose payload names no readable tenant. An archived task
// is cancelled when its result or its cancel mark says so.
func (s *Server) view(ctx context.Context, info *asynq.TaskInfo) (*runInfo, bool, error) {
	if info.Type != tasks.TypeAgentRun {
		return nil, false, nil
	}
	var p struct {
		Tenant string `json:"tenant"`
	}
	if json.Unmarshal(info.Payload, &p) != nil {
		return nil, false, nil
	}
	ri := &runInfo{info: info, Run: Run{
		ID:        info.ID,
		Queue:     info.Queue,
		Tenant:    tasks.AgentRun{Tenant: p.Tenant}.TenantName(),
		MaxRetry:  info.MaxRetry,
		LastError: info.LastErr,
	}}
	if len(info.Result) > 0 && json.Unmarshal(info.Result, &ri.res) == nil {
		ri.hasRes = true
		ri.Result = json.RawMessage(info.Result)
	}
	switch info.State {
	case asynq.TaskStateActive:
		ri.State = StateActive
	case asynq.TaskStateRetry:
		ri.State = StateRetry
		if !info.NextProcessAt.IsZero() {
			t := info.NextProcessAt.UTC()
			ri.NextAttemptAt = &t
		}
	case asynq.TaskStateCompleted:
		ri.State = StateCompleted
		if !info.CompletedAt.IsZero() {
			t := info.CompletedAt.UTC()
			ri.CompletedAt = &t
		}
	case asynq.TaskStateArchived:
		ri.State = StateArchived
	default: // pending, scheduled, aggregating
		ri.State = StatePending
	}
	switch {
	case ri.hasRes && ri.res.State == tasks.StateCancelled:
		ri.State = StateCancelled
	case info.State == asynq.TaskStateArchived:
		// The mark comes first, the cancelled result a moment later.
		by, err := cancelmark.Get(ctx, s.rdb, info.Queue, info.ID)
		if err != nil {
			return nil, false, err
		}
		if by != "" {
			ri.State = StateCancelled
		}
	}
	ri.Attempts = max(info.Retried, ri.res.Attempt)
	if info.State == asynq.TaskStateActive {
		ri.Attempts = max(ri.Attempts, info.Retried+1)
	}
	return ri, true, nil
}

func (s *Server) getRun(w http.ResponseWriter, r *http.Request, g Grant) {
	ri, e := s.lookup(r.Context(), g, r.PathValue("id"))
	if e != nil {
		writeError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, ri.Run)
}

// queueCache remembers which queue holds a run ID, so that a run is found
// with one read. A task never changes queue.
type queueCache struct {
	mu  sync.Mutex
	max int
	m   map[string]string
}

func newQueueCache(n int) *queueCache { return &queueCache{max: n, m: map[string]string{}} }

func (c *queueCache) get(id string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q, ok := c.m[id]
	return q, ok
}

func (c *queueCache) put(id, q string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[id]; !ok && len(c.m) >= c.max {
		for k := range c.m { // drop an arbitrary entry
			delete(c.m, k)
			break
		}
	}
	c.m[id] = q
}
