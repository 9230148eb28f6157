package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/internal/cliflag"
	"github.com/bot-bottle/bottleq/internal/redisurl"
	"github.com/bot-bottle/bottleq/internal/validate"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// Exit codes other than the agent's own.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// defaultRedisURL is used when neither --redis nor REDIS_URL is set.
const defaultRedisURL = "redis://127.0.0.1:6379"

const usageHead = `Usage: enqueue [flags] (--image IMG | --from REF) -- CMD [ARG...]
       enqueue status [--queue Q] [--json] ID
       enqueue wait   [--queue Q] [--wait-timeout D] [--store URL] [--artifacts-dir DIR] ID
       enqueue cancel [--queue Q] [--wait-timeout D] ID
       enqueue -version

Enqueues one bottleq agent:run task. Without --wait it prints the task ID.
With --wait it shows the task as it runs: each phase and attempt on stderr
("bottleq: task ID: ..."), the agent's stdout and stderr as the agent
writes them; then where each artifact is (with --artifacts-dir DIR,
downloaded from the workers' store into DIR), and it exits with the
agent's exit code.

status prints a task's state, attempts, exit code, phases and result
(--json: one JSON object). wait follows a task as --wait does. cancel ends
a task for good: not retried, its VM deleted, its result cancelled. A task
ID is looked up on --queue only (default "default"); each takes --redis,
--redis-ca and --redis-wait too. See enqueue status -h.

Exit codes: 0 done; with --wait and wait, the agent's exit code; 1 the task
failed, was cancelled or is unknown, a wait gave up (--wait-timeout, Ctrl-C),
a cancel was not confirmed in time, an artifact could not be downloaded, or
Redis or the store failed; 2 a usage error.

Flags:
`

// usageError is a mistake in the command line: exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// config is a parsed, validated command line.
type config struct {
	redis       redisTarget
	redisWait   time.Duration
	payload     tasks.AgentRun
	opts        enqueue.Options
	wait        bool
	waitTimeout time.Duration
	artifacts   artifactsTarget
	version     bool
	// storeURL is --store or BOTTLEQ_STORE, checked; storeFrom names it.
	storeURL, storeFrom string
}

// envFlag collects --env entries; they are resolved and checked after
// parsing so that no error from the flag package quotes a value.
type envFlag []string

func (e *envFlag) String() string     { return "" }
func (e *envFlag) Set(s string) error { *e = append(*e, s); return nil }

