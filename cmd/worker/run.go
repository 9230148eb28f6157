package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/egress"
	"github.com/bot-bottle/bottleq/internal/cliflag"
	"github.com/bot-bottle/bottleq/internal/redisurl"
	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
	"github.com/bot-bottle/bottleq/worker"
)

// config is the worker's configuration, from flags and their environment
// fallbacks.
type config struct {
	redisURL      string
	redisCA       string
	redisWait     time.Duration
	embeddedRedis string
	smolvmBin     string
	dataDir       string
	fromDirs      dirList
	host          string
	deployment    string
	proxy         string
	egressListen  string
	egressPrivate bool
	egressLoop    bool
	egressDeny    egress.Prefixes
	unenforced    bool
	concurrency   int
	queues        string
	strict        bool
	pollInterval  time.Duration
	shutdown      time.Duration
	readyTimeout  time.Duration
	cpTimeout     time.Duration
	retryBase     time.Duration
	retryMax      time.Duration
	packTTL       time.Duration
	reapInterval  time.Duration
	metricsAddr   string
	reapMinAge    time.Duration
	logFormat     string
	logLevel      string
	maxFiles      byteSize
	maxArtifact   byteSize
	maxArtifacts  byteSize
	liveOutput    byteSize
	registries    registryList
	vmCPUs        int
	vmMemMiB      int
	warm          warmList
	warmMax       int
	warmMaxAge    time.Duration
	store         string
	retention     days
	cacheMax      byteSize
	outputResult  bool
}

