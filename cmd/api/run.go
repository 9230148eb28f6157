package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/internal/api"
	"github.com/bot-bottle/bottleq/internal/cliflag"
	"github.com/bot-bottle/bottleq/internal/redisurl"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// config is the API's configuration, from flags and their environment
// fallbacks.
type config struct {
	listen      string
	tokens      string
	redisURL    string
	redisCA     string
	redisWait   time.Duration
	tlsCert     string
	tlsKey      string
	dataDir     string
	store       string
	maxOpen     int
	rate        float64
	burst       int
	maxBody     byteSize
	maxFiles    byteSize
	eventsPoll  time.Duration
	cancelWait  time.Duration
	shutdown    time.Duration
	logFormat   string
	logLevel    string
	certificate tls.Certificate // loaded from tlsCert and tlsKey
}

// envFallbacks maps each flag to the environment variable that sets it when
// the flag is not given.
var envFallbacks = []cliflag.Env{
	{"listen", "BOTTLEQ_API_LISTEN"},
	{"tokens", "BOTTLEQ_API_TOKENS"},
	{"redis", "REDIS_URL"},
	{"redis-ca", "REDIS_CA_FILE"},
	{"redis-wait", "BOTTLEQ_REDIS_WAIT"},
	{"tls-cert", "BOTTLEQ_API_TLS_CERT"},
	{"tls-key", "BOTTLEQ_API_TLS_KEY"},
	{"data-dir", "BOTTLEQ_DATA_DIR"},
	{"store", "BOTTLEQ_STORE"},
	{"max-open-runs", "BOTTLEQ_API_MAX_OPEN_RUNS"},
	{"rate", "BOTTLEQ_API_RATE"},
	{"burst", "BOTTLEQ_API_BURST"},
	{"max-body-bytes", "BOTTLEQ_API_MAX_BODY_BYTES"},
	{"max-files-bytes", "BOTTLEQ_MAX_FILES_BYTES"},
	{"events-poll", "BOTTLEQ_API_EVENTS_POLL"},
	{"cancel-wait", "BOTTLEQ_API_CANCEL_WAIT"},
	{"shutdown-timeout", "BOTTLEQ_API_SHUTDOWN_TIMEOUT"},
	{"log-format", "BOTTLEQ_LOG_FORMAT"},
	{"log-level", "BOTTLEQ_LOG_LEVEL"},
}

