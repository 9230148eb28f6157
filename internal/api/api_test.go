package api

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/tasks"
)

const hello = `{"image":"alpine:3","command":["echo","hello"]}`

// TestRunLifecycle: a run is created (201, Location), read while pending,
// run by a worker and read completed with the worker's result as written.
func TestRunLifecycle(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, nil)
	r := a.do("POST", "/v1/runs", tokAcme, `{"image":"alpine:3","command":["echo","hi"],"queue":"fast","max_retry":2,"task_timeout":"1h"}`)
	if r.status != 201 || r.header.Get("Location") != "/v1/runs/"+r.run(t).ID {
		t.Fatalf("POST: %d Location %q %s", r.status, r.header.Get("Location"), r.body)
	}
	run := r.run(t)
	if run.State != StatePending || run.Queue != "fast" || run.Tenant != "acme" || run.MaxRetry != 2 || run.Attempts != 0 || run.Result != nil {
		t.Errorf("created run %+v", run)
	}
	info, err := a.s.insp.GetTaskInfo("fast", run.ID)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tasks.Decode(info.Payload)
	if err != nil || p.Tenant != "acme" || info.Timeout.String() != "1h0m0s" || info.MaxRetry != 2 {
		t.Errorf("task in Redis: payload %+v (%v), timeout %s, max_retry %d", p, err, info.Timeout, info.MaxRetry)
	}
	if got := a.do("GET", "/v1/runs/"+run.ID, tokAcme, "").run(t); got.State != StatePending {
		t.Errorf("GET before a worker: %+v", got)
	}
	a.serve(nil, "fast")
	done := a.waitState(tokAcme, run.ID, StateCompleted)
	var res tasks.Result
	if err := json.Unmarshal(done.Result, &res); err != nil || res.State != tasks.StateDone || res.Stdout != "echo hi\n" || res.Tenant != "acme" {
		t.Errorf("result %s (%v)", done.Result, err)
	}
	if done.Attempts != 1 || done.CompletedAt == nil {
		t.Errorf("completed run %+v", done)
	}
	// The result is the worker's JSON as written, byte for byte.
	info, _ = a.s.insp.GetTaskInfo("fast", run.ID)
	if string(done.Result) != string(info.Result) {
		t.Errorf("result\n%s\nis not what the worker wrote\n%s", done.Result, info.Result)
	}
}