// listFlag collects a repeatable flag's values.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func newFlagSet(c *config, env *envFlag, files *listFlag, redisURL, redisCA, tenant, timeout, artifactsDir *string, noCommit *bool, maxRetry *int) *flag.FlagSet {
	fs := flag.NewFlagSet("enqueue", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(redisURL, "redis", "", "Redis `URL`: redis://, rediss:// (TLS) or redis-sentinel:// (see README) (default $REDIS_URL, else "+defaultRedisURL+")")
	fs.StringVar(redisCA, "redis-ca", "", "PEM `file` of CA certificates to trust for rediss:// (default $REDIS_CA_FILE)")
	fs.DurationVar(&c.redisWait, "redis-wait", redisurl.DefaultWait, "how long to wait for Redis to answer before giving up (0: one try)")
	fs.StringVar(tenant, "tenant", "", "the `tenant` the task runs for: up to "+fmt.Sprint(tasks.MaxTenantLen)+
		" lower-case letters, digits and '-', not starting with '-'; --from task:ID finds only this tenant's commits (default $BOTTLEQ_TENANT, else "+
		strconv.Quote(tasks.DefaultTenant)+")")
	fs.StringVar(&c.payload.Image, "image", "", "OCI `image` to boot")
	fs.StringVar(&c.payload.From, "from", "", "boot a pack instead: task:`ID` (the commit an earlier task left) or /abs/path.smolmachine on the worker")
	fs.Var(env, "env", "set `K=V` for the command; repeatable. --env K alone passes K's value from this process's environment")
	fs.Var((*listFlag)(&c.payload.AllowHosts), "allow-host", "let the agent reach `HOST[:PORT]` (or *.DOMAIN) through the worker's bundled egress proxy; repeatable")
	fs.Var(files, "file", "before the command runs, copy a local file into the VM as `LOCAL:GUEST` says (GUEST an absolute path), with LOCAL's permission bits; "+
		"split at the first ':', so LOCAL may not contain one; repeatable, "+tasks.FormatBytes(tasks.DefaultMaxFilesBytes)+" in total. A directory travels as a tar file the command unpacks")
	fs.Var((*listFlag)(&c.payload.Artifacts), "artifact", "copy the file at the absolute `GUEST` path out of the VM after the command, whatever its exit code; with --wait its place is printed, and --artifacts-dir downloads it; repeatable")
	fs.StringVar(&c.payload.Workdir, "workdir", "", "absolute working `dir`ectory in the VM")
	fs.IntVar(&c.payload.CPUs, "cpus", 0, "`N` vCPUs for the VM, 1 to "+fmt.Sprint(tasks.MaxCPUs)+", at most the worker's cap (default 0: the worker's default)")
	fs.IntVar(&c.payload.MemMiB, "mem", 0, "the VM's memory in `MiB`, 1 to "+fmt.Sprint(tasks.MaxMemMiB)+", at most the worker's cap (default 0: the worker's default)")
	fs.StringVar(timeout, "timeout", "", "the command's `timeout`, such as 90s or 1h (default "+tasks.DefaultTimeout.String()+", at most "+tasks.MaxTimeout.String()+")")
	fs.BoolVar(noCommit, "no-commit", false, "do not commit the VM's end state for later --from task:ID")
	fs.StringVar(&c.opts.TaskID, "task-id", "", "task `ID`; enqueueing an ID that still exists fails (default random)")
	fs.StringVar(&c.opts.Queue, "queue", tasks.DefaultQueue, "`queue` to put the task on")
	fs.IntVar(&c.opts.Replicas, "replicas", 0, "return only once this many Redis replicas hold the task, so a Sentinel failover cannot lose it (see README)")
	fs.IntVar(maxRetry, "max-retry", tasks.DefaultMaxRetry, "retries of a failed delivery; 0 for none")
	fs.BoolVar(&c.wait, "wait", false, "show the task's phases and the agent's output as it runs, and exit with the agent's exit code")
	fs.DurationVar(&c.waitTimeout, "wait-timeout", 0, "with --wait, give up waiting after this `duration` (exit 1; the task runs on) (default 0: no limit)")
	fs.StringVar(artifactsDir, "artifacts-dir", "", "with --wait, "+artifactsDirHelp)
	fs.StringVar(&c.storeURL, "store", "", storeFlagHelp)
	fs.DurationVar(&c.opts.Retention, "retention", 0, retentionFlagHelp)
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	return fs
}

// redisTarget is the Redis --redis and --redis-ca name.
type redisTarget struct {
	opt  asynq.RedisConnOpt
	from string // --redis or REDIS_URL, for errors
	url  string // without its password, for errors
	wait time.Duration
}

// redisOpt reads --redis and --redis-ca, or REDIS_URL and REDIS_CA_FILE,
// and --redis-wait (wait).
func redisOpt(redisURL, redisCA string, wait time.Duration, getenv func(string) string) (redisTarget, error) {
	redisFrom := "--redis"
	if redisURL == "" {
		redisURL, redisFrom = getenv("REDIS_URL"), "REDIS_URL"
	}
	if redisURL == "" {
		redisURL = defaultRedisURL
	}
	r, err := redisurl.Parse(redisURL)
	if err != nil {
		return redisTarget{}, usagef("%s: %v", redisFrom, err)
	}
	caFrom := "--redis-ca"
	if redisCA == "" {
		redisCA, caFrom = getenv("REDIS_CA_FILE"), "REDIS_CA_FILE"
	}
	if r, err = redisurl.WithCA(r, redisCA); err != nil {
		return redisTarget{}, usagef("%s: %v", caFrom, err)
	}
	if wait < 0 {
		return redisTarget{}, usagef("--redis-wait: %s must not be negative", wait)
	}
	return redisTarget{opt: r, from: redisFrom, url: redisurl.Redacted(redisURL), wait: wait}, nil
}