const usageHead = `Usage: api -tokens FILE [flags]

Serves bottleq's HTTP API (OpenAPI document at /v1/openapi.json), /healthz
and /metrics. The tokens file has one line per token:
SHA256HEX TENANT QUEUE[,QUEUE...] (or * for any queue); # starts a comment.
SIGHUP reloads it.`

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8090", "HOST:PORT to listen on; anything but loopback without -tls-cert sends tokens in clear text over the network")
	fs.StringVar(&c.tokens, "tokens", "", "tokens file (required): SHA256HEX TENANT QUEUE[,QUEUE...] per line; reloaded on SIGHUP")
	fs.StringVar(&c.redisURL, "redis", "redis://127.0.0.1:6379", "Redis URL, redis://[:PASSWORD@]HOST:PORT[/DB] or rediss:// for TLS")
	fs.StringVar(&c.redisCA, "redis-ca", "", "PEM file of CA certificates to trust for rediss://")
	fs.DurationVar(&c.redisWait, "redis-wait", redisurl.DefaultWait, "at start, how long to wait for -redis to answer before giving up (0: one try)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM certificate (chain) to serve HTTPS with; needs -tls-key")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key of -tls-cert")
	fs.StringVar(&c.dataDir, "data-dir", defaultDataDir(getenv), "the worker's data directory, to serve the artifacts of results that name no store key from (the API must run on the worker's host, as its user)")
	fs.StringVar(&c.store, "store", "", "the workers' store `URL`, as their -store, to serve artifacts from: file:///ABS/DIR or s3://BUCKET/PREFIX?endpoint=URL&region=R&path_style=true, "+
		"with S3 credentials from the standard AWS environment (default: -data-dir's store, DATA/store, the workers' default)")
	fs.IntVar(&c.maxOpen, "max-open-runs", api.DefaultMaxOpenRuns, "most runs a tenant may have that have not finished; past it POST /v1/runs is a 429 (-1: no cap)")
	fs.Float64Var(&c.rate, "rate", api.DefaultRate, "requests a second each tenant may make, per API process (-1: no cap)")
	fs.IntVar(&c.burst, "burst", api.DefaultBurst, "requests a tenant may make at once above -rate")
	c.maxFiles = tasks.DefaultMaxFilesBytes
	fs.Var(&c.maxFiles, "max-files-bytes", "cap on the total content of a run's files, as the workers' -max-files-bytes (at most "+byteSize(tasks.MaxFilesBytesLimit).String()+")")
	fs.Var(&c.maxBody, "max-body-bytes", "cap on a request body, files included (default: 256KiB plus -max-files-bytes in base64)")
	fs.DurationVar(&c.eventsPoll, "events-poll", api.DefaultEventsPoll, "how often a followed run is read, once per run whatever the number of event streams")
	fs.DurationVar(&c.cancelWait, "cancel-wait", api.DefaultCancelWait, "how long a cancel waits for a running run to end before it answers 202")
	fs.DurationVar(&c.shutdown, "shutdown-timeout", 10*time.Second, "on SIGTERM, how long requests in flight may finish")
	fs.StringVar(&c.logFormat, "log-format", "auto", "auto (console on a terminal, else JSON), json or console")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	origin, err := cliflag.Parse(fs, args, envFallbacks, getenv, usageHead, stderr)
	if err != nil {
		return c, err
	}
	if _, _, err := net.SplitHostPort(c.listen); err != nil {
		return c, fmt.Errorf("%s: %q is not HOST:PORT", origin["listen"], c.listen)
	}
	if c.tokens == "" {
		return c, errors.New("-tokens: a tokens file is required (BOTTLEQ_API_TOKENS)")
	}
	if _, err := api.LoadTokensFile(c.tokens); err != nil {
		return c, fmt.Errorf("%s: %w", origin["tokens"], err)
	}
	opt, err := redisurl.Parse(c.redisURL)
	if err != nil {
		return c, fmt.Errorf("%s: %w", origin["redis"], err)
	}
	if _, err := redisurl.WithCA(opt, c.redisCA); err != nil {
		return c, fmt.Errorf("%s: %w", origin["redis-ca"], err)
	}
	switch {
	case (c.tlsCert == "") != (c.tlsKey == ""):
		return c, errors.New("-tls-cert and -tls-key go together")
	case c.tlsCert != "":
		if c.certificate, err = tls.LoadX509KeyPair(c.tlsCert, c.tlsKey); err != nil {
			return c, fmt.Errorf("%s: %w", origin["tls-cert"], err)
		}
	}
	if !filepath.IsAbs(c.dataDir) {
		return c, fmt.Errorf("%s: %q must be an absolute path", origin["data-dir"], c.dataDir)
	}
	if c.store != "" {
		if _, err := store.ParseURL(c.store); err != nil {
			return c, fmt.Errorf("%s: %w", origin["store"], err)
		}
	}
	switch {
	case c.maxOpen == 0 || c.maxOpen < -1:
		return c, fmt.Errorf("%s: %d must be at least 1, or -1 for no cap", origin["max-open-runs"], c.maxOpen)
	case c.rate == 0 || c.rate < 0 && c.rate != -1:
		return c, fmt.Errorf("%s: %g must be above 0, or -1 for no cap", origin["rate"], c.rate)
	case c.burst < 1:
		return c, fmt.Errorf("%s: %d must be at least 1", origin["burst"], c.burst)
	case c.maxFiles < 1 || c.maxFiles > tasks.MaxFilesBytesLimit:
		return c, fmt.Errorf("%s: %s is not between 1 byte and the hard limit of %s", origin["max-files-bytes"], c.maxFiles, byteSize(tasks.MaxFilesBytesLimit))
	case c.maxBody < 0 || c.maxBody > 0 && c.maxBody < 1024:
		return c, fmt.Errorf("%s: %s is under 1KiB", origin["max-body-bytes"], c.maxBody)
	case c.eventsPoll < 10*time.Millisecond:
		return c, fmt.Errorf("%s: %s is under 10ms", origin["events-poll"], c.eventsPoll)
	case c.cancelWait <= 0:
		return c, fmt.Errorf("%s: must be above 0", origin["cancel-wait"])
	case c.shutdown <= 0:
		return c, fmt.Errorf("%s: must be above 0", origin["shutdown-timeout"])
	case c.redisWait < 0:
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

// routeLibraryLogs takes the API's logger for the lines libraries log on
// their own (go-redis, Go's log package). It is process-wide: main sets it
// to cliflag.RouteLibraryLogs; tests that call Run leave it alone.
var routeLibraryLogs = func(zerolog.Logger) {}

// Run serves the API until ctx ends and returns the process exit code: 0
// after a clean shutdown (and for -h and -version), 2 for bad flags, 1 for
// anything else. SIGHUP reloads the tokens file.
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				select {
				case reload <- struct{}{}:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return run(ctx, args, getenv, stderr, reload)
}

// run is Run with the reloads coming from reload.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, reload <-chan struct{}) int {
	c, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return cliflag.ExitCode(stderr, "api", err)
	}
	log, _ := cliflag.Logger(c.logFormat, c.logLevel, stderr) // checked by parseFlags
	routeLibraryLogs(log)
	if err := serve(ctx, c, log, reload); err != nil {
		log.Error().Err(err).Msg("api stopped")
		return 1
	}
	return 0
}