// TestErrors: every error the API answers with is JSON with its status,
// code and field, and a bad payload's message is the enqueue library's.
func TestErrors(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, func(c *Config) { c.MaxBodyBytes = 4 << 10; c.MaxFilesBytes = 1 << 10 })
	big := base64.StdEncoding.EncodeToString(make([]byte, 4<<10))
	small := base64.StdEncoding.EncodeToString(make([]byte, 1<<10+1))
	for _, tt := range []struct {
		name, method, path, token, body string
		headers                         []string
		status                          int
		code, field, message            string
	}{
		{"no token", "POST", "/v1/runs", "", hello, nil, 401, CodeUnauthorized, "Authorization", "a bearer token is required"},
		{"unknown token", "GET", "/v1/runs/x", "nope", "", nil, 401, CodeUnauthorized, "Authorization", "unknown token"},
		{"not bearer", "GET", "/v1/runs/x", "", "", []string{"Authorization: Basic dXNlcjpwdw=="}, 401, CodeUnauthorized, "Authorization", "Bearer TOKEN"},
		{"queue not allowed", "POST", "/v1/runs", tokAcmeFast, hello, nil, 403, CodeForbidden, "queue", "may not use queue default"},
		{"another tenant", "POST", "/v1/runs", tokAcme, `{"tenant":"globex","image":"a","command":["x"]}`, nil, 403, CodeForbidden, "tenant", "tenant: this token starts runs of tenant acme only"},
		{"not JSON", "POST", "/v1/runs", tokAcme, `{"image":`, nil, 400, CodeInvalid, "payload", "payload: is not a JSON object"},
		{"an array", "POST", "/v1/runs", tokAcme, `[1]`, nil, 400, CodeInvalid, "payload", "payload: is not a JSON object"},
		{"unknown field", "POST", "/v1/runs", tokAcme, `{"image":"a","command":["x"],"imag":"b"}`, nil, 400, CodeInvalid, "payload", `payload: is not a valid agent:run JSON object: json: unknown field "imag"`},
		{"no command", "POST", "/v1/runs", tokAcme, `{"image":"alpine:3"}`, nil, 400, CodeInvalid, "command", "command: must not be empty"},
		{"bad file path", "POST", "/v1/runs", tokAcme, `{"image":"a","command":["x"],"files":[{"path":"rel","content":""}]}`, nil, 400, CodeInvalid, "files[0].path", "files[0].path: "},
		{"host path", "POST", "/v1/runs", tokAcme, `{"from":"/var/lib/x.smolmachine","command":["x"]}`, nil, 400, CodeInvalid, "from", `from: only "task:ID"`},
		{"bad queue", "POST", "/v1/runs", tokGlobex, `{"image":"a","command":["x"],"queue":"a b"}`, nil, 400, CodeInvalid, "queue", "queue: "},
		{"queue not a string", "POST", "/v1/runs", tokGlobex, `{"image":"a","command":["x"],"queue":1}`, nil, 400, CodeInvalid, "queue", "queue: must be a string"},
		{"max_retry negative", "POST", "/v1/runs", tokAcme, `{"image":"a","command":["x"],"max_retry":-1}`, nil, 400, CodeInvalid, "max_retry", "max_retry: -1 is out of range"},
		{"max_retry a string", "POST", "/v1/runs", tokAcme, `{"image":"a","command":["x"],"max_retry":"2"}`, nil, 400, CodeInvalid, "max_retry", "max_retry: must be a whole number"},
		{"task_timeout short", "POST", "/v1/runs", tokAcme, `{"image":"a","command":["x"],"timeout":"1h","task_timeout":"10m"}`, nil, 400, CodeInvalid, "task_timeout", "task_timeout: 10m0s is shorter than the command's timeout 1h0m0s"},
		{"task_timeout bad", "POST", "/v1/runs", tokAcme, `{"image":"a","command":["x"],"task_timeout":"soon"}`, nil, 400, CodeInvalid, "task_timeout", `task_timeout: "soon" is not a Go duration`},
		{"bad timeout", "POST", "/v1/runs", tokAcme, `{"image":"a","command":["x"],"timeout":"soon"}`, nil, 400, CodeInvalid, "timeout", `timeout: "soon" is not a Go duration`},
		{"body over the cap", "POST", "/v1/runs", tokAcme, `{"image":"a","command":["x"],"files":[{"path":"/f","content":"` + big + `"}]}`, nil, 413, CodeTooLarge, "payload", "payload: the body is over this API's cap of 4 KiB"},
		{"files over the cap", "POST", "/v1/runs", tokAcme, `{"image":"a","command":["x"],"files":[{"path":"/f","content":"` + small + `"}]}`, nil, 413, CodeTooLarge, "files", "files: 1 KiB (1025 bytes) in total, over this API's cap of 1 KiB"},
		{"not JSON content", "POST", "/v1/runs", tokAcme, hello, []string{"Content-Type: application/x-www-form-urlencoded"}, 415, CodeUnsupportedType, "Content-Type", "application/json"},
		{"bad key", "POST", "/v1/runs", tokAcme, hello, []string{"Idempotency-Key: a\tb"}, 400, CodeInvalid, "Idempotency-Key", "printable ASCII"},
		{"missing run", "GET", "/v1/runs/no-such-run", tokAcme, "", nil, 404, CodeNotFound, "id", "no run no-such-run"},
		{"missing run's events", "GET", "/v1/runs/no-such-run/events", tokAcme, "", nil, 404, CodeNotFound, "id", "no run no-such-run"},
		{"missing run's cancel", "POST", "/v1/runs/no-such-run/cancel", tokAcme, "", nil, 404, CodeNotFound, "id", "no run no-such-run"},
		{"missing run's artifact", "GET", "/v1/runs/no-such-run/artifacts/0", tokAcme, "", nil, 404, CodeNotFound, "id", "no run no-such-run"},
		{"no route", "GET", "/v2/runs", tokAcme, "", nil, 404, CodeNoRoute, "", "no such endpoint: /v2/runs"},
		{"wrong method", "DELETE", "/v1/runs/x", tokAcme, "", nil, 405, CodeMethodNotAllowed, "", "DELETE is not allowed here; GET is"},
		{"bad Last-Event-ID", "GET", "/v1/runs/x/events", tokAcme, "", []string{"Last-Event-ID: 7"}, 400, CodeInvalid, "Last-Event-ID", "ATTEMPT-INDEX or done"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := a.do(tt.method, tt.path, tt.token, tt.body, tt.headers...)
			e := r.apiError(t)
			if r.status != tt.status || e.Code != tt.code || e.Field != tt.field || !strings.Contains(e.Message, tt.message) {
				t.Errorf("%d %+v, want %d %s field %q with %q", r.status, e, tt.status, tt.code, tt.field, tt.message)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if strings.Contains(e.Message, "\n") {
				t.Errorf("message is more than one line: %q", e.Message)
			}
			if tt.status == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Error("a 401 without WWW-Authenticate")
			}
			if tt.status == 405 && r.header.Get("Allow") != "GET" {
				t.Errorf("Allow %q", r.header.Get("Allow"))
			}
		})
	}
	// Nothing of all that reached the queue.
	if qs, _ := a.s.insp.Queues(); len(qs) != 0 {
		t.Errorf("queues %q after refused requests", qs)
	}
}