// connect returns a client on r once Redis answers, waiting up to r.wait.
// Close rc after the client.
func (r redisTarget) connect(ctx context.Context) (client *enqueue.Client, rc redis.UniversalClient, err error) {
	rc = r.opt.MakeRedisClient().(redis.UniversalClient) // all redisurl.Parse returns do
	pingCtx, wait := ctx, r.wait
	if ctx.Err() != nil {
		// Interrupted before it began: one try, so that a wait can
		// still say where the task is, as it does when interrupted later.
		pingCtx, wait = context.WithoutCancel(ctx), 0
	}
	if err := redisurl.Ping(pingCtx, rc, wait); err != nil {
		rc.Close()
		return nil, nil, fmt.Errorf("%s: %s: %w", r.from, r.url, err)
	}
	return enqueue.NewFromRedisClient(rc), rc, nil
}

// checkQueue checks --queue.
func checkQueue(q string) error {
	if err := enqueue.ValidateQueue(q); err != nil {
		return usagef("--queue: %v", err)
	}
	return nil
}

// parse reads and validates the command line; it does not touch Redis.
// flag.ErrHelp means -h; any other error is a *usageError.
func parse(args []string, getenv func(string) string, help io.Writer) (config, error) {
	var (
		c        config
		env      envFlag
		files    listFlag
		redisURL string
		redisCA  string
		tenant   string
		timeout  string
		noCommit bool
		maxRetry int
		artsDir  string
	)
	fs := newFlagSet(&c, &env, &files, &redisURL, &redisCA, &tenant, &timeout, &artsDir, &noCommit, &maxRetry)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(help, usageHead)
			fs.SetOutput(help)
			fs.PrintDefaults()
			return c, err
		}
		return c, usagef("%v (see enqueue -h)", err)
	}
	if c.version {
		return c, nil
	}

	r, err := redisOpt(redisURL, redisCA, c.redisWait, getenv)
	if err != nil {
		return c, err
	}
	c.redis = r

	tenantFrom := "--tenant"
	if tenant == "" {
		tenant, tenantFrom = getenv("BOTTLEQ_TENANT"), "BOTTLEQ_TENANT"
	}
	if tenant != "" {
		if err := tasks.ValidateTenant(tenant); err != nil {
			var ve *tasks.ValidationError
			if errors.As(err, &ve) {
				return c, usagef("%s: %s", tenantFrom, ve.Reason)
			}
			return c, usagef("%s: %v", tenantFrom, err)
		}
		c.payload.Tenant = tenant
	}

	c.payload.Command = fs.Args()
	switch {
	case len(c.payload.Command) == 0:
		return c, usagef("no command: give the agent's command after --")
	case c.payload.Image == "" && c.payload.From == "":
		return c, usagef("one of --image and --from is required")
	case c.payload.Image != "" && c.payload.From != "":
		return c, usagef("--image and --from are mutually exclusive")
	}
	for _, e := range env {
		k, v, ok := strings.Cut(e, "=")
		if !ok && validate.EnvKey(k) == nil {
			v = getenv(k)
			if v == "" {
				return c, usagef("--env: %q is not set in this environment (give %s= for an empty value)", k, k)
			}
		}
		if c.payload.Env == nil {
			c.payload.Env = make(map[string]string)
		}
		c.payload.Env[k] = v // a later --env for the same key wins
	}
	if timeout != "" {
		d, err := time.ParseDuration(timeout)
		if err != nil {
			return c, usagef("--timeout: %q is not a duration such as 90s or 1h30m", timeout)
		}
		c.payload.Timeout = tasks.Duration(d)
	}
	if noCommit {
		c.payload.Commit = tasks.Bool(false)
	}
	for _, spec := range files {
		local, guest, ok := strings.Cut(spec, ":")
		if !ok || local == "" || guest == "" {
			return c, usagef("--file %s: must be LOCAL:GUEST, such as ./in.txt:/workspace/in.txt (LOCAL may not contain ':')", spec)
		}
		if err := enqueue.AttachFile(&c.payload, local, guest, tasks.DefaultMaxFilesBytes); err != nil {
			return c, usagef("--file %s: %v", spec, err)
		}
	}
	if err := c.payload.Validate(); err != nil {
		var ve *tasks.ValidationError
		if errors.As(err, &ve) {
			return c, usagef("%s: %s", flagOf(ve.Field), ve.Reason)
		}
		return c, usagef("%v", err)
	}
	switch {
	case maxRetry < 0:
		return c, usagef("--max-retry: must not be negative")
	case maxRetry == 0:
		c.opts.MaxRetry = enqueue.NoRetry
	default:
		c.opts.MaxRetry = maxRetry
	}
	if c.opts.Replicas < 0 {
		return c, usagef("--replicas: must not be negative")
	}
	if err := checkQueue(c.opts.Queue); err != nil {
		return c, err
	}
	if c.opts.TaskID != "" {
		if err := checkID(c.opts.TaskID); err != nil {
			return c, usagef("--task-id: %v", err)
		}
	}
	if err := c.checkBulk(getenv); err != nil {
		return c, err
	}
	switch {
	case c.waitTimeout < 0:
		return c, usagef("--wait-timeout: must not be negative")
	case c.waitTimeout > 0 && !c.wait:
		return c, usagef("--wait-timeout: only with --wait")
	case artsDir != "" && !c.wait:
		return c, usagef("--artifacts-dir: only with --wait")
	}
	if c.artifacts, err = resolveArtifacts(artsDir, c.storeURL, getenv); err != nil {
		return c, err
	}
	return c, nil
}

