package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/internal/livelog"
	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/internal/testworker"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// Tokens of the tests' tokens file.
const (
	tokAcme     = "tok-acme-3f9a"     // acme on default and fast
	tokAcmeFast = "tok-acme-fast-77c" // acme on fast only
	tokGlobex   = "tok-globex-e01d"   // globex on any queue
)

func testTokens(t testing.TB) *Tokens {
	t.Helper()
	tk := newTokens()
	file := fmt.Sprintf("# test tokens\n%s acme default,fast\n%s acme fast  # a comment\n%s globex *\n",
		TokenHash(tokAcme), TokenHash(tokAcmeFast), TokenHash(tokGlobex))
	if err := tk.Load(strings.NewReader(file)); err != nil {
		t.Fatal(err)
	}
	return tk
}

// testAPI is an API on a real HTTP server on loopback.
type testAPI struct {
	t       testing.TB
	s       *Server
	url     string
	redis   *testredis.Server
	opt     asynq.RedisClientOpt
	dataDir string
}

// newAPI starts an API on redis (a miniredis when nil) with the test
// tokens and cfg's changes.
func newAPI(t testing.TB, redis *testredis.Server, change func(*Config)) *testAPI {
	t.Helper()
	if redis == nil {
		redis = testredis.Mini(t)
	}
	opt := asynq.RedisClientOpt{Addr: redis.Addr}
	a := &testAPI{t: t, redis: redis, opt: opt, dataDir: t.TempDir()}
	cfg := Config{
		Redis:      opt,
		Tokens:     testTokens(t),
		Artifacts:  LocalArtifacts{DataDir: a.dataDir},
		EventsPoll: 10 * time.Millisecond,
		Rate:       -1,
	}
	if change != nil {
		change(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	hs.Config.RegisterOnShutdown(s.CloseStreams)
	t.Cleanup(func() {
		s.CloseStreams()
		hs.Close()
		s.Close()
	})
	a.s, a.url = s, hs.URL
	return a
}

// response is an answer of the API.
type response struct {
	status int
	header http.Header
	body   []byte
}

// apiError decodes an error response.
func (r response) apiError(t testing.TB) Error {
	t.Helper()
	var e struct{ Error *Error }
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == nil {
		t.Fatalf("%d: not an error response: %q", r.status, r.body)
	}
	return *e.Error
}

// run decodes a Run.
func (r response) run(t testing.TB) Run {
	t.Helper()
	var run Run
	if err := json.Unmarshal(r.body, &run); err != nil || run.ID == "" {
		t.Fatalf("%d: not a run: %q (%v)", r.status, r.body, err)
	}
	return run
}

// do sends a request with token (none when empty) and headers as
// "Name: value" strings.
func (a *testAPI) do(method, path, token, body string, headers ...string) response {
	a.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.url+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// create starts a run and fails the test unless it is a 201.
func (a *testAPI) create(token, body string, headers ...string) Run {
	a.t.Helper()
	r := a.do("POST", "/v1/runs", token, body, headers...)
	if r.status != http.StatusCreated {
		a.t.Fatalf("POST /v1/runs: %d %s", r.status, r.body)
	}
	return r.run(a.t)
}

// waitState polls the run until its state is want.
func (a *testAPI) waitState(token, id, want string) Run {
	a.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := a.do("GET", "/v1/runs/"+id, token, "")
		if r.status == 200 && r.run(a.t).State == want {
			return r.run(a.t)
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("run %s never became %s: %d %s", id, want, r.status, r.body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sseEvent is one event of a stream.
type sseEvent struct{ name, id, data string }

// sse is an open event stream.
type sse struct {
	resp   *http.Response
	events chan sseEvent
	done   chan error // the stream's end: nil for a clean EOF
	cancel context.CancelFunc
}

// follow opens the events of run id, with lastID as Last-Event-ID when set.
func (a *testAPI) follow(token, id, lastID string) *sse {
	a.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", a.url+"/v1/runs/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		a.t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		a.t.Fatalf("events: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	s := &sse{resp: resp, events: make(chan sseEvent, 100), done: make(chan error, 1), cancel: cancel}
	a.t.Cleanup(s.close)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
		s.done <- sc.Err()
		close(s.events)
	}()
	return s
}

func (s *sse) close() {
	s.cancel()
	s.resp.Body.Close()
}

// next returns the next event, failing the test after 30s.
func (s *sse) next(t testing.TB) (sseEvent, bool) {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		return ev, ok
	case <-time.After(30 * time.Second):
		t.Fatal("no event within 30s")
		return sseEvent{}, false
	}
}

// standIn is an asynq handler that reports progress as the worker does:
// a running result at the start of each phase with the finished ones, then
// the final result, artifacts kept under its data directory. When step is
// not nil, each phase waits for a value from it first.
//
// With live set it also writes the task's live output as the worker does,
// with the worker's own livelog.Append: an attempt entry, a phase entry as
// each phase starts (just before the result says so), talk's entries in
// exec (each after a step too), and an end entry.
type standIn struct {
	dataDir string
	step    chan struct{}
	live    redis.Scripter
	talk    []livelog.Entry
	// store, when set, receives the artifacts instead, as a worker with a
	// store keeps them.
	store store.Store
}

// liveLimits are a worker's with its default cap.
var liveLimits = livelog.Limits{MaxBytes: 1 << 20, MaxEntries: 1<<20/livelog.EntryOverhead + 1024}

// write appends entries of attempt to the task's live output, if live.
func (h *standIn) write(ctx context.Context, task *asynq.Task, attempt int, entries ...livelog.Entry) error {
	if h.live == nil {
		return nil
	}
	queue, _ := asynq.GetQueueName(ctx)
	for i := range entries {
		entries[i].Attempt = attempt
	}
	_, err := livelog.Append(ctx, h.live, queue, task.ResultWriter().TaskID(), liveLimits, time.Hour, entries)
	return err
}

// wait waits for a step, when there are steps.
func (h *standIn) wait(ctx context.Context) error {
	if h.step == nil {
		return nil
	}
	select {
	case <-h.step:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *standIn) ProcessTask(ctx context.Context, task *asynq.Task) error {
	p, err := tasks.Decode(task.Payload())
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	id := task.ResultWriter().TaskID()
	retried, _ := asynq.GetRetryCount(ctx)
	res := tasks.Result{Host: "stand-in", Tenant: p.TenantName(), VM: "vm-" + id, Attempt: retried + 1}
	report := func() error {
		b, err := json.Marshal(res)
		if err == nil {
			_, err = task.ResultWriter().Write(b)
		}
		return err
	}
	phases := []string{tasks.PhasePack, tasks.PhaseCreate, tasks.PhaseStart, tasks.PhaseReady, tasks.PhaseExec}
	if len(p.Artifacts) > 0 {
		phases = append(phases, tasks.PhaseArtifacts)
	}
	phases = append(phases, tasks.PhaseStop, tasks.PhaseCommit, tasks.PhaseDelete)
	if err := h.write(ctx, task, res.Attempt, livelog.Entry{Kind: livelog.KindAttempt, Host: res.Host}); err != nil {
		return err
	}
	for _, ph := range phases {
		if err := h.wait(ctx); err != nil {
			return err
		}
		if err := h.write(ctx, task, res.Attempt, livelog.Entry{Kind: livelog.KindPhase, Phase: ph}); err != nil {
			return err
		}
		if ph != tasks.PhaseDelete {
			res.State, res.Phase = tasks.StateRunning, ph
			if err := report(); err != nil {
				return err
			}
		}
		if ph == tasks.PhaseExec {
			for _, e := range h.talk {
				if err := h.wait(ctx); err != nil {
					return err
				}
				if err := h.write(ctx, task, res.Attempt, e); err != nil {
					return err
				}
			}
		}
		if ph == tasks.PhaseExec && p.Command[0] == "flaky" && retried == 0 {
			res.Error = "exec: the stand-in fails its first attempt"
			res.Add(ph, time.Millisecond)
			h.write(ctx, task, res.Attempt, livelog.Entry{Kind: livelog.KindEnd, Phase: ph, Outcome: livelog.OutcomeFailed, Error: res.Error})
			report()
			return errors.New(res.Error)
		}
		if ph == tasks.PhaseExec && p.Command[0] == "fail" {
			res.Error = "exec: the stand-in fails as told"
			res.Add(ph, time.Millisecond)
			report()
			return fmt.Errorf("%s: %w", res.Error, asynq.SkipRetry)
		}
		if ph == tasks.PhaseArtifacts {
			for i, ap := range p.Artifacts {
				res.Artifacts = append(res.Artifacts, h.keep(p.TenantName(), id, i, ap))
			}
		}
		res.Add(ph, time.Millisecond)
	}
	res.State, res.Stdout = tasks.StateDone, strings.Join(p.Command, " ")+"\n"
	if err := h.write(ctx, task, res.Attempt, livelog.Entry{Kind: livelog.KindEnd, Phase: tasks.PhaseDelete, Outcome: livelog.OutcomeDone}); err != nil {
		return err
	}
	return report()
}

// keep writes artifact i of a run, or reports it missing when its path
// says so.
func (h *standIn) keep(tenant, id string, i int, guest string) tasks.Artifact {
	if strings.Contains(guest, "missing") {
		return tasks.Artifact{Path: guest, Error: tasks.ArtifactMissing}
	}
	content := []byte(fmt.Sprintf("artifact %d of run %s: %s\n", i, id, guest))
	if h.store != nil {
		a, err := testworker.PutArtifact(context.Background(), h.store, tenant, id, i, guest, content)
		if err != nil {
			return tasks.Artifact{Path: guest, Error: err.Error()}
		}
		return a
	}
	dir := filepath.Join(h.dataDir, "artifacts", tenant, id)
	os.MkdirAll(dir, 0o700)
	hp := filepath.Join(dir, fmt.Sprintf("%d-%s", i, filepath.Base(guest)))
	os.WriteFile(hp, content, 0o600)
	sum := sha256.Sum256(content)
	return tasks.Artifact{Path: guest, Host: "stand-in", HostPath: hp, Size: int64(len(content)), SHA256: hex.EncodeToString(sum[:])}
}

// serve runs the stand-in on the API's Redis for queues.
func (a *testAPI) serve(step chan struct{}, queues ...string) {
	a.t.Helper()
	testworker.Serve(a.t, a.opt, &standIn{dataDir: a.dataDir, step: step}, queues...)
}

// serveLive runs the stand-in on the API's Redis, writing live output
// with talk in exec.
func (a *testAPI) serveLive(step chan struct{}, talk []livelog.Entry, queues ...string) {
	a.t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: a.redis.Addr})
	a.t.Cleanup(func() { rdb.Close() })
	testworker.Serve(a.t, a.opt, &standIn{dataDir: a.dataDir, step: step, live: rdb, talk: talk}, queues...)
}

// serveStore runs the stand-in on the API's Redis, keeping artifacts in st.
func (a *testAPI) serveStore(st store.Store) {
	a.t.Helper()
	testworker.Serve(a.t, a.opt, &standIn{dataDir: a.dataDir, store: st})
}

// pretty indents JSON for a failure message.
func pretty(b []byte) string {
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		return string(b)
	}
	return out.String()
}

// syncBuffer is a bytes.Buffer safe for the server to write while the
// test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger(w io.Writer) zerolog.Logger { return zerolog.New(w).Level(zerolog.DebugLevel) }
