package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/internal/redisurl"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// defaultCancelWait is how long cancel waits for a running task's worker
// to confirm the cancel, unless --wait-timeout says otherwise.
const defaultCancelWait = time.Minute

// pendingNotice is how long --wait and wait watch a pending task before
// they check that a live worker serves its queue.
const pendingNotice = 3 * time.Second

// verb is a subcommand that acts on one task by its ID.
type verb struct {
	name, usage string
	// json, waitTimeout and artifacts say which of --json, --wait-timeout
	// and --artifacts-dir (with --store) it has.
	json, waitTimeout, artifacts bool
	run                          func(ctx context.Context, v verbArgs) int
}

// verbArgs is a verb's parsed command line.
type verbArgs struct {
	client         *enqueue.Client
	queue, id      string
	json           bool
	waitTimeout    time.Duration
	arts           *artifactsOut // nil without --artifacts-dir
	st             store.Store   // the workers' store, nil without --store or --artifacts-dir
	stdout, stderr io.Writer
}

var verbs = map[string]*verb{}

func init() {
	for _, v := range []*verb{
		{name: "status", json: true, run: runStatus, usage: `Usage: enqueue status [--queue Q] [--json] ID

Prints the task's state (pending, scheduled, active, retry, completed,
archived or cancelled), its attempts, and what its worker reported: the
phase or the phases with their times, the exit code, the commit, the last
error. --json prints one JSON object instead: task_id, queue, state,
retried, max_retry, last_error, exit_code (once completed) and result, the
worker's whole result. Exits 0 whatever the state, 1 for an unknown task.`},
		{name: "wait", waitTimeout: true, artifacts: true, run: runWait, usage: `Usage: enqueue wait [--queue Q] [--wait-timeout D] [--store URL] [--artifacts-dir DIR] ID

Follows the task as enqueue --wait does: each phase and attempt on
stderr, the agent's stdout and stderr as the agent writes them (from the
start, for a task that runs or ran already), where its artifacts are (with
--artifacts-dir, downloaded from the workers' store into DIR), and the
agent's exit code as its own. Exits 1 when the task failed or was
cancelled, the wait gave up, or an artifact could not be downloaded.`},
		{name: "cancel", waitTimeout: true, run: runCancel, usage: `Usage: enqueue cancel [--queue Q] [--wait-timeout D] ID

Ends the task for good: it is not retried, its VM is deleted, asynq
archives it and its result says cancelled. A task waiting to run is
cancelled at once; a running one when its worker has deleted the VM, which
cancel waits for (--wait-timeout, default ` + defaultCancelWait.String() + `). A worker's
shutdown, by contrast, puts its running tasks back in their queue.
Exits 0 once the task is cancelled (or was already), 1 when it already
finished or is unknown, or its worker did not confirm in time (the cancel
stands: the task ends when its worker gets to it).`},
	} {
		verbs[v.name] = v
	}
}

