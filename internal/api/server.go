package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/tasks"
)

// Defaults of a Config's zero fields.
const (
	// DefaultMaxOpenRuns caps a tenant's runs that have not finished
	// (pending, scheduled, active or waiting for a retry).
	DefaultMaxOpenRuns = 100
	// DefaultRate is a tenant's sustained request rate per second, per
	// API process; DefaultBurst the requests it may make at once.
	DefaultRate  = 20
	DefaultBurst = 40
	// DefaultEventsPoll is how often the one poller of a followed run
	// reads it, whatever the number of clients following it.
	DefaultEventsPoll = 500 * time.Millisecond
	// DefaultCancelWait is how long POST /v1/runs/{id}/cancel waits for a
	// running task to end before it answers 202.
	DefaultCancelWait = 5 * time.Second
	// idempotencyTTL is how long an Idempotency-Key is remembered after
	// its last use.
	idempotencyTTL = 7 * 24 * time.Hour
	// keepAlive is how often an idle event stream gets a comment, so that
	// proxies keep it open.
	keepAlive = 15 * time.Second
	// openRetryAfter is the Retry-After of a 429 for too many open runs.
	openRetryAfter = 5 * time.Second
)

// Config configures a Server. Zero fields take the defaults above.
type Config struct {
	// Redis is the Redis the queues live in. Required.
	Redis asynq.RedisConnOpt
	// LiveRedis is the same Redis, for the event streams' blocking reads
	// of live output: each open stream of a run that has not ended holds
	// one of its connections while its read waits (up to 5 s), so give it
	// a pool of its own, as large as the streams you expect (cmd/api
	// gives it LiveReaders). Default: a client made from Redis, whose
	// pool is the shared one when Redis hands out a shared client.
	LiveRedis asynq.RedisConnOpt
	// Tokens are the bearer tokens and their grants. Required; reload it
	// with Tokens.LoadFile while the server runs.
	Tokens *Tokens
	// Artifacts opens the artifacts results list: StoreArtifacts for
	// workers with a store, LocalArtifacts for a worker's data directory.
	// Nil: every artifact is unavailable (404).
	Artifacts ArtifactSource
	// MaxOpenRuns caps each tenant's runs that have not finished; a POST
	// past it is a 429 with Retry-After. Default DefaultMaxOpenRuns;
	// negative: no cap.
	MaxOpenRuns int
	// Rate and Burst cap each tenant's requests per second (token bucket,
	// per process). Default DefaultRate and DefaultBurst; a negative Rate:
	// no cap.
	Rate  float64
	Burst int
	// MaxBodyBytes caps a request body, files included. Default: 256 KiB
	// for the payload without files, plus MaxFilesBytes in base64.
	MaxBodyBytes int64
	// MaxFilesBytes caps the content of a payload's files, as the
	// workers' -max-files-bytes does. Default tasks.DefaultMaxFilesBytes.
	MaxFilesBytes int64
	// EventsPoll is how often a followed run is read. Default
	// DefaultEventsPoll.
	EventsPoll time.Duration
	// CancelWait is how long a cancel waits for a running task to end.
	// Default DefaultCancelWait.
	CancelWait time.Duration
	// Log receives one line per request (never a token or a body). The
	// zero Logger writes nothing.
	Log zerolog.Logger
}

// Server is the API's HTTP handler. Create it with New; Close it when done.
type Server struct {
	cfg     Config
	rdb     redis.UniversalClient
	liveRdb redis.UniversalClient
	insp    *asynq.Inspector
	enq     *enqueue.Client
	mux     *http.ServeMux
	reg     *prometheus.Registry
	metrics *metrics
	hub     *hub
	queues  *queueCache

	limMu    sync.Mutex
	limiters map[string]*rate.Limiter

	stopOnce sync.Once
	stopping chan struct{}
}