// envFallbacks maps each flag to the environment variable that sets it when
// the flag is not given.
var envFallbacks = []cliflag.Env{
	{"redis", "REDIS_URL"},
	{"redis-ca", "REDIS_CA_FILE"},
	{"redis-wait", "BOTTLEQ_REDIS_WAIT"},
	{"embedded-redis", "BOTTLEQ_EMBEDDED_REDIS"},
	{"smolvm", "SMOLVM_BIN"},
	{"data-dir", "BOTTLEQ_DATA_DIR"},
	{"from-dir", "BOTTLEQ_FROM_DIRS"},
	{"host", "BOTTLEQ_HOST"},
	{"deployment", "BOTTLEQ_DEPLOYMENT"},
	{"proxy", "BOTTLEQ_PROXY"},
	{"egress-listen", "BOTTLEQ_EGRESS_LISTEN"},
	{"egress-allow-private", "BOTTLEQ_EGRESS_ALLOW_PRIVATE"},
	{"egress-deny", "BOTTLEQ_EGRESS_DENY"},
	{"egress-allow-loopback-for-tests", "BOTTLEQ_EGRESS_ALLOW_LOOPBACK_FOR_TESTS"},
	{"allow-unenforced-egress", "BOTTLEQ_ALLOW_UNENFORCED_EGRESS"},
	{"vm-cpus", "BOTTLEQ_VM_CPUS"},
	{"vm-mem", "BOTTLEQ_VM_MEM"},
	{"concurrency", "BOTTLEQ_CONCURRENCY"},
	{"queues", "BOTTLEQ_QUEUES"},
	{"strict-priority", "BOTTLEQ_STRICT_PRIORITY"},
	{"poll-interval", "BOTTLEQ_POLL_INTERVAL"},
	{"shutdown-timeout", "BOTTLEQ_SHUTDOWN_TIMEOUT"},
	{"ready-timeout", "BOTTLEQ_READY_TIMEOUT"},
	{"cp-timeout", "BOTTLEQ_CP_TIMEOUT"},
	{"retry-base", "BOTTLEQ_RETRY_BASE"},
	{"retry-max", "BOTTLEQ_RETRY_MAX"},
	{"pack-ttl", "BOTTLEQ_PACK_TTL"},
	{"reap-interval", "BOTTLEQ_REAP_INTERVAL"},
	{"metrics-addr", "BOTTLEQ_METRICS_ADDR"},
	{"reap-min-age", "BOTTLEQ_REAP_MIN_AGE"},
	{"max-files-bytes", "BOTTLEQ_MAX_FILES_BYTES"},
	{"max-artifact-bytes", "BOTTLEQ_MAX_ARTIFACT_BYTES"},
	{"max-artifacts-bytes", "BOTTLEQ_MAX_ARTIFACTS_BYTES"},
	{"live-output-bytes", "BOTTLEQ_LIVE_OUTPUT_BYTES"},
	{"registries", "BOTTLEQ_REGISTRIES"},
	{"log-format", "BOTTLEQ_LOG_FORMAT"},
	{"log-level", "BOTTLEQ_LOG_LEVEL"},
	{"warm", "BOTTLEQ_WARM"},
	{"warm-max", "BOTTLEQ_WARM_MAX"},
	{"warm-max-age", "BOTTLEQ_WARM_MAX_AGE"},
	{"store", "BOTTLEQ_STORE"},
	{"retention", "BOTTLEQ_RETENTION"},
	{"cache-max-bytes", "BOTTLEQ_CACHE_MAX_BYTES"},
	{"output-in-result", "BOTTLEQ_OUTPUT_IN_RESULT"},
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.redisURL, "redis", "", "Redis URL: redis://[[USER]:PASSWORD@]HOST:PORT[/DB], rediss:// for TLS, or Sentinel's redis-sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...][/DB]?master=NAME (see README); empty: run an embedded in-memory Redis")
	fs.StringVar(&c.redisCA, "redis-ca", "", "PEM file of CA certificates to trust for rediss:// (and TLS to Sentinel)")
	fs.DurationVar(&c.redisWait, "redis-wait", redisurl.DefaultWait, "at start, how long to wait for -redis to answer before giving up (0: one try)")
	fs.StringVar(&c.embeddedRedis, "embedded-redis", "127.0.0.1:6379", "address of the embedded Redis when -redis is empty")
	fs.StringVar(&c.smolvmBin, "smolvm", "smolvm", "smolvm binary, a path or a name on PATH")
	fs.StringVar(&c.dataDir, "data-dir", defaultDataDir(getenv), "directory for the cache of packs and commits (cache/), this host's copies of artifacts (artifacts/TENANT/TASK-HASH/), temporary files (tmp/) and the default store (store/); made private (0700)")
	fs.StringVar(&c.store, "store", "", "object store of commits, artifacts and image packs, shared by the workers of a pool: file:///ABS/DIR, or s3://BUCKET/PREFIX?endpoint=URL&region=R&path_style=true with credentials from the AWS environment (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...) (default: file://DATA/store, in -data-dir)")
	c.retention = days(worker.DefaultRetention)
	fs.Var(&c.retention, "retention", "how long commits and artifacts stay in the store: a Go duration such as 36h, or whole days such as 7d")
	c.cacheMax = worker.DefaultCacheMaxBytes
	fs.Var(&c.cacheMax, "cache-max-bytes", "cap on this host's cache of packs and commits taken from the store (cache/ in -data-dir); the least recently used go first, never one a running task uses")
	fs.Var(&c.fromDirs, "from-dir", "directory a task's absolute from path may name a pack in; repeatable, or several separated by "+strconv.Quote(string(os.PathListSeparator))+" (default: none, so such paths are refused)")
	fs.StringVar(&c.host, "host", "", "this host's name in results (default: the hostname)")
	fs.StringVar(&c.deployment, "deployment", "", "ID in the names of this deployment's VMs, 1-10 lowercase letters and digits; the reaper deletes no other deployment's VMs (default: a hash of the Redis address and database; of an embedded Redis, the address it listens on)")
	fs.StringVar(&c.proxy, "proxy", "", "egress proxy http://IP:PORT; VMs may reach only it (default: VMs get no network)")
	fs.StringVar(&c.egressListen, "egress-listen", "", "run the bundled egress proxy on IP:PORT; VMs may reach only it, each task only its allow_hosts (-proxy defaults to this address)")
	fs.BoolVar(&c.egressPrivate, "egress-allow-private", false, "let tasks' allow_hosts reach private ranges (10/8, 172.16/12, 192.168/16, CGNAT, fc00::/7)")
	fs.Var(&c.egressDeny, "egress-deny", "a range no task may reach through the bundled proxy, whatever its allow_hosts say: CIDR or IP, comma-separated (repeatable)")
	fs.BoolVar(&c.egressLoop, "egress-allow-loopback-for-tests", false, "TESTS ONLY: let tasks reach loopback addresses through the bundled proxy")
	fs.BoolVar(&c.unenforced, "allow-unenforced-egress", false, "allow -proxy with smolvm < 1.8.0, which does NOT restrict egress of VMs created from a pack")
	fs.IntVar(&c.vmCPUs, "vm-cpus", worker.DefaultVMCPUs, "vCPUs of each task's VM, and the most a task may ask for (cpus)")
	fs.IntVar(&c.vmMemMiB, "vm-mem", worker.DefaultVMMemMiB, "memory of each task's VM in MiB, and the most a task may ask for (mem_mib)")
	fs.IntVar(&c.concurrency, "concurrency", worker.DefaultConcurrency, "tasks (VMs) at once")
	fs.StringVar(&c.queues, "queues", tasks.DefaultQueue+"=1", "queues and priorities, NAME=PRIORITY,...")
	fs.BoolVar(&c.strict, "strict-priority", false, "drain higher-priority queues first instead of weighting")
	fs.DurationVar(&c.pollInterval, "poll-interval", worker.DefaultPollInterval, "how often an idle worker looks for tasks")
	fs.DurationVar(&c.shutdown, "shutdown-timeout", worker.DefaultShutdownTimeout, "on SIGTERM, how long running tasks may finish before they are requeued")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", worker.DefaultReadyTimeout, "how long a started VM has to accept exec")
	fs.DurationVar(&c.cpTimeout, "cp-timeout", worker.DefaultCopyTimeout, "how long each smolvm machine cp may take; an artifact not copied in time is reported, a file not copied in fails the attempt")
	fs.DurationVar(&c.retryBase, "retry-base", worker.DefaultRetryBase, "first retry delay of a failed task; doubles per retry")
	fs.DurationVar(&c.retryMax, "retry-max", worker.DefaultRetryMax, "longest retry delay")
	fs.DurationVar(&c.packTTL, "pack-ttl", worker.DefaultPackTTL, "how long a tagged image's pack is reused before it is packed again (0: the default; negative, such as -1s: forever; digest-pinned images: forever)")
	fs.DurationVar(&c.reapInterval, "reap-interval", worker.DefaultReapInterval, "how often to delete VMs left by crashed workers (0: never)")
	fs.DurationVar(&c.reapMinAge, "reap-min-age", worker.DefaultReapMinAge, "spare VMs younger than this from the reaper")
	fs.StringVar(&c.metricsAddr, "metrics-addr", defaultMetricsAddr, "address of the Prometheus /metrics endpoint, HOST:PORT, or HOST:FIRST-LAST to take the first free port of a range, so that several workers share a host (\"off\": none)")
	c.maxFiles, c.maxArtifact, c.maxArtifacts = tasks.DefaultMaxFilesBytes, worker.DefaultMaxArtifactBytes, worker.DefaultMaxArtifactsBytes
	fs.Var(&c.maxFiles, "max-files-bytes", "cap on the total content of a task's files, such as 4MiB (at most "+byteSize(tasks.MaxFilesBytesLimit).String()+"); a task over it is archived")
	fs.Var(&c.maxArtifact, "max-artifact-bytes", "cap on one artifact; a bigger one is deleted and reported")
	fs.Var(&c.maxArtifacts, "max-artifacts-bytes", "cap on a task's artifacts together; those past it are deleted and reported")
	c.liveOutput = worker.DefaultLiveOutputBytes
	fs.Var(&c.liveOutput, "live-output-bytes", "cap on a task's live output in Redis, which enqueue --wait shows as the agent writes it (at most "+byteSize(maxLiveOutput).String()+"; 0: none); output past it is not streamed")
	c.registries, _ = worker.ParseRegistries(worker.DefaultRegistries)
	fs.Var(&c.registries, "registries", "registries tasks' images may come from, HOST or HOST:PORT, comma-separated (an image naming none, such as alpine:3, is on docker.io; \""+worker.AnyRegistry+"\": any)")
	fs.StringVar(&c.logFormat, "log-format", "auto", "auto (console on a terminal, else JSON), json or console")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.Var(&c.warm, "warm", "keep N started VMs of IMAGE waiting for its tasks, IMAGE=N,... (default: none)")
	fs.BoolVar(&c.outputResult, "output-in-result", false, "keep tasks' output in their results, the head and tail of each stream (32 KiB each), rather than in -store with only its tail in the result")
	fs.IntVar(&c.warmMax, "warm-max", 0, "most warm VMs in total, apart from -concurrency (0: the sum of -warm)")
	fs.DurationVar(&c.warmMaxAge, "warm-max-age", worker.DefaultWarmMaxAge, "a warm VM unclaimed this long is replaced")
	origin, err := cliflag.Parse(fs, args, envFallbacks, getenv, "Usage: worker [flags]\n\nRuns bottleq's agent:run tasks in smolvm microVMs.", stderr)
	if err != nil {
		return c, err
	}
	if c.concurrency < 1 {
		return c, fmt.Errorf("-concurrency: must be at least 1")
	}
	if _, err := parseQueues(c.queues); err != nil {
		return c, err
	}
	if c.vmCPUs < 1 || c.vmCPUs > smolvm.MaxCPUs {
		return c, fmt.Errorf("-vm-cpus: %d is not between 1 and %d", c.vmCPUs, smolvm.MaxCPUs)
	}
	if c.vmMemMiB < 1 || int64(c.vmMemMiB) > smolvm.MaxMemoryMiB {
		return c, fmt.Errorf("-vm-mem: %d MiB is not between 1 and %d", c.vmMemMiB, int64(smolvm.MaxMemoryMiB))
	}
	if c.maxFiles < 1 || c.maxFiles > tasks.MaxFilesBytesLimit {
		return c, fmt.Errorf("-max-files-bytes: %s is not between 1 byte and the hard limit of %s", c.maxFiles, byteSize(tasks.MaxFilesBytesLimit))
	}
	if c.maxArtifact < 1 || c.maxArtifacts < 1 {
		return c, fmt.Errorf("-max-artifact-bytes, -max-artifacts-bytes: must be at least 1 byte")
	}
	if c.liveOutput > maxLiveOutput {
		return c, fmt.Errorf("%s: %s is over %s", origin["live-output-bytes"], c.liveOutput, byteSize(maxLiveOutput))
	}
	if c.redisWait < 0 {
		return c, fmt.Errorf("%s: %s must not be negative", origin["redis-wait"], c.redisWait)
	}
	if c.warmMax < 0 {
		return c, fmt.Errorf("%s: %d must not be negative", origin["warm-max"], c.warmMax)
	}
	if c.retention <= 0 {
		return c, fmt.Errorf("%s: %s must be positive", origin["retention"], c.retention)
	}
	if c.cacheMax < 1 {
		return c, fmt.Errorf("%s: must be at least 1 byte", origin["cache-max-bytes"])
	}
	if c.store != "" {
		if _, err := store.ParseURL(c.store); err != nil {
			return c, fmt.Errorf("%s: %w", origin["store"], err)
		}
	}
	if c.warmMaxAge <= 0 {
		return c, fmt.Errorf("%s: %s must be positive", origin["warm-max-age"], c.warmMaxAge)
	}
	if _, err := cliflag.Logger(c.logFormat, "info", io.Discard); err != nil {
		return c, fmt.Errorf("%s: %w", origin["log-format"], err)
	}
	if _, err := cliflag.Logger("json", c.logLevel, io.Discard); err != nil {
		return c, fmt.Errorf("%s: %w", origin["log-level"], err)
	}
	if c.deployment != "" {
		if err := worker.ValidateDeployment(c.deployment); err != nil {
			return c, fmt.Errorf("%s: %w", origin["deployment"], err)
		}
	}
	if c.redisURL != "" {
		if _, err := redisurl.Parse(c.redisURL); err != nil {
			return c, fmt.Errorf("%s: %w", origin["redis"], err)
		}
	}
	for _, name := range []string{"embedded-redis", "metrics-addr", "egress-listen"} {
		addr := fs.Lookup(name).Value.String()
		if addr == "" || (name == "metrics-addr" && addr == "off") {
			continue
		}
		check := checkHostPort
		if name == "metrics-addr" {
			check = checkMetricsAddr
		}
		if err := check(addr); err != nil {
			return c, fmt.Errorf("%s: %w", origin[name], err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lookup := func(ctx context.Context, host string) ([]netip.Addr, error) {
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
	if c.proxy == "" && c.egressListen != "" {
		addr, err := resolveListen(ctx, c.egressListen, lookup)
		if err != nil {
			return c, fmt.Errorf("%s %s: %w", origin["egress-listen"], c.egressListen, err)
		}
		c.egressListen = addr
	}
	if err := checkDoor(ctx, c, origin, lookup); err != nil {
		return c, err
	}
	return c, nil
}

// dirList is a repeatable flag of directories; one value may also list
// several separated by os.PathListSeparator, as its environment variable
// does.
type dirList []string

func (d *dirList) String() string { return strings.Join(*d, string(os.PathListSeparator)) }

func (d *dirList) Set(s string) error {
	if s == "" {
		return fmt.Errorf("an empty directory name")
	}
	for _, dir := range filepath.SplitList(s) {
		if dir == "" {
			return fmt.Errorf("%q holds an empty directory name", s)
		}
		*d = append(*d, dir)
	}
	return nil
}

// days is a duration flag that also reads whole days, such as 7d, and
// writes itself in days when it is whole days.
type days time.Duration

func (d days) String() string {
	if d > 0 && time.Duration(d)%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(time.Duration(d)/(24*time.Hour)), 10) + "d"
	}
	return time.Duration(d).String()
}

func (d *days) Set(s string) error {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil || v < 0 || v > int64(math.MaxInt64/(24*time.Hour)) {
			return fmt.Errorf("%q is not a whole number of days such as 7d", s)
		}
		*d = days(time.Duration(v) * 24 * time.Hour)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 36h or 7d", s)
	}
	*d = days(v)
	return nil
}