// flagOf names the flag that sets a payload field.
func flagOf(field string) string {
	switch {
	case field == "command" || strings.HasPrefix(field, "command["):
		return field
	case field == "image", field == "from", field == "env", field == "workdir", field == "timeout",
		field == "tenant", field == "cpus":
		return "--" + field
	case field == "mem_mib":
		return "--mem"
	case field == "allow_hosts" || strings.HasPrefix(field, "allow_hosts["):
		return "--allow-host"
	case field == "files" || strings.HasPrefix(field, "files["):
		return "--file"
	case field == "artifacts" || strings.HasPrefix(field, "artifacts["):
		return "--artifact"
	}
	return field
}

// Run is the whole command: it parses args, enqueues, and with --wait
// follows the task, or runs the verb args name (status, wait, cancel). It
// returns the exit code: 0, 1 or 2 of its own, or with --wait and wait the
// agent's exit code.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if v, rest, ok := verbOf(args); ok {
		return runVerb(ctx, v, rest, getenv, stdout, stderr)
	}
	c, err := parse(args, getenv, stdout)
	var ue *usageError
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		return fail(stderr, exitUsage, "%v", err)
	case err != nil:
		return fail(stderr, exitFail, "%v", err)
	case c.version:
		fmt.Fprintln(stdout, cliflag.VersionLine("enqueue"))
		return exitOK
	}

	if c.opts.Store, err = c.openStore(ctx); err != nil {
		return fail(stderr, exitFail, "%v", err)
	}
	// The output is read from the store --store names, else from the one
	// --artifacts-dir downloads from.
	outSt := c.opts.Store
	var arts *artifactsOut
	if c.artifacts.dir != "" {
		st, err := c.artifacts.open(ctx)
		if err != nil {
			return fail(stderr, exitFail, "%v", err)
		}
		arts = &artifactsOut{st: st, dir: c.artifacts.dir}
		if outSt == nil {
			outSt = st
		}
	}
	client, rc, err := c.redis.connect(ctx)
	if err != nil {
		return fail(stderr, exitFail, "%v", err)
	}
	defer rc.Close()
	info, err := client.Enqueue(ctx, c.payload, c.opts)
	switch {
	case errors.Is(err, enqueue.ErrDuplicate):
		return fail(stderr, exitFail, "--task-id: task %s already exists", c.opts.TaskID)
	case err != nil:
		return fail(stderr, exitFail, "could not enqueue: %v", strings.TrimPrefix(err.Error(), "enqueue: "))
	}
	if !c.wait {
		fmt.Fprintln(stdout, info.ID)
		return exitOK
	}
	fmt.Fprintf(stderr, "bottleq: task %s: enqueued on queue %s\n", info.ID, info.Queue)
	return wait(ctx, client, info.Queue, info.ID, c.payload.Tenant, c.waitTimeout, outSt, arts, stdout, stderr)
}