// verbOf finds the verb args name: the first argument, or the first after
// --redis, --redis-ca and --redis-wait, which the verb then gets with the
// rest.
func verbOf(args []string) (*verb, []string, bool) {
	for i := 0; i < len(args); i++ {
		if v, ok := verbs[args[i]]; ok {
			return v, append(append([]string(nil), args[:i]...), args[i+1:]...), true
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !strings.HasPrefix(args[i], "-") || (name != "redis" && name != "redis-ca" && name != "redis-wait") {
			return nil, nil, false
		}
		if !hasValue {
			i++ // the value
		}
	}
	return nil, nil, false
}

// runVerb parses a verb's command line and runs it.
func runVerb(ctx context.Context, v *verb, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var (
		a                 = verbArgs{stdout: stdout, stderr: stderr}
		redisURL, redisCA string
		redisWait         time.Duration
	)
	fs := flag.NewFlagSet("enqueue "+v.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&redisURL, "redis", "", "Redis `URL`, redis:// or rediss:// (TLS) (default $REDIS_URL, else "+defaultRedisURL+")")
	fs.StringVar(&redisCA, "redis-ca", "", "PEM `file` of CA certificates to trust for rediss:// (default $REDIS_CA_FILE)")
	fs.DurationVar(&redisWait, "redis-wait", redisurl.DefaultWait, "how long to wait for Redis to answer before giving up (0: one try)")
	fs.StringVar(&a.queue, "queue", tasks.DefaultQueue, "the task's `queue`: an ID names a task on one queue only")
	if v.json {
		fs.BoolVar(&a.json, "json", false, "print one JSON object, for scripts")
	}
	if v.waitTimeout {
		def := "0: no limit"
		if v.name == "cancel" {
			def = defaultCancelWait.String()
		}
		fs.DurationVar(&a.waitTimeout, "wait-timeout", 0, "give up waiting after this `duration` (default "+def+")")
	}
	var artsDir, storeURL string
	if v.artifacts {
		fs.StringVar(&artsDir, "artifacts-dir", "", artifactsDirHelp)
		fs.StringVar(&storeURL, "store", "", storeHelp)
	}
	// The ID may come before, between or after the flags.
	var ids []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(stdout, "%s\n\nFlags:\n", v.usage)
				fs.SetOutput(stdout)
				fs.PrintDefaults()
				return exitOK
			}
			return fail(stderr, exitUsage, "%v (see enqueue %s -h)", err, v.name)
		}
		if fs.NArg() == 0 {
			break
		}
		ids, rest = append(ids, fs.Arg(0)), fs.Args()[1:]
	}
	switch len(ids) {
	case 0:
		return fail(stderr, exitUsage, "%s: no task ID (see enqueue %s -h)", v.name, v.name)
	case 1:
		a.id = ids[0]
	default:
		return fail(stderr, exitUsage, "%s: one task ID, not %d (%q)", v.name, len(ids), ids)
	}
	if err := checkID(a.id); err != nil {
		return fail(stderr, exitUsage, "%s: task ID: %v", v.name, err)
	}
	if err := checkQueue(a.queue); err != nil {
		return fail(stderr, exitUsage, "%v", err)
	}
	if a.waitTimeout < 0 {
		return fail(stderr, exitUsage, "--wait-timeout: must not be negative")
	}
	r, err := redisOpt(redisURL, redisCA, redisWait, getenv)
	if err != nil {
		return fail(stderr, exitUsage, "%v", err)
	}
	target, err := resolveArtifacts(artsDir, storeURL, getenv)
	if err != nil {
		return fail(stderr, exitUsage, "%v", err)
	}
	if target.storeURL != "" {
		if a.st, err = target.open(ctx); err != nil {
			return fail(stderr, exitFail, "%v", err)
		}
		if target.dir != "" {
			a.arts = &artifactsOut{st: a.st, dir: target.dir}
		}
	}
	client, rc, err := r.connect(ctx)
	if err != nil {
		return fail(stderr, exitFail, "%v", err)
	}
	defer rc.Close()
	a.client = client
	return v.run(ctx, a)
}

// checkID checks a task ID given on the command line.
func checkID(id string) error {
	switch {
	case id == "":
		return errors.New("must not be empty")
	case strings.TrimSpace(id) != id:
		return errors.New("must not be blank or start or end with white space")
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		return fmt.Errorf("%q holds a control character", id)
	}
	return nil
}

// cmdFor is the command line that runs verb on the task.
func cmdFor(verb, queue, id string) string {
	if queue != tasks.DefaultQueue {
		return "enqueue " + verb + " --queue " + queue + " " + id
	}
	return "enqueue " + verb + " " + id
}

// notFound says a task does not exist.
func notFound(queue, id string) string {
	msg := fmt.Sprintf("no task %s in queue %s", id, queue)
	if queue == tasks.DefaultQueue {
		msg += " (a task on another queue needs --queue)"
	}
	return msg
}