// storeURL is -store, or the file store in the data directory.
func storeURL(c config) (string, error) {
	if c.store != "" {
		return c.store, nil
	}
	dir, err := filepath.Abs(filepath.Join(c.dataDir, "store"))
	if err != nil {
		return "", fmt.Errorf("-data-dir: %w", err)
	}
	return (&url.URL{Scheme: "file", Path: dir}).String(), nil
}

// storeOpenTimeout bounds the check of the store at start.
const storeOpenTimeout = 30 * time.Second

// openStore opens the store and proves it works (credentials, bucket,
// directory), or fails in one line naming -store.
func openStore(ctx context.Context, c config, log zerolog.Logger) (store.Store, error) {
	u, err := storeURL(c)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, storeOpenTimeout)
	defer cancel()
	st, err := store.Open(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("-store: %w", err)
	}
	loc, _ := store.ParseURL(u) // checked by Open; its String holds no secret
	log.Info().Str("store", loc.String()).Msg("using store")
	return st, nil
}

// maxLiveOutput bounds -live-output-bytes: each task's stream lives in
// Redis as long as the task.
const maxLiveOutput = 64 << 20

// warmList is the -warm flag, as worker.ParseWarm reads it.
type warmList map[string]int

func (w warmList) String() string {
	var parts []string
	for _, img := range slices.Sorted(maps.Keys(w)) {
		parts = append(parts, img+"="+strconv.Itoa(w[img]))
	}
	return strings.Join(parts, ",")
}