// TestEnvNeverEchoed: a payload refused for its env names the key and
// never its value, and no log line holds a token or a value.
func TestEnvNeverEchoed(t *testing.T) {
	t.Parallel()
	var log syncBuffer
	a := newAPI(t, nil, func(c *Config) { c.Log = testLogger(&log) })
	r := a.do("POST", "/v1/runs", tokAcme, `{"image":"a","command":["x"],"env":{"1BAD":"s3cret-value"}}`)
	if e := r.apiError(t); r.status != 400 || e.Field != "env" || strings.Contains(string(r.body), "s3cret-value") {
		t.Errorf("%d %s", r.status, r.body)
	}
	a.create(tokAcme, `{"image":"a","command":["x"],"env":{"KEY":"s3cret-value"}}`)
	for _, leak := range []string{"s3cret-value", tokAcme, TokenHash(tokAcme)} {
		if strings.Contains(log.String(), leak) {
			t.Errorf("the log holds %q:\n%s", leak, log.String())
		}
	}
	if !strings.Contains(log.String(), `"route":"POST /v1/runs","status":201`) {
		t.Errorf("no request line in the log:\n%s", log.String())
	}
}

// TestTenantsApart: globex cannot read, follow, cancel or download acme's
// run, and each refusal is the very answer a missing run gets.
func TestTenantsApart(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, nil)
	a.serve(nil)
	run := a.create(tokAcme, `{"image":"a","command":["x"],"artifacts":["/out/a.txt"]}`)
	a.waitState(tokAcme, run.ID, StateCompleted)
	if r := a.do("GET", "/v1/runs/"+run.ID+"/artifacts/0", tokAcme, ""); r.status != 200 {
		t.Fatalf("acme's own artifact: %d %s", r.status, r.body)
	}
	const missing = "0123456789abcdef0123456789abcdef"
	for _, tt := range []struct{ method, path string }{
		{"GET", "/v1/runs/%s"},
		{"GET", "/v1/runs/%s/events"},
		{"POST", "/v1/runs/%s/cancel"},
		{"GET", "/v1/runs/%s/artifacts/0"},
	} {
		theirs := a.do(tt.method, fmt.Sprintf(tt.path, run.ID), tokGlobex, "")
		none := a.do(tt.method, fmt.Sprintf(tt.path, missing), tokGlobex, "")
		if theirs.status != 404 || none.status != 404 ||
			strings.ReplaceAll(string(theirs.body), run.ID, "ID") != strings.ReplaceAll(string(none.body), missing, "ID") {
			t.Errorf("%s %s: acme's run %d %s; a missing run %d %s", tt.method, tt.path, theirs.status, theirs.body, none.status, none.body)
		}
	}
	// A token of acme limited to another queue does not see it either.
	if r := a.do("GET", "/v1/runs/"+run.ID, tokAcmeFast, ""); r.status != 404 {
		t.Errorf("acme's fast-only token: %d %s", r.status, r.body)
	}
	// globex's own run with the same Idempotency-Key is another run.
	k := "Idempotency-Key: shared-key"
	ra := a.do("POST", "/v1/runs", tokAcme, hello, k)
	rg := a.do("POST", "/v1/runs", tokGlobex, hello, k)
	if ra.status != 201 || rg.status != 201 || ra.run(t).ID == rg.run(t).ID {
		t.Errorf("the same key from two tenants: %d %s, %d %s", ra.status, ra.body, rg.status, rg.body)
	}
}