func runStatus(ctx context.Context, a verbArgs) int {
	out, err := a.client.Status(ctx, a.queue, a.id)
	switch {
	case errors.Is(err, enqueue.ErrNotFound):
		return fail(a.stderr, exitFail, "%s", notFound(a.queue, a.id))
	case err != nil:
		return fail(a.stderr, exitFail, "%v", strings.TrimPrefix(err.Error(), "enqueue: "))
	}
	if a.json {
		b, err := json.Marshal(statusJSONOf(out))
		if err != nil {
			return fail(a.stderr, exitFail, "%v", err)
		}
		fmt.Fprintf(a.stdout, "%s\n", b)
		return exitOK
	}
	printStatus(a.stdout, out)
	return exitOK
}

// statusJSON is what status --json prints.
type statusJSON struct {
	TaskID string `json:"task_id"`
	Queue  string `json:"queue"`
	// State is asynq's state, or "cancelled" for a task a user cancelled.
	State     string `json:"state"`
	Retried   int    `json:"retried"`
	MaxRetry  int    `json:"max_retry"`
	LastError string `json:"last_error,omitempty"`
	// ExitCode is the agent's exit code, once the task completed.
	ExitCode *int          `json:"exit_code,omitempty"`
	Result   *tasks.Result `json:"result,omitempty"`
}

func statusJSONOf(out enqueue.Outcome) statusJSON {
	j := statusJSON{TaskID: out.TaskID, Queue: out.Queue, State: stateName(out), Retried: out.Retried, MaxRetry: out.MaxRetry, LastError: shownErr(out.LastErr)}
	if out.Result.State != "" {
		r := out.Result
		j.Result = &r
	}
	if out.State == asynq.TaskStateCompleted && out.Result.State == tasks.StateDone {
		code := out.Result.ExitCode
		j.ExitCode = &code
	}
	return j
}

// stateName is asynq's name of the task's state, or "cancelled".
func stateName(out enqueue.Outcome) string {
	if out.Cancelled {
		return "cancelled"
	}
	return out.State.String()
}