func (w *warmList) Set(s string) (err error) {
	*w, err = worker.ParseWarm(s)
	return err
}

// byteSize is the flag type of byte counts, shared by every command.
type byteSize = cliflag.ByteSize

// registryList is a flag of registries, as worker.ParseRegistries reads
// them.
type registryList []string

func (r registryList) String() string { return strings.Join(r, ",") }

func (r *registryList) Set(s string) (err error) {
	*r, err = worker.ParseRegistries(s)
	return err
}

func defaultDataDir(getenv func(string) string) string {
	if d := getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "bottleq")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "share", "bottleq")
	}
	return filepath.Join(os.TempDir(), "bottleq")
}

func parseQueues(s string) (map[string]int, error) {
	qs := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		name, prio, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(prio)
		if !ok || name == "" || err != nil || n < 1 {
			return nil, fmt.Errorf("-queues: %q must be NAME=PRIORITY with a priority of at least 1", part)
		}
		qs[name] = n
	}
	return qs, nil
}

// routeLibraryLogs takes the worker's logger for the lines libraries log
// on their own. It is process-wide: main sets it to
// cliflag.RouteLibraryLogs; tests that call Run leave it alone.
var routeLibraryLogs = func(zerolog.Logger) {}

// Run runs the worker until ctx ends and returns the process exit code:
// 0 after a clean shutdown, 2 for bad flags, 1 for anything else.
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	c, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return cliflag.ExitCode(stderr, "worker", err)
	}
	log, _ := cliflag.Logger(c.logFormat, c.logLevel, stderr) // checked by parseFlags
	routeLibraryLogs(log)
	if err := serve(ctx, c, log); err != nil {
		log.Error().Err(err).Msg("worker stopped")
		fmt.Fprintln(stderr, "worker:", err)
		return 1
	}
	return 0
}

