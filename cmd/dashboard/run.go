package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	// asynq's queue collector, from the untagged module asynq/x: go.mod
	// pins the newest commit that both the module proxy and the checksum
	// database serve. It needs only asynq's public Inspector API and older
	// asynq and client_golang than ours, so it leaves our versions and our
	// go directive as they are.
	"github.com/hibiken/asynq/x/metrics"

	"github.com/bot-bottle/bottleq/internal/cliflag"
	"github.com/bot-bottle/bottleq/internal/redisurl"
)

// shutdownTimeout bounds how long in-flight HTTP requests may finish after
// ctx ends.
const shutdownTimeout = 5 * time.Second

// config is the dashboard's configuration, from flags and their
// environment fallbacks.
type config struct {
	addr         string
	allowedHosts hostList
	redisURL     string
	redisCA      string
	redisWait    time.Duration
	writable     bool
	logFormat    string
	logLevel     string
}

// envFallbacks maps each flag to the environment variable that sets it when
// the flag is not given.
var envFallbacks = []cliflag.Env{
	{"addr", "BOTTLEQ_DASHBOARD_ADDR"},
	{"allowed-hosts", "BOTTLEQ_DASHBOARD_HOSTS"},
	{"redis", "REDIS_URL"},
	{"redis-ca", "REDIS_CA_FILE"},
	{"redis-wait", "BOTTLEQ_REDIS_WAIT"},
	{"writable", "BOTTLEQ_DASHBOARD_WRITABLE"},
	{"log-format", "BOTTLEQ_LOG_FORMAT"},
	{"log-level", "BOTTLEQ_LOG_LEVEL"},
}

// newFlagSet defines the flags into c. It prints nothing itself.
func newFlagSet(c *config) *flag.FlagSet {
	fs := flag.NewFlagSet("dashboard", flag.ContinueOnError)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "HOST:PORT to listen on; anything but loopback exposes the UI, which has no authentication, to the network")
	fs.Var(&c.allowedHosts, "allowed-hosts", "host names, comma-separated (ports ignored), that browsers may use for the dashboard besides -addr's host "+
		"(and localhost, 127.0.0.1, ::1 when -addr is loopback or every interface); any other Host header is refused (421), which stops DNS rebinding. "+
		"Behind a reverse proxy, list the name users browse to and have the proxy pass their Host header unchanged (nginx: proxy_set_header Host $http_host); "+
		"a proxy that rewrites Host to -addr gets reads but not -writable's changes, whose Origin must match Host")
	fs.StringVar(&c.redisURL, "redis", "redis://127.0.0.1:6379", "Redis URL: redis://[[USER]:PASSWORD@]HOST:PORT[/DB], rediss:// for TLS, or Sentinel's redis-sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...][/DB]?master=NAME (see README)")
	fs.StringVar(&c.redisCA, "redis-ca", "", "PEM file of CA certificates to trust for rediss:// (and TLS to Sentinel)")
	fs.DurationVar(&c.redisWait, "redis-wait", redisurl.DefaultWait, "at start, how long to wait for -redis to answer before giving up (0: one try)")
	fs.BoolVar(&c.writable, "writable", false, "allow the UI's changes (run, archive, delete, cancel, pause tasks and queues); without it every request but GET, HEAD and OPTIONS is refused. "+
		"Even then a change must come from the dashboard's own pages (Origin, else Sec-Fetch-Site or Referer, matching Host) or from no browser at all, with a JSON body or none")
	fs.StringVar(&c.logFormat, "log-format", "auto", "auto (console on a terminal, else JSON), json or console")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	return fs
}