// wait follows the task to its end, showing its live output as it comes,
// downloads its artifacts with arts (when not nil), and hands on the
// agent's exit code. tenant is the payload's, empty for the default or
// unknown; timeout, if not zero, bounds the wait; st, if not nil, is the
// workers' store, where the output the live output missed is read from.
func wait(ctx context.Context, client *enqueue.Client, queue, id, tenant string, timeout time.Duration, st store.Store, arts *artifactsOut, stdout, stderr io.Writer) int {
	waitCtx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var mu sync.Mutex // the live output and the pending notice share stderr
	view := newLiveView(id, &mu, stdout, stderr)
	stopWatch := watchPending(waitCtx, client, queue, id, func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stderr, format, a...)
	})
	err := client.Follow(waitCtx, queue, id, view.show, "")
	stopWatch()
	var out enqueue.Outcome
	if err == nil {
		out, err = client.Wait(waitCtx, queue, id, nil) // it has ended: one look
	}
	view.endLine()
	var failed *enqueue.TaskFailedError
	switch {
	case errors.Is(err, enqueue.ErrCancelled):
		return fail(stderr, exitFail, "task %s was cancelled (%s)", id, cancelledBy(out))
	case errors.As(err, &failed):
		return fail(stderr, exitFail, "task %s failed: %s", id, shownErr(failed.LastErr))
	case errors.Is(err, enqueue.ErrNotFound):
		return fail(stderr, exitFail, "%s", notFound(queue, id))
	case waitCtx.Err() != nil && errors.Is(err, waitCtx.Err()):
		why := "stopped waiting"
		if ctx.Err() == nil {
			why = "gave up waiting after " + timeout.String() + " (--wait-timeout)"
		}
		return fail(stderr, exitFail, "%s: %s", why, stillThere(ctx, client, queue, id, out))
	case err != nil:
		return fail(stderr, exitFail, "%v", strings.TrimPrefix(err.Error(), "enqueue: "))
	}
	r := out.Result
	if r.State != tasks.StateDone {
		return fail(stderr, exitFail, "task %s completed without a result", id)
	}
	switch shown, whole := view.streamed(r.Attempt); {
	case !shown: // no live output of it: expired, or an older worker's
		printOutput(ctx, st, id, r, true, stdout, stderr)
	case !whole:
		fmt.Fprintf(stderr, "bottleq: task %s: not all of its output was shown as it came; %s\n", id, outputSource(st, r))
		printOutput(ctx, st, id, r, false, stdout, stderr)
	}
	if tenant == "" && r.Tenant != tasks.DefaultTenant {
		tenant = r.Tenant // wait ID: the result says whose the task was
	}
	if r.TimedOut {
		fmt.Fprintf(stderr, "bottleq: task %s: the command timed out\n", id)
	}
	if r.Commit != "" {
		sameTenant := ""
		if tenant != "" {
			sameTenant = " --tenant " + tenant // another tenant cannot start from it
		}
		fmt.Fprintf(stderr, "bottleq: commit: %s on %s (use --from %s%s%s)\n", r.Commit, r.Host, tasks.FromTaskPrefix, id, sameTenant)
	}
	if r.Egress != nil {
		for _, e := range r.Egress.Entries {
			verdict := "allowed"
			if !e.Allowed {
				verdict = "refused (" + e.Reason + ")"
			}
			fmt.Fprintf(stderr, "bottleq: egress: %s:%d %s, %d connection(s), %d bytes up, %d down\n", e.Host, e.Port, verdict, e.Count, e.BytesUp, e.BytesDown)
		}
	}
	if failed := showArtifacts(ctx, arts, r, stderr); failed > 0 {
		return exitFail
	}
	if r.ExitCode < 0 || r.ExitCode > 255 {
		return exitFail
	}
	return r.ExitCode
}

// fail prints one line, "enqueue: ...", and returns code.
func fail(stderr io.Writer, code int, format string, a ...any) int {
	msg := strings.Join(strings.Fields(fmt.Sprintf(format, a...)), " ")
	fmt.Fprintf(stderr, "enqueue: %s\n", msg)
	return code
}