// TestIdempotency: the same key from the same tenant returns the same run,
// 201 then 200, and 20 concurrent identical POSTs make exactly one task,
// on miniredis and on a real redis-server.
func TestIdempotency(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"miniredis", "redis-server"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			var redis *testredis.Server
			if kind == "redis-server" {
				redis = testredis.Real(t)
			}
			a := newAPI(t, redis, func(c *Config) { c.MaxOpenRuns = 1 })
			const n = 20
			var wg sync.WaitGroup
			results := make([]response, n)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[i] = a.do("POST", "/v1/runs", tokAcme, hello, "Idempotency-Key: order-42")
				}()
			}
			wg.Wait()
			codes := map[int]int{}
			ids := map[string]bool{}
			for _, r := range results {
				codes[r.status]++
				if r.status < 300 {
					ids[r.run(t).ID] = true
				}
			}
			if codes[201] != 1 || codes[200] != n-1 || len(ids) != 1 {
				t.Errorf("codes %v, run IDs %v; want one 201 and %d 200 for one run", codes, ids, n-1)
			}
			pending, err := a.s.insp.ListPendingTasks("default")
			if err != nil || len(pending) != 1 {
				t.Errorf("%d pending tasks (%v), want 1", len(pending), err)
			}
			// At the cap of one open run, the key still answers: the run is
			// counted once.
			if r := a.do("POST", "/v1/runs", tokAcme, hello, "Idempotency-Key: order-42"); r.status != 200 {
				t.Errorf("the key again at the cap: %d %s", r.status, r.body)
			}
			// The same key with another request is refused.
			r := a.do("POST", "/v1/runs", tokAcme, `{"image":"alpine:3","command":["echo","bye"]}`, "Idempotency-Key: order-42")
			if e := r.apiError(t); r.status != 422 || e.Code != CodeKeyReused || e.Field != "Idempotency-Key" {
				t.Errorf("the key with another body: %d %s", r.status, r.body)
			}
		})
	}
}

// TestKeyTakenOver: a key whose first request died between recording the
// key and enqueueing (the record is there, the task is not) still starts
// its run, once.
func TestKeyTakenOver(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, nil)
	body := hello
	g, _ := a.s.cfg.Tokens.Lookup(tokAcme)
	c, e := a.s.parseCreate([]byte(body), g)
	if e != nil {
		t.Fatal(e)
	}
	if err := a.s.rdb.Set(t.Context(), idemKey("acme", "k1"), c.Queue+" "+c.fingerprint(), 0).Err(); err != nil {
		t.Fatal(err)
	}
	first := a.do("POST", "/v1/runs", tokAcme, body, "Idempotency-Key: k1")
	again := a.do("POST", "/v1/runs", tokAcme, body, "Idempotency-Key: k1")
	if first.status != 201 || again.status != 200 || first.run(t).ID != again.run(t).ID || first.run(t).ID != keyedID("acme", "k1") {
		t.Errorf("first %d %s, again %d %s", first.status, first.body, again.status, again.body)
	}
}

// TestOpenRunsCap: past MaxOpenRuns runs that have not finished, a POST is
// a 429 with Retry-After; once runs finish, new ones start again.
func TestOpenRunsCap(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, func(c *Config) { c.MaxOpenRuns = 2 })
	first := a.create(tokAcme, hello)
	second := a.create(tokAcme, hello)
	r := a.do("POST", "/v1/runs", tokAcme, hello)
	if e := r.apiError(t); r.status != 429 || e.Code != CodeTooManyRuns || r.header.Get("Retry-After") == "" {
		t.Fatalf("third run: %d Retry-After %q %s", r.status, r.header.Get("Retry-After"), r.body)
	}
	// Another tenant has a cap of its own.
	a.create(tokGlobex, hello)
	if pending, _ := a.s.insp.ListPendingTasks("default"); len(pending) != 3 {
		t.Errorf("%d pending tasks, want 3", len(pending))
	}
	a.serve(nil)
	a.waitState(tokAcme, first.ID, StateCompleted)
	a.waitState(tokAcme, second.ID, StateCompleted)
	// The finished runs are pruned from the count.
	a.create(tokAcme, hello)
	a.create(tokAcme, hello)
}