// parseFlags reads flags, then environment fallbacks for flags not given.
// The error names the flag, or the variable the value came from.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := newFlagSet(&c)
	origin, err := cliflag.Parse(fs, args, envFallbacks, getenv,
		"Usage: dashboard [flags]\n\nServes the asynq web UI for bottleq's queues, and Prometheus metrics at /metrics.", stderr)
	if err != nil {
		return c, err
	}
	if _, _, err := net.SplitHostPort(c.addr); err != nil {
		return c, fmt.Errorf("%s: %q is not HOST:PORT", origin["addr"], c.addr)
	}
	opt, err := redisurl.Parse(c.redisURL)
	if err != nil {
		return c, fmt.Errorf("%s: %w", origin["redis"], err)
	}
	if _, err := redisurl.WithCA(opt, c.redisCA); err != nil {
		return c, fmt.Errorf("%s: %w", origin["redis-ca"], err)
	}
	if c.redisWait < 0 {
		return c, fmt.Errorf("%s: %s must not be negative", origin["redis-wait"], c.redisWait)
	}
	if _, err := cliflag.Logger(c.logFormat, "info", io.Discard); err != nil {
		return c, fmt.Errorf("%s: %w", origin["log-format"], err)
	}
	if _, err := cliflag.Logger("json", c.logLevel, io.Discard); err != nil {
		return c, fmt.Errorf("%s: %w", origin["log-level"], err)
	}
	return c, nil
}

// routeLibraryLogs takes the dashboard's logger for the lines libraries
// log on their own (asynq's queue metrics and asynqmon through Go's log
// package, go-redis). It is process-wide: main sets it to
// cliflag.RouteLibraryLogs; tests that call Run leave it alone.
var routeLibraryLogs = func(zerolog.Logger) {}

// Run serves the dashboard until ctx ends and returns the process exit
// code: 0 after a clean shutdown (and for -h), 2 for bad flags, 1 for
// anything else.
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	c, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return cliflag.ExitCode(stderr, "dashboard", err)
	}
	log, _ := cliflag.Logger(c.logFormat, c.logLevel, stderr) // checked by parseFlags
	routeLibraryLogs(log)
	if err := serve(ctx, c, log); err != nil {
		log.Error().Err(err).Msg("dashboard stopped")
		return 1
	}
	return 0
}

// newHandler returns the dashboard's routes, behind guard: /metrics, and
// the asynqmon UI and its /api for everything else, all on the one Redis
// client rc, which the caller closes after close.
func newHandler(c config, rc redis.UniversalClient, log zerolog.Logger) (h http.Handler, close func()) {
	mon := asynqmon.New(asynqmon.Options{
		// asynqmon takes no client, only a RedisConnOpt: Shared hands it rc.
		RedisConnOpt: redisurl.Shared(rc),
		// Hides the UI's buttons; guard refuses the requests either way.
		ReadOnly:        !c.writable,
		ResultFormatter: asynqmon.ResultFormatterFunc(formatResult),
		// asynqmon's default shows payloads raw, env values and all.
		PayloadFormatter: asynqmon.PayloadFormatterFunc(formatPayload),
	})
	insp := asynq.NewInspectorFromRedisClient(rc)
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		// Unchecked, so that registering does not already query Redis.
		unchecked{metrics.NewQueueMetricsCollector(insp)},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", mon)
	return guard(mux, newHostPolicy(c.addr, c.allowedHosts), c.writable, log), func() { mon.Close() }
}

// unchecked is a collector that describes nothing up front: the registry
// then takes its metrics as they come instead of calling Collect (and so
// Redis) at registration to learn them.
type unchecked struct{ prometheus.Collector }

// Describe sends no descriptions, which makes the collector unchecked.
func (unchecked) Describe(chan<- *prometheus.Desc) {}

func serve(ctx context.Context, c config, log zerolog.Logger) error {
	rc, err := redisurl.Open(c.redisURL, c.redisCA)
	if errors.Is(err, redisurl.ErrCA) {
		return fmt.Errorf("-redis-ca: %w", err)
	}
	if err != nil {
		return fmt.Errorf("-redis: %w", err)
	}
	defer rc.Close()
	if err := redisurl.Ping(ctx, rc, c.redisWait); err != nil {
		return fmt.Errorf("-redis: %s: %w", redisurl.Redacted(c.redisURL), err)
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	h, closeHandler := newHandler(c, rc, log)
	defer closeHandler()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Info().
		Str("addr", ln.Addr().String()).
		Str("redis", redisurl.Redacted(c.redisURL)).
		Strs("allowed_hosts", slices.Sorted(maps.Keys(newHostPolicy(c.addr, c.allowedHosts)))).
		Bool("writable", c.writable).
		Msg("dashboard listening")

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	log.Info().Msg("dashboard stopped")
	return err
}
