package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/internal/validate"
	"github.com/bot-bottle/bottleq/tasks"
)

// maxRetryLimit is the most retries a run may ask for.
const maxRetryLimit = 100

// maxKeyLen bounds an Idempotency-Key.
const maxKeyLen = 255

// createRequest is a POST /v1/runs body, read: the payload and how asynq
// handles the task.
type createRequest struct {
	Payload     tasks.AgentRun `json:"payload"`
	Queue       string         `json:"queue"`
	MaxRetry    *int           `json:"max_retry"`
	TaskTimeout tasks.Duration `json:"task_timeout"`
}

// fingerprint identifies what a request asks for, so that an
// Idempotency-Key sent again with another request is caught.
func (c createRequest) fingerprint() string {
	b, _ := json.Marshal(c) // our own types: always encodes
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (c createRequest) options() enqueue.Options {
	o := enqueue.Options{Queue: c.Queue, Timeout: time.Duration(c.TaskTimeout)}
	if c.MaxRetry != nil {
		o.MaxRetry = *c.MaxRetry
		if o.MaxRetry == 0 {
			o.MaxRetry = enqueue.NoRetry
		}
	}
	return o
}

// parseCreate reads a POST /v1/runs body for grant g: the agent:run
// payload, checked by tasks.Decode exactly as the worker checks it, plus
// "queue", "max_retry" and "task_timeout".
func (s *Server) parseCreate(body []byte, g Grant) (createRequest, *Error) {
	var c createRequest
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		return c, invalid("payload", "payload: is not a JSON object")
	}
	if raw, ok := m["queue"]; ok {
		delete(m, "queue")
		if err := json.Unmarshal(raw, &c.Queue); err != nil {
			return c, invalid("queue", "queue: must be a string")
		}
		if err := validate.Queue(c.Queue); err != nil {
			return c, invalid("queue", "queue: "+err.Error())
		}
	}
	if c.Queue == "" {
		c.Queue = tasks.DefaultQueue
	}
	if raw, ok := m["max_retry"]; ok {
		delete(m, "max_retry")
		var n int
		if err := json.Unmarshal(raw, &n); err != nil {
			return c, invalid("max_retry", "max_retry: must be a whole number")
		}
		if n < 0 || n > maxRetryLimit {
			return c, invalid("max_retry", fmt.Sprintf("max_retry: %d is out of range: 0 (no retry) to %d", n, maxRetryLimit))
		}
		c.MaxRetry = &n
	}
	if raw, ok := m["task_timeout"]; ok {
		delete(m, "task_timeout")
		if err := json.Unmarshal(raw, &c.TaskTimeout); err != nil {
			return c, invalid("task_timeout", "task_timeout: "+strings.TrimPrefix(err.Error(), "json: "))
		}
	}
	rest, err := json.Marshal(m)
	if err != nil {
		return c, invalid("payload", "payload: is not a JSON object")
	}
	p, err := tasks.Decode(rest)
	if err != nil {
		return c, asError(err)
	}
	if p.Tenant != "" && p.Tenant != g.Tenant {
		return c, errorf(http.StatusForbidden, CodeForbidden, "tenant",
			fmt.Sprintf("tenant: this token starts runs of tenant %s only; leave tenant out or set it to %s", g.Tenant, g.Tenant))
	}
	p.Tenant = g.Tenant
	if p.From != "" {
		if _, ok := p.FromTask(); !ok {
			return c, invalid("from", `from: only "task:ID" (a run's commit) is accepted through the API, no host paths`)
		}
	}
	if n := p.FilesBytes(); n > s.cfg.MaxFilesBytes {
		return c, errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "files",
			fmt.Sprintf("files: %s in total, over this API's cap of %s", tasks.FormatBytes(n), tasks.FormatBytes(s.cfg.MaxFilesBytes)))
	}
	if t := time.Duration(c.TaskTimeout); t != 0 {
		switch {
		case t < time.Second:
			return c, invalid("task_timeout", fmt.Sprintf("task_timeout: %s is shorter than a second", t))
		case t < p.CommandTimeout():
			return c, invalid("task_timeout", fmt.Sprintf("task_timeout: %s is shorter than the command's timeout %s", t, p.CommandTimeout()))
		}
	}
	if !g.Allows(c.Queue) {
		return c, errorf(http.StatusForbidden, CodeForbidden, "queue", fmt.Sprintf("queue: this token may not use queue %s", c.Queue))
	}
	c.Payload = p
	return c, nil
}

// checkJSONType refuses a body that says it is not JSON.
func checkJSONType(r *http.Request) *Error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return errorf(http.StatusUnsupportedMediaType, CodeUnsupportedType, "Content-Type", "the body must be JSON: Content-Type: application/json")
	}
	return nil
}