// New returns a Server for cfg. It does not connect to Redis: the first
// request that needs it does.
func New(cfg Config) (*Server, error) {
	if cfg.Redis == nil {
		return nil, errors.New("api: Config.Redis is required")
	}
	if cfg.Tokens == nil {
		return nil, errors.New("api: Config.Tokens is required")
	}
	if cfg.MaxOpenRuns == 0 {
		cfg.MaxOpenRuns = DefaultMaxOpenRuns
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = max(DefaultBurst, int(cfg.Rate))
	}
	if cfg.MaxFilesBytes <= 0 {
		cfg.MaxFilesBytes = tasks.DefaultMaxFilesBytes
	}
	if cfg.MaxFilesBytes > tasks.MaxFilesBytesLimit {
		return nil, fmt.Errorf("api: MaxFilesBytes %d is over the hard limit %d", cfg.MaxFilesBytes, tasks.MaxFilesBytesLimit)
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 256<<10 + (cfg.MaxFilesBytes+2)/3*4
	}
	if cfg.EventsPoll <= 0 {
		cfg.EventsPoll = DefaultEventsPoll
	}
	if cfg.CancelWait <= 0 {
		cfg.CancelWait = DefaultCancelWait
	}
	rdb, ok := cfg.Redis.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("api: Config.Redis %T does not make a go-redis v9 client", cfg.Redis)
	}
	liveOpt := cfg.LiveRedis
	if liveOpt == nil {
		liveOpt = cfg.Redis
	}
	liveRdb, ok := liveOpt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		rdb.Close()
		return nil, fmt.Errorf("api: Config.LiveRedis %T does not make a go-redis v9 client", liveOpt)
	}
	s := &Server{
		cfg:      cfg,
		rdb:      rdb,
		liveRdb:  liveRdb,
		insp:     asynq.NewInspectorFromRedisClient(rdb),
		enq:      enqueue.New(cfg.Redis),
		reg:      prometheus.NewRegistry(),
		limiters: map[string]*rate.Limiter{},
		stopping: make(chan struct{}),
		queues:   newQueueCache(4096),
	}
	s.metrics = newMetrics(s.reg)
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.hub = newHub(s, cfg.EventsPoll)
	s.mux = http.NewServeMux()
	for _, rt := range s.routes() {
		s.mux.Handle(rt.pattern(), s.instrument(rt))
	}
	return s, nil
}

// route is one endpoint: its method and path pattern (net/http's), and
// whether it needs a token.
type route struct {
	method, path string
	auth         bool
	handle       func(w http.ResponseWriter, r *http.Request, g Grant)
}

func (rt route) pattern() string { return rt.method + " " + rt.path }

// routes lists every endpoint; the OpenAPI document must list the same.
func (s *Server) routes() []route {
	return []route{
		{http.MethodPost, "/v1/runs", true, s.createRun},
		{http.MethodGet, "/v1/runs/{id}", true, s.getRun},
		{http.MethodGet, "/v1/runs/{id}/events", true, s.events},
		{http.MethodPost, "/v1/runs/{id}/cancel", true, s.cancelRun},
		{http.MethodGet, "/v1/runs/{id}/artifacts/{n}", true, s.artifact},
		{http.MethodGet, "/v1/openapi.json", false, serveOpenAPI},
		{http.MethodGet, "/healthz", false, s.healthz},
		{http.MethodGet, "/metrics", false, s.serveMetrics},
	}
}

// ServeHTTP serves the API. A path no route has is a JSON 404, a method
// a path does not take a JSON 405 with Allow.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, p := s.mux.Handler(probe); p != "" {
			allow = append(allow, m)
		}
	}
	start := time.Now()
	e := errorf(http.StatusNotFound, CodeNoRoute, "", "no such endpoint: "+r.URL.Path+" (see /v1/openapi.json)")
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		e = errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "", r.Method+" is not allowed here; "+strings.Join(allow, ", ")+" is")
	}
	writeError(w, e)
	s.metrics.observe("unmatched", e.Status, time.Since(start))
}