func serve(ctx context.Context, c config, log zerolog.Logger, reload <-chan struct{}) error {
	tokens, err := api.LoadTokensFile(c.tokens)
	if err != nil {
		return fmt.Errorf("-tokens: %w", err)
	}
	rc, err := redisurl.Open(c.redisURL, c.redisCA)
	if errors.Is(err, redisurl.ErrCA) {
		return fmt.Errorf("-redis-ca: %w", err)
	}
	if err != nil {
		return fmt.Errorf("-redis: %w", err)
	}
	defer rc.Close() // after srv, which uses it
	if err := redisurl.Ping(ctx, rc, c.redisWait); err != nil {
		return fmt.Errorf("-redis: %s: %w", redisurl.Redacted(c.redisURL), err)
	}
	// The event streams' blocking reads of live output get a pool of
	// their own, so that they never take the connections requests need.
	liveOpt, err := redisurl.Parse(c.redisURL)
	if err == nil {
		liveOpt, err = redisurl.WithCA(liveOpt, c.redisCA)
	}
	if err != nil {
		return fmt.Errorf("-redis: %w", err)
	}
	st, storeName, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	srv, err := api.New(api.Config{
		Redis:         redisurl.Shared(rc),
		LiveRedis:     redisurl.WithPoolSize(liveOpt, api.LiveReaders),
		Tokens:        tokens,
		Artifacts:     api.StoreArtifacts{Store: st, Local: api.LocalArtifacts{DataDir: c.dataDir}},
		MaxOpenRuns:   c.maxOpen,
		Rate:          c.rate,
		Burst:         c.burst,
		MaxBodyBytes:  int64(c.maxBody),
		MaxFilesBytes: int64(c.maxFiles),
		EventsPoll:    c.eventsPoll,
		CancelWait:    c.cancelWait,
		Log:           log,
	})
	if err != nil {
		ln.Close()
		return err
	}
	defer srv.Close()
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// net/http's own errors (TLS handshakes that fail, say), as log lines.
		ErrorLog: stdlog.New(log.With().Str("component", "http").Logger(), "", 0),
	}
	hs.RegisterOnShutdown(srv.CloseStreams)
	useTLS := c.tlsCert != ""
	if useTLS {
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{c.certificate}, MinVersion: tls.VersionTLS12}
	}
	if host, _, _ := net.SplitHostPort(c.listen); !useTLS && !isLoopback(host) {
		log.Warn().Str("listen", c.listen).Msg("serving plain HTTP beyond loopback: tokens travel in clear text; use -tls-cert and -tls-key, or a TLS proxy")
	}
	if tokens.Len() == 0 {
		log.Warn().Str("tokens", c.tokens).Msg("the tokens file lists no token: every request to /v1/runs is refused until one is added (SIGHUP reloads it)")
	}
	log.Info().
		Str("addr", ln.Addr().String()).
		Bool("tls", useTLS).
		Int("tokens", tokens.Len()).
		Str("redis", redisurl.Redacted(c.redisURL)).
		Str("data_dir", c.dataDir).
		Str("store", storeName).
		Msg("api listening")

	errc := make(chan error, 1)
	go func() {
		if useTLS {
			errc <- hs.ServeTLS(ln, "", "")
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	for done := false; !done; {
		select {
		case err := <-errc:
			return err
		case <-reload:
			if err := tokens.LoadFile(c.tokens); err != nil {
				log.Error().Err(err).Msg("tokens not reloaded; the tokens loaded before stay in force")
			} else {
				log.Info().Int("tokens", tokens.Len()).Msg("tokens reloaded")
			}
		case <-ctx.Done():
			done = true
		}
	}
	log.Info().Msg("api shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.shutdown)
	defer cancel()
	err = hs.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	log.Info().Msg("api stopped")
	return err
}

// openStore opens -store, failing when it does not work; without one, the
// store in -data-dir (the worker's default, file://DATA/store) when that
// directory exists and opens, else none. name is the store's URL for the
// log (no secret: store URLs hold none), or "none".
func openStore(ctx context.Context, c config) (st store.Store, name string, err error) {
	if c.store != "" {
		st, err := store.Open(ctx, c.store)
		if err != nil {
			return nil, "", fmt.Errorf("-store: %w", err)
		}
		loc, _ := store.ParseURL(c.store) // checked by parseFlags
		return st, loc.String(), nil
	}
	// The workers' default store, read where it lies: a file store touches
	// no disk until it is written to, so an API started before its worker,
	// or with the data directory mounted read-only, serves what the worker
	// stores there later.
	dir, err := filepath.Abs(filepath.Join(c.dataDir, "store"))
	if err == nil {
		st, err = store.NewFile(dir)
	}
	if err != nil {
		return nil, "", fmt.Errorf("-data-dir: %w", err)
	}
	return st, "file://" + dir, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// defaultDataDir is the worker's default -data-dir.
func defaultDataDir(getenv func(string) string) string {
	if d := getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "bottleq")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "share", "bottleq")
	}
	return filepath.Join(os.TempDir(), "bottleq")
}

// byteSize is the flag type of byte counts, shared by every command.
type byteSize = cliflag.ByteSize