func (s *Server) createRun(w http.ResponseWriter, r *http.Request, g Grant) {
	if e := checkJSONType(r); e != nil {
		writeError(w, e)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if key != "" {
		if len(key) > maxKeyLen || strings.ContainsFunc(key, func(c rune) bool { return c < ' ' || c > '~' }) {
			writeError(w, invalid("Idempotency-Key", fmt.Sprintf("Idempotency-Key: must be 1 to %d printable ASCII characters", maxKeyLen)))
			return
		}
	}
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(time.Minute))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		writeError(w, errorf(http.StatusRequestEntityTooLarge, CodeTooLarge, "payload",
			fmt.Sprintf("payload: the body is over this API's cap of %s", tasks.FormatBytes(s.cfg.MaxBodyBytes))))
		return
	case err != nil:
		writeError(w, invalid("payload", "payload: the body could not be read"))
		return
	}
	c, e := s.parseCreate(body, g)
	if e != nil {
		writeError(w, e)
		return
	}
	run, created, e := s.start(r.Context(), g, c, key)
	if e != nil {
		if e.Status >= 500 {
			s.cfg.Log.Error().Str("tenant", g.Tenant).Str("error_code", e.Code).Msg("run not started")
		}
		writeError(w, e)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/v1/runs/"+run.ID)
	}
	writeJSON(w, status, run)
}

// Redis keys of the API's own, per tenant; the braces keep a tenant's
// keys in one Redis Cluster slot.
func idemKey(tenant, key string) string {
	sum := sha256.Sum256([]byte(key))
	return "bottleq:api:{" + tenant + "}:idem:" + hex.EncodeToString(sum[:])
}

func openKey(tenant string) string { return "bottleq:api:{" + tenant + "}:open" }

// keyedID is the run ID of an Idempotency-Key: the same for every request
// of the tenant with the key, so that asynq's own check of task IDs, which
// is atomic, lets one task in.
func keyedID(tenant, key string) string {
	sum := sha256.Sum256([]byte("bottleq-api\x00" + tenant + "\x00" + key))
	return hex.EncodeToString(sum[:16])
}

// newID returns a random UUID (version 4).
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// forgetKey removes an idempotency record if it still says rec.
var forgetKey = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0
`)

// start enqueues the run c asks for, or returns the run an earlier
// request with the same Idempotency-Key started (created false).
//
// With a key, the run ID is keyedID, and a record of the key (its queue
// and the request's fingerprint) pins the queue: asynq refuses a second
// task of an ID in a queue atomically, and the record keeps every request
// with the key on one queue, so concurrent requests start one task
// whichever gets there first, and a request that finds the record but no
// task (its first request died before enqueueing) starts it itself.
func (s *Server) start(ctx context.Context, g Grant, c createRequest, key string) (Run, bool, *Error) {
	id, won := newID(), false
	var ik, rec string
	if key != "" {
		id, ik, rec = keyedID(g.Tenant, key), idemKey(g.Tenant, key), c.Queue+" "+c.fingerprint()
		var err error
		if won, err = s.rdb.SetNX(ctx, ik, rec, idempotencyTTL).Result(); err != nil {
			return Run{}, false, errRedis(err)
		}
		if !won {
			old, err := s.rdb.Get(ctx, ik).Result()
			switch {
			case errors.Is(err, redis.Nil): // expired just now: take it
				if won, err = s.rdb.SetNX(ctx, ik, rec, idempotencyTTL).Result(); err != nil {
					return Run{}, false, errRedis(err)
				}
				old = rec
			case err != nil:
				return Run{}, false, errRedis(err)
			}
			if old != rec {
				return Run{}, false, errorf(http.StatusUnprocessableEntity, CodeKeyReused, "Idempotency-Key",
					"Idempotency-Key: this key was used with another request; send a new key for a new run")
			}
			s.rdb.Expire(ctx, ik, idempotencyTTL)
			if ri, found, err := s.read(ctx, c.Queue, id); err != nil {
				return Run{}, false, errRedis(err)
			} else if found && ri.Tenant == g.Tenant {
				return ri.Run, false, nil
			}
		}
	}
	member := c.Queue + " " + id
	if e := s.reserve(ctx, g.Tenant, member); e != nil {
		if won {
			forgetKey.Run(context.WithoutCancel(ctx), s.rdb, []string{ik}, rec)
		}
		return Run{}, false, e
	}
	o := c.options()
	o.TaskID, o.MaxFilesBytes = id, s.cfg.MaxFilesBytes
	info, err := s.enq.Enqueue(ctx, c.Payload, o)
	if err == nil {
		s.queues.put(id, c.Queue)
		if ri, ok, err := s.view(ctx, info); err == nil && ok {
			return ri.Run, true, nil
		}
		return Run{ID: id, State: StatePending, Queue: c.Queue, Tenant: g.Tenant, MaxRetry: info.MaxRetry}, true, nil
	}
	// Whatever happened, the task may exist: read it before undoing.
	ri, found, rerr := s.read(ctx, c.Queue, id)
	if rerr == nil && found && ri.Tenant == g.Tenant {
		s.queues.put(id, c.Queue)
		return ri.Run, key == "" && !errors.Is(err, enqueue.ErrDuplicate), nil
	}
	if rerr == nil && !found {
		uctx := context.WithoutCancel(ctx)
		s.rdb.ZRem(uctx, openKey(g.Tenant), member)
		if won {
			forgetKey.Run(uctx, s.rdb, []string{ik}, rec)
		}
	}
	var ve *tasks.ValidationError
	switch {
	case errors.As(err, &ve):
		return Run{}, false, asError(err)
	case errors.Is(err, enqueue.ErrInvalidOptions):
		return Run{}, false, invalid("payload", strings.TrimPrefix(err.Error(), "invalid options: "))
	}
	s.cfg.Log.Error().Err(err).Str("tenant", g.Tenant).Str("run_id", id).Msg("enqueue failed")
	return Run{}, false, errRedis(err)
}