// Close ends open event streams and closes the connections to Redis (a
// read of live output that still waits ends with its connection).
func (s *Server) Close() error {
	s.CloseStreams()
	s.hub.wait()
	return errors.Join(s.enq.Close(), s.liveRdb.Close(), s.rdb.Close())
}

// CloseStreams ends every open event stream cleanly (its response ends;
// a client reconnects with Last-Event-ID) and makes new ones end at once.
// Call it when the HTTP server starts to shut down
// (http.Server.RegisterOnShutdown), or Shutdown waits for the streams.
func (s *Server) CloseStreams() { s.stopOnce.Do(func() { close(s.stopping) }) }

// limiter returns the tenant's request rate limiter.
func (s *Server) limiter(tenant string) *rate.Limiter {
	s.limMu.Lock()
	defer s.limMu.Unlock()
	l, ok := s.limiters[tenant]
	if !ok {
		l = rate.NewLimiter(rate.Limit(s.cfg.Rate), s.cfg.Burst)
		s.limiters[tenant] = l
	}
	return l
}

// authorize returns the grant of the request's bearer token.
func (s *Server) authorize(r *http.Request) (Grant, *Error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return Grant{}, errorf(http.StatusUnauthorized, CodeUnauthorized, "Authorization", "a bearer token is required: Authorization: Bearer TOKEN")
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return Grant{}, errorf(http.StatusUnauthorized, CodeUnauthorized, "Authorization", "the Authorization header must be \"Bearer TOKEN\"")
	}
	g, ok := s.cfg.Tokens.Lookup(strings.TrimSpace(token))
	if !ok {
		return Grant{}, errorf(http.StatusUnauthorized, CodeUnauthorized, "Authorization", "unknown token")
	}
	return g, nil
}

// instrument wraps a route: the token and the tenant's rate for routes
// that need one, then metrics and a log line for every request.
func (s *Server) instrument(rt route) http.Handler {
	name := rt.pattern()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		var g Grant
		func() {
			defer func() {
				if p := recover(); p != nil {
					if p == http.ErrAbortHandler {
						panic(p)
					}
					s.cfg.Log.Error().Str("route", name).Interface("panic", p).Msg("handler panicked")
					if sw.status == 0 {
						writeError(sw, asError(fmt.Errorf("panic")))
					}
				}
			}()
			if rt.auth {
				var e *Error
				if g, e = s.authorize(r); e != nil {
					writeError(sw, e)
					return
				}
				if s.cfg.Rate > 0 {
					res := s.limiter(g.Tenant).Reserve()
					if d := res.Delay(); d > 0 {
						res.Cancel()
						e := errorf(http.StatusTooManyRequests, CodeRateLimited, "", fmt.Sprintf("tenant %s is over its request rate of %g a second", g.Tenant, s.cfg.Rate))
						e.RetryAfter = d
						writeError(sw, e)
						return
					}
				}
			}
			rt.handle(sw, r, g)
		}()
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		d := time.Since(start)
		s.metrics.observe(name, sw.status, d)
		lvl := zerolog.InfoLevel
		if !rt.auth {
			lvl = zerolog.DebugLevel
		}
		ev := s.cfg.Log.WithLevel(lvl).Str("route", name).Int("status", sw.status).Dur("duration", d)
		if g.Tenant != "" {
			ev = ev.Str("tenant", g.Tenant)
		}
		if id := r.PathValue("id"); id != "" {
			ev = ev.Str("run_id", id)
		}
		ev.Msg("request")
	})
}

// statusWriter records the status a handler writes.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// healthz answers 200 when Redis answers a PING within 2 seconds, else 503.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request, _ Grant) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		s.cfg.Log.Warn().Err(err).Msg("healthz: Redis does not answer")
		writeError(w, errorf(http.StatusServiceUnavailable, CodeUnavailable, "", "Redis does not answer"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request, _ Grant) {
	promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}