// serve checks the whole configuration, as far as it can without binding
// an address, before it binds one: a bad configuration is reported as
// such, not as an address in use. Then it listens and serves.
func serve(ctx context.Context, c config, log zerolog.Logger) error {
	redisOpt, err := redisOption(c)
	if err != nil {
		return err
	}
	deployment := deploymentOf(c, redisOpt) // the embedded Redis's as configured, for checking
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := worker.NewMetrics(reg)
	warmMetrics := worker.NewWarmMetrics(reg)

	sm, err := smolvm.New(ctx, smolvm.Config{Bin: c.smolvmBin, Logger: &log, Observe: metrics.ObserveSmolvm})
	if errors.Is(err, smolvm.ErrNotInstalled) {
		return fmt.Errorf("smolvm binary %q not found: install smolvm or point -smolvm / SMOLVM_BIN at it", c.smolvmBin)
	}
	if err != nil {
		return err
	}
	log.Info().Str("smolvm", sm.Bin()).Str("version", sm.Version().String()).Str("dialect", sm.Version().Dialect().String()).Msg("smolvm found")

	var egressProxy *egress.Proxy
	if c.egressListen != "" {
		egressProxy = egress.New(egress.Config{AllowPrivate: c.egressPrivate, AllowLoopback: c.egressLoop, Deny: c.egressDeny, Logger: log.With().Str("component", "egress").Logger()})
	}
	cfg := worker.Config{
		Smolvm:                sm,
		DataDir:               c.dataDir,
		Retention:             time.Duration(c.retention),
		CacheMaxBytes:         int64(c.cacheMax),
		FromDirs:              c.fromDirs,
		Host:                  c.host,
		Deployment:            deployment,
		ProxyURL:              c.proxy,
		AllowUnenforcedEgress: c.unenforced,
		VMCPUs:                c.vmCPUs,
		VMMemMiB:              c.vmMemMiB,
		PackTTL:               c.packTTL,
		ReadyTimeout:          c.readyTimeout,
		CopyTimeout:           c.cpTimeout,
		BundledProxy:          egressProxy,
		MaxFilesBytes:         int64(c.maxFiles),
		MaxArtifactBytes:      int64(c.maxArtifact),
		MaxArtifactsBytes:     int64(c.maxArtifacts),
		Registries:            c.registries,
		Logger:                log,
		Hooks:                 metrics.Hooks(),
		Warm:                  worker.WarmConfig{Images: c.warm, Max: c.warmMax, MaxAge: c.warmMaxAge, Hooks: warmMetrics.Hooks()},
		OutputInResult:        c.outputResult,
	}
	// Checked before the listeners, with the bundled proxy's address as far
	// as it is known: before its listener is bound, port 0 is no port yet,
	// and any port checks the same.
	check := cfg
	if check.ProxyURL == "" && c.egressListen != "" {
		host, port, _ := net.SplitHostPort(c.egressListen) // checked by parseFlags
		if port == "0" {
			port = "1"
		}
		check.ProxyURL = "http://" + net.JoinHostPort(host, port)
	}
	checked, err := worker.NewHandler(check)
	if err != nil {
		return flagError(err)
	}
	// The store is opened once the data directory is known to be good: a
	// file store in it would create it.
	if cfg.Store, err = openStore(ctx, c, log); err != nil {
		return err
	}
	if err := checked.Sweep(ctx); err != nil { // creates the data directory, 0700
		return fmt.Errorf("-data-dir: %w", err)
	}

	if c.metricsAddr != "off" && c.metricsAddr != "" {
		stopMetrics, err := serveMetrics(ctx, c.metricsAddr, reg, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	var rc redis.UniversalClient
	if c.redisURL == "" {
		addr, stopRedis, err := startEmbeddedRedis(c.embeddedRedis, log)
		if err != nil {
			return err
		}
		defer stopRedis()
		rc = redis.NewClient(&redis.Options{Addr: addr})
		deployment = deploymentOf(c, asynq.RedisClientOpt{Addr: addr})
	} else if rc, err = redisConn(ctx, c, log); err != nil {
		return err
	}
	defer rc.Close() // after the server, which uses it, has shut down
	stopEgress, err := startEgress(ctx, egressProxy, &c, log)
	if err != nil {
		return err
	}
	defer stopEgress()
	insp := asynq.NewInspectorFromRedisClient(rc)
	cfg.Deployment = deployment
	cfg.ProxyURL = c.proxy
	cfg.HostOfTask = worker.InspectorHostOf(insp)
	cfg.PackLock = worker.RedisPoolLock(rc)
	cfg.Busy = worker.BusyElsewhere(insp, deployment)
	h, err := worker.NewHandler(cfg)
	if err != nil {
		return flagError(err)
	}
	if c.proxy != "" && !sm.Version().EnforcesAllowCIDROnFrom() {
		log.Error().Str("smolvm", sm.Version().String()).Msg("EGRESS IS NOT RESTRICTED: this smolvm ignores --allow-cidr for VMs created from a pack, and -allow-unenforced-egress is set")
	}
	if c.reapInterval > 0 {
		reaper := &worker.Reaper{Smolvm: sm, Inspector: insp, Deployment: deployment, Handler: h, MinAge: c.reapMinAge, Interval: c.reapInterval, Logger: log, Reaped: metrics.Reaped}
		reapCtx, stopReaper := context.WithCancel(ctx)
		reaped := make(chan struct{})
		go func() { reaper.Run(reapCtx); close(reaped) }()
		defer func() { stopReaper(); <-reaped }()
	}
	if pool := h.Warm(); pool != nil {
		// The pool's VMs carry the owner token of this process's asynq
		// server, which Serve starts; other workers' reapers spare them
		// while it lives. On shutdown the pool deletes them, alongside the
		// tasks' own shutdown.
		warmCtx, stopWarm := context.WithCancel(ctx)
		warmed := make(chan struct{})
		go func() {
			defer close(warmed)
			owner, err := worker.WarmOwner(warmCtx, insp)
			if err == nil {
				err = pool.Run(warmCtx, owner)
			}
			if err != nil && warmCtx.Err() == nil {
				log.Error().Err(err).Msg("warm pool stopped: tasks take the cold path")
			}
		}()
		defer func() { stopWarm(); <-warmed }()
	}
	queues, _ := parseQueues(c.queues)
	log.Info().Int("concurrency", c.concurrency).Str("queues", c.queues).Str("data_dir", c.dataDir).Str("deployment", deployment).Msg("worker serving")
	err = worker.Serve(ctx, h, worker.ServerConfig{
		Redis:           redisurl.Shared(rc),
		Concurrency:     c.concurrency,
		Queues:          queues,
		StrictPriority:  c.strict,
		ShutdownTimeout: c.shutdown,
		PollInterval:    c.pollInterval,
		RetryBase:       c.retryBase,
		RetryMax:        c.retryMax,
		LiveOutputBytes: liveOutputBytes(c.liveOutput),
		Logger:          log,
	})
	log.Info().Msg("worker stopped")
	return err
}

// flagOfField names the flag that sets each worker.Config field.
var flagOfField = map[string]string{
	"DataDir":               "-data-dir",
	"FromDirs":              "-from-dir",
	"Host":                  "-host",
	"Deployment":            "-deployment",
	"ProxyURL":              "-proxy",
	"BundledProxy":          "-egress-listen",
	"AllowUnenforcedEgress": "-allow-unenforced-egress",
	"VMCPUs":                "-vm-cpus",
	"VMMemMiB":              "-vm-mem",
	"PackTTL":               "-pack-ttl",
	"Store":                 "-store",
	"Retention":             "-retention",
	"CacheMaxBytes":         "-cache-max-bytes",
	"ReadyTimeout":          "-ready-timeout",
	"CopyTimeout":           "-cp-timeout",
	"MaxFilesBytes":         "-max-files-bytes",
	"MaxArtifactBytes":      "-max-artifact-bytes",
	"MaxArtifactsBytes":     "-max-artifacts-bytes",
	"Registries":            "-registries",
	"Warm":                  "-warm",
}

// flagError reports a *worker.ConfigError under the name of the flag that
// sets its field, as the worker's other flag errors are.
func flagError(err error) error {
	var ce *worker.ConfigError
	if errors.As(err, &ce) {
		if name, ok := flagOfField[ce.Field]; ok {
			return fmt.Errorf("%s: %w", name, ce.Err)
		}
	}
	return err
}

// deploymentOf is the worker's deployment: -deployment, else a hash of the
// Redis opt names (a server's address, or a Sentinel master's name and its
// sentinels) and its database. Give it the embedded Redis's address once it
// listens: each embedded Redis on port 0 is a deployment of its own, with
// no other worker in it.
func deploymentOf(c config, opt asynq.RedisConnOpt) string {
	if c.deployment != "" {
		return c.deployment
	}
	switch o := opt.(type) {
	case asynq.RedisFailoverClientOpt:
		return worker.DeploymentOf(o.MasterName+"@"+strings.Join(o.SentinelAddrs, ","), o.DB)
	case asynq.RedisClientOpt:
		return worker.DeploymentOf(o.Addr, o.DB)
	}
	return worker.DeploymentOf(fmt.Sprintf("%T", opt), 0)
}

// redisOption reads -redis and -redis-ca, to check them and to name the
// deployment before anything listens. Without -redis it is the embedded
// Redis's option, its address as configured: the listener is not bound yet.
func redisOption(c config) (asynq.RedisConnOpt, error) {
	if c.redisURL == "" {
		return asynq.RedisClientOpt{Addr: c.embeddedRedis}, nil
	}
	opt, err := redisurl.Parse(c.redisURL)
	if err != nil {
		return opt, fmt.Errorf("-redis: %w", err)
	}
	if opt, err = redisurl.WithCA(opt, c.redisCA); err != nil {
		return opt, fmt.Errorf("-redis-ca: %w", err)
	}
	return opt, nil
}

// redisConn opens the one Redis client of the worker on -redis, once
// Redis answers (waiting up to -redis-wait); close it after the server has
// shut down.
func redisConn(ctx context.Context, c config, log zerolog.Logger) (redis.UniversalClient, error) {
	rc, err := redisurl.Open(c.redisURL, c.redisCA)
	if errors.Is(err, redisurl.ErrCA) {
		return nil, fmt.Errorf("-redis-ca: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("-redis: %w", err)
	}
	if err := redisurl.Ping(ctx, rc, c.redisWait); err != nil {
		rc.Close()
		return nil, fmt.Errorf("-redis: %s: %w", redisurl.Redacted(c.redisURL), err)
	}
	log.Info().Str("redis", redisurl.Redacted(c.redisURL)).Msg("using Redis")
	return rc, nil
}

// startEmbeddedRedis starts the embedded Redis on addr and returns the
// address it listens on.
func startEmbeddedRedis(addr string, log zerolog.Logger) (string, func(), error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(addr); err != nil {
		return "", nil, fmt.Errorf("embedded Redis on %s: %w (set REDIS_URL, or -embedded-redis to another address)", addr, err)
	}
	log.Warn().Str("addr", m.Addr()).Msg("no REDIS_URL: running an embedded in-memory Redis (miniredis); tasks are lost when this worker stops; use a real Redis in production")
	return m.Addr(), m.Close, nil
}

// serveMetrics serves /metrics on addr until the returned func is called.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log zerolog.Logger) (func(), error) {
	ln, err := listenMetrics(addr)
	if err != nil {
		return nil, fmt.Errorf("-metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("metrics listener stopped")
		}
	}()
	log.Info().Str("addr", ln.Addr().String()).Msg("metrics at /metrics")
	return func() {
		shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutCtx)
	}, nil
}

// startEgress serves the bundled egress proxy p on -egress-listen, when
// set, and points c.proxy at it unless -proxy names another address for
// VMs. The proxy outlives ctx: tasks finishing during a graceful shutdown
// still need it. stop ends it.
func startEgress(ctx context.Context, p *egress.Proxy, c *config, log zerolog.Logger) (stop func(), err error) {
	if p == nil {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", c.egressListen)
	if err != nil {
		return nil, fmt.Errorf("-egress-listen: %w", err)
	}
	if c.proxy == "" {
		c.proxy = "http://" + ln.Addr().String() // an IP, checked by parseFlags
	}
	proxyCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		if err := p.Serve(proxyCtx, ln); err != nil {
			log.Error().Err(err).Msg("bundled egress proxy stopped: tasks have no egress")
		}
		close(done)
	}()
	if c.egressLoop {
		log.Warn().Msg("-egress-allow-loopback-for-tests: tasks may reach this host's loopback services through the egress proxy")
	}
	log.Info().Str("addr", ln.Addr().String()).Str("proxy", c.proxy).Msg("bundled egress proxy serving")
	return func() { cancel(); <-done }, nil
}

// liveOutputBytes is -live-output-bytes for worker.ServerConfig, where 0
// is the default and "none" is negative.
func liveOutputBytes(b byteSize) int64 {
	if b == 0 {
		return -1
	}
	return int64(b)
}