// printStatus prints the task for a human, one "key  value" line each.
func printStatus(w io.Writer, out enqueue.Outcome) {
	r := out.Result
	line := func(k, format string, a ...any) { fmt.Fprintf(w, "%-10s %s\n", k, fmt.Sprintf(format, a...)) }
	line("task", "%s", out.TaskID)
	line("queue", "%s", out.Queue)
	state := stateName(out)
	attempt := r.Attempt
	if attempt == 0 && out.State == asynq.TaskStateActive {
		attempt = out.Retried + 1
	}
	if attempt > 0 {
		state += fmt.Sprintf(" (attempt %d of %d)", attempt, out.MaxRetry+1)
	} else if out.Retried > 0 {
		state += fmt.Sprintf(" (%d retries of %d)", out.Retried, out.MaxRetry)
	}
	line("state", "%s", state)
	if r.State == tasks.StateRunning && r.Phase != "" && !out.Cancelled {
		line("phase", "%s", r.Phase)
	}
	if r.State == tasks.StateDone {
		code := fmt.Sprint(r.ExitCode)
		if r.TimedOut {
			code += " (the command timed out)"
		}
		line("exit code", "%s", code)
		line("output", "%d bytes on stdout, %d on stderr (%s prints them)", len(r.Stdout)+int(r.StdoutOmitted), len(r.Stderr)+int(r.StderrOmitted), cmdFor("wait", out.Queue, out.TaskID))
	}
	if len(r.Phases) > 0 {
		parts := make([]string, len(r.Phases))
		for i, p := range r.Phases {
			parts[i] = fmt.Sprintf("%s %.3fs", p.Name, p.Seconds)
		}
		line("phases", "%s", strings.Join(parts, ", "))
	}
	if r.Host != "" {
		host := r.Host
		if r.VM != "" {
			host += " (vm " + r.VM + ")"
		}
		line("host", "%s", host)
	}
	if r.Commit != "" {
		line("commit", "%s (use --from %s%s)", r.Commit, tasks.FromTaskPrefix, out.TaskID)
	}
	switch {
	case r.Error != "":
		line("error", "%s", oneLine(r.Error))
	case out.LastErr != "":
		line("error", "%s", oneLine(shownErr(out.LastErr)))
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func runWait(ctx context.Context, a verbArgs) int {
	return wait(ctx, a.client, a.queue, a.id, "", a.waitTimeout, a.st, a.arts, a.stdout, a.stderr)
}

func runCancel(ctx context.Context, a verbArgs) int {
	timeout := a.waitTimeout
	if timeout == 0 {
		timeout = defaultCancelWait
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := a.client.Cancel(cctx, a.queue, a.id)
	switch {
	case errors.Is(err, enqueue.ErrNotFound):
		return fail(a.stderr, exitFail, "%s", notFound(a.queue, a.id))
	case errors.Is(err, enqueue.ErrFinished):
		return fail(a.stderr, exitFail, "task %s already ended %s: nothing to cancel", a.id, stateName(out))
	case cctx.Err() != nil && errors.Is(err, cctx.Err()):
		why := "stopped waiting"
		if ctx.Err() == nil {
			why = "waited " + timeout.String()
		}
		return fail(a.stderr, exitFail, "cancel of task %s requested, but its worker has not confirmed it (%s): it is still %s; it ends cancelled, not retried, when its worker gets to it",
			a.id, why, stateName(out))
	case err != nil:
		return fail(a.stderr, exitFail, "%v", strings.TrimPrefix(err.Error(), "enqueue: "))
	}
	fmt.Fprintf(a.stdout, "task %s cancelled (%s)\n", a.id, cancelledBy(out))
	return exitOK
}

// cancelledBy says who cancelled the task and when, from its result.
func cancelledBy(out enqueue.Outcome) string {
	if e := out.Result.Error; strings.HasPrefix(e, "cancelled ") {
		return oneLine(e)
	}
	return "cancelled"
}

// watchPending tells once, on say, when the task is still pending after
// pendingNotice and no live worker serves its queue. The returned func
// stops it.
func watchPending(ctx context.Context, client *enqueue.Client, queue, id string, say func(string, ...any)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(pendingNotice)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			out, err := client.Status(ctx, queue, id)
			if err != nil || out.State != asynq.TaskStatePending {
				continue // a worker has it, or will retry it; or Redis is busy
			}
			if n, err := client.Workers(ctx, queue); err == nil && n == 0 {
				say("bottleq: task %s: still pending: no worker serves queue %s\n", id, queue)
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// stillThere says, after a wait ended early, where the task really is:
// ctx may have ended (Ctrl-C), so it reads it under a context of its own.
func stillThere(ctx context.Context, client *enqueue.Client, queue, id string, last enqueue.Outcome) string {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	out, err := client.Status(rctx, queue, id)
	if err != nil {
		out = last
	}
	switch {
	case out.Cancelled:
		return fmt.Sprintf("task %s was cancelled", id)
	case out.State == asynq.TaskStateCompleted:
		return fmt.Sprintf("task %s has completed meanwhile: `%s` prints its result", id, cmdFor("wait", queue, id))
	case out.State == asynq.TaskStateArchived:
		return fmt.Sprintf("task %s has failed meanwhile: `%s` says why", id, cmdFor("status", queue, id))
	}
	state := out.State.String()
	switch out.State {
	case 0:
		state = "where it was (its state could not be read)"
	case asynq.TaskStateActive:
		state = "running"
		if out.Result.Phase != "" {
			state += " (phase " + out.Result.Phase + ")"
		}
	case asynq.TaskStateRetry:
		state = "waiting for a retry"
	}
	return fmt.Sprintf("task %s is still %s; it was not cancelled: run `%s`", id, state, cmdFor("cancel", queue, id))
}