// TestRateLimit: a tenant over its request rate gets 429 with Retry-After;
// another tenant does not.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, func(c *Config) { c.Rate, c.Burst = 0.001, 3 })
	for i := range 3 {
		if r := a.do("GET", "/v1/runs/x", tokAcme, ""); r.status != 404 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
	r := a.do("GET", "/v1/runs/x", tokAcme, "")
	if e := r.apiError(t); r.status != 429 || e.Code != CodeRateLimited || r.header.Get("Retry-After") == "" {
		t.Errorf("fourth request: %d Retry-After %q %s", r.status, r.header.Get("Retry-After"), r.body)
	}
	if r := a.do("GET", "/v1/runs/x", tokGlobex, ""); r.status != 404 {
		t.Errorf("globex: %d %s", r.status, r.body)
	}
}

// TestCancelPending: a run no worker has taken is cancelled at once and
// reads cancelled from then on; a cancel again is a 200, a cancel of a
// completed run a 409.
func TestCancelPending(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, nil)
	run := a.create(tokGlobex, `{"image":"a","command":["x"],"queue":"idle"}`)
	r := a.do("POST", "/v1/runs/"+run.ID+"/cancel", tokGlobex, "")
	if r.status != 200 || r.run(t).State != StateCancelled {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	if got := a.do("GET", "/v1/runs/"+run.ID, tokGlobex, "").run(t); got.State != StateCancelled {
		t.Errorf("GET after the cancel: %+v", got)
	}
	if r := a.do("POST", "/v1/runs/"+run.ID+"/cancel", tokGlobex, ""); r.status != 200 || r.run(t).State != StateCancelled {
		t.Errorf("cancel again: %d %s", r.status, r.body)
	}
	// Its events end at once with done.
	s := a.follow(tokGlobex, run.ID, "")
	if ev, _ := s.next(t); ev.name != EventDone || !strings.Contains(ev.data, `"state":"cancelled"`) {
		t.Errorf("events of a cancelled run: %+v", ev)
	}
	a.serve(nil)
	done := a.create(tokGlobex, hello)
	a.waitState(tokGlobex, done.ID, StateCompleted)
	r = a.do("POST", "/v1/runs/"+done.ID+"/cancel", tokGlobex, "")
	if e := r.apiError(t); r.status != 409 || e.Code != CodeFinished {
		t.Errorf("cancel of a completed run: %d %s", r.status, r.body)
	}
}

// TestHealthz: 200 while Redis answers, 503 once it is gone.
func TestHealthz(t *testing.T) {
	t.Parallel()
	redis := testredis.Mini(t)
	a := newAPI(t, redis, nil)
	if r := a.do("GET", "/healthz", "", ""); r.status != 200 || string(r.body) != "{\"status\":\"ok\"}\n" {
		t.Errorf("healthz: %d %s", r.status, r.body)
	}
	redis.Stop()
	if r := a.do("GET", "/healthz", "", ""); r.status != 503 || r.apiError(t).Code != CodeUnavailable {
		t.Errorf("healthz without Redis: %d %s", r.status, r.body)
	}
	if r := a.do("GET", "/v1/runs/x", tokAcme, ""); r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Errorf("GET without Redis: %d %s", r.status, r.body)
	}
}

// TestMetrics: /metrics counts requests by route and code, with latency.
func TestMetrics(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, nil)
	a.create(tokAcme, hello)
	a.do("GET", "/v1/runs/nope", tokAcme, "")
	a.do("GET", "/nowhere", "", "")
	r := a.do("GET", "/metrics", "", "")
	for _, want := range []string{
		`bottleq_api_requests_total{code="201",route="POST /v1/runs"} 1`,
		`bottleq_api_requests_total{code="404",route="GET /v1/runs/{id}"} 1`,
		`bottleq_api_requests_total{code="404",route="unmatched"} 1`,
		`bottleq_api_request_duration_seconds_count{route="POST /v1/runs"} 1`,
		`bottleq_api_request_duration_seconds_bucket{route="GET /v1/runs/{id}",le="+Inf"} 1`,
		"bottleq_api_event_streams 0",
		"go_goroutines ",
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestOpenAPI: the document is OpenAPI 3.1 and lists exactly the routes
// the server has, and every documented operation answers (no 404 for the
// route, no 405).
func TestOpenAPI(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, nil)
	r := a.do("GET", "/v1/openapi.json", "", "")
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if r.status != 200 || json.Unmarshal(r.body, &doc) != nil || doc.OpenAPI != "3.1.0" {
		t.Fatalf("GET /v1/openapi.json: %d %s", r.status, r.body)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	var served []string
	for _, rt := range a.s.routes() {
		served = append(served, rt.pattern())
		if !documented[rt.pattern()] {
			t.Errorf("route %s is not in the OpenAPI document", rt.pattern())
		}
	}
	run := a.create(tokAcme, hello)
	for op := range documented {
		if !slices.Contains(served, op) {
			t.Errorf("the OpenAPI document lists %s, which the server lacks", op)
		}
		method, path, _ := strings.Cut(op, " ")
		path = strings.NewReplacer("{id}", run.ID, "{n}", "0").Replace(path)
		body := ""
		if method == "POST" && path == "/v1/runs" {
			body = hello
		}
		var got response
		if strings.HasSuffix(path, "/events") {
			got = a.do(method, path, tokAcme, body, "Last-Event-ID: done") // 204: no stream to hold open
		} else {
			got = a.do(method, path, tokAcme, body)
		}
		if got.status == 405 || got.status == 404 && strings.Contains(string(got.body), CodeNoRoute) {
			t.Errorf("documented %s answers %d %s", op, got.status, got.body)
		}
		if _, listed := doc.Paths[strings.TrimPrefix(op, method+" ")][strings.ToLower(method)]; !listed {
			t.Errorf("%s: no operation", op)
		}
	}
}

// TestTokensFile: the tokens file's format, and a bad reload keeps the
// tokens in force.
func TestTokensFile(t *testing.T) {
	t.Parallel()
	h := TokenHash("t")
	for _, tt := range []struct{ name, file, err string }{
		{"good", "# c\n\n" + h + " acme a,b,a\n", ""},
		{"any queue", strings.ToUpper(h) + " acme *", ""},
		{"two fields", h + " acme", "line 1: has 2 fields, want 3"},
		{"not hex", strings.Repeat("z", 64) + " acme *", "line 1: the first field must be the token's SHA-256"},
		{"short hash", h[:10] + " acme *", "line 1: the first field must be the token's SHA-256"},
		{"bad tenant", h + " Acme *", "line 1: tenant: \"Acme\""},
		{"bad queue", h + " acme a,,b", "line 1: queue must not be empty"},
		{"twice", h + " acme *\n" + h + " globex *", "line 2: the same token as line 1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tk := newTokens()
			err := tk.Load(strings.NewReader(tt.file))
			if tt.err == "" {
				if g, ok := tk.Lookup("t"); err != nil || !ok || g.Tenant != "acme" {
					t.Errorf("Load: %v; grant %+v %v", err, g, ok)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), h[:10]) {
				t.Errorf("Load = %v, want %q without the digest", err, tt.err)
			}
		})
	}
	tk := testTokens(t)
	if g, _ := tk.Lookup(tokAcme); !slices.Equal(g.Queues, []string{"default", "fast"}) || !g.Allows("fast") || g.Allows("other") {
		t.Errorf("acme's grant %+v", g)
	}
	if g, _ := tk.Lookup(tokGlobex); g.Queues != nil || !g.Allows("anything") {
		t.Errorf("globex's grant %+v", g)
	}
	if err := tk.Load(strings.NewReader("garbage\n")); err == nil {
		t.Fatal("a bad file loaded")
	}
	if _, ok := tk.Lookup(tokAcme); !ok || tk.Len() != 3 {
		t.Error("a bad reload dropped the tokens in force")
	}
}

// TestStandInMatchesQueue checks the test's own stand-in against asynq: a
// failing run is archived with its error.
func TestArchivedRun(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, nil)
	a.serve(nil)
	run := a.create(tokAcme, `{"image":"a","command":["fail"]}`)
	got := a.waitState(tokAcme, run.ID, StateArchived)
	if !strings.Contains(got.LastError, "the stand-in fails as told") {
		t.Errorf("archived run %+v", got)
	}
	if info, _ := a.s.insp.GetTaskInfo("default", run.ID); info.State != asynq.TaskStateArchived {
		t.Errorf("task state %v", info.State)
	}
}
