package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/internal/livelog"
	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/internal/testworker"
	"github.com/bot-bottle/bottleq/tasks"
)

const secret = "s3cr3t-VALUE-7"

// env is a process environment for Run.
func env(r asynq.RedisClientOpt, kv ...string) func(string) string {
	m := map[string]string{"REDIS_URL": "redis://" + r.Addr}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// run calls Run and returns its exit code, stdout and stderr.
func run(t *testing.T, getenv func(string) string, stderr io.Writer, args ...string) (int, string) {
	t.Helper()
	var stdout bytes.Buffer
	code := Run(context.Background(), args, getenv, &stdout, stderr)
	return code, stdout.String()
}

// queues lists the queues in r: none means nothing was ever enqueued.
func queues(t *testing.T, r asynq.RedisClientOpt) []string {
	t.Helper()
	i := asynq.NewInspector(r)
	defer i.Close()
	qs, err := i.Queues()
	if err != nil {
		t.Fatalf("Queues: %v", err)
	}
	return qs
}

func TestRunUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		env      []string
		wantText string // in the one line on stderr
	}{
		{"no command", []string{"--image", "alpine"}, nil, "no command"},
		{"no command after --", []string{"--image", "alpine", "--"}, nil, "no command"},
		{"image and from", []string{"--image", "alpine", "--from", "task:x", "--", "true"}, nil, "--image and --from"},
		{"neither image nor from", []string{"--", "true"}, nil, "--image and --from"},
		{"bad --env key", []string{"--image", "alpine", "--env", "1A=" + secret, "--", "true"}, nil, "--env: a key of 2 bytes is not a valid name: it starts with a digit"},
		{"--env with a NUL", []string{"--image", "alpine", "--env", "K=" + secret + "\x00", "--", "true"}, nil, "--env: value of K"},
		{"bad bare --env key", []string{"--image", "alpine", "--env", "1A", "--", "true"}, nil, "--env: a key of 2 bytes is not a valid name: it starts with a digit"},
		{"--env K not set", []string{"--image", "alpine", "--env", "TOKEN", "--", "true"}, nil, `--env: "TOKEN" is not set`},
		{"bad --timeout", []string{"--image", "alpine", "--timeout", "abc", "--", "true"}, nil, `--timeout: "abc" is not a duration`},
		{"--timeout too long", []string{"--image", "alpine", "--timeout", "25h", "--", "true"}, nil, "--timeout: 25h0m0s is longer"},
		{"negative --timeout", []string{"--image", "alpine", "--timeout", "-1s", "--", "true"}, nil, "--timeout: must not be negative"},
		{"relative --workdir", []string{"--image", "alpine", "--workdir", "src", "--", "true"}, nil, "--workdir:"},
		{"bad --from", []string{"--from", "base.smolmachine", "--", "true"}, nil, "--from:"},
		{"bad --image", []string{"--image", "-x", "--", "true"}, nil, "--image:"},
		{"empty program", []string{"--image", "alpine", "--", ""}, nil, "command:"},
		{"negative --max-retry", []string{"--image", "alpine", "--max-retry", "-1", "--", "true"}, nil, "--max-retry"},
		{"--max-retry not a number", []string{"--image", "alpine", "--max-retry", "x", "--", "true"}, nil, "-max-retry"},
		{"unknown flag", []string{"--image", "alpine", "--shell", "--", "true"}, nil, "-shell"},
		{"bad --redis", []string{"--redis", "http://:pw-SECRET@h:1", "--image", "alpine", "--", "true"}, nil, "--redis: redis URL scheme"},
		{"bad REDIS_URL", []string{"--image", "alpine", "--", "true"}, []string{"REDIS_URL", "redis://:pw-SECRET@h:1/x"}, "REDIS_URL: redis URL path"},
		{"blank --task-id", []string{"--image", "alpine", "--task-id", " ", "--", "true"}, nil, "--task-id"},
		{"negative --replicas", []string{"--image", "alpine", "--replicas", "-1", "--", "true"}, nil, "--replicas: must not be negative"},
		{"negative --redis-wait", []string{"--image", "alpine", "--redis-wait", "-1s", "--", "true"}, nil, "--redis-wait: -1s must not be negative"},
		{"sentinel URL without master", []string{"--redis", "redis-sentinel://:pw-SECRET@h:26379", "--image", "alpine", "--", "true"}, nil, "--redis: redis URL has no master=NAME"},
		{"upper-case --tenant", []string{"--tenant", "Acme", "--image", "alpine", "--", "true"}, nil, `--tenant: "Acme" may hold only lower-case letters`},
		{"64-character --tenant", []string{"--tenant", strings.Repeat("a", 64), "--image", "alpine", "--", "true"}, nil, "--tenant: is 64 bytes, more than 63"},
		{"--tenant with a leading dash", []string{"--tenant", "-acme", "--image", "alpine", "--", "true"}, nil, `--tenant: "-acme" must not start with '-'`},
		{"bad BOTTLEQ_TENANT", []string{"--image", "alpine", "--", "true"}, []string{"BOTTLEQ_TENANT", "team_a"}, `BOTTLEQ_TENANT: "team_a" may hold only`},
		{"bad BOTTLEQ_TENANT is not read when --tenant is given", []string{"--tenant", "a/b", "--image", "alpine", "--", "true"}, []string{"BOTTLEQ_TENANT", "ok"}, `--tenant: "a/b"`},
		{"--cpus 256", []string{"--image", "alpine", "--cpus", "256", "--", "true"}, nil, "--cpus: 256 is out of range: 1 to 255"},
		{"negative --cpus", []string{"--image", "alpine", "--cpus", "-1", "--", "true"}, nil, "--cpus: -1 is out of range"},
		{"--cpus not a number", []string{"--image", "alpine", "--cpus", "two", "--", "true"}, nil, `invalid value "two" for flag -cpus`},
		{"--mem over 1 TiB", []string{"--image", "alpine", "--mem", "1048577", "--", "true"}, nil, "--mem: 1048577 is out of range: 1 to 1048576 MiB (1 TiB)"},
		{"negative --mem", []string{"--image", "alpine", "--mem", "-512", "--", "true"}, nil, "--mem: -512 is out of range"},
		{"--mem with a unit", []string{"--image", "alpine", "--mem", "2GiB", "--", "true"}, nil, `invalid value "2GiB" for flag -mem`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
			var stderr bytes.Buffer

			code, stdout := run(t, env(r, tt.env...), &stderr, tt.args...)

			if code != exitUsage {
				t.Errorf("exit code = %d, want %d", code, exitUsage)
			}
			msg := stderr.String()
			if !strings.HasPrefix(msg, "enqueue: ") || strings.Count(msg, "\n") != 1 || !strings.HasSuffix(msg, "\n") {
				t.Errorf("stderr = %q, want one line starting %q", msg, "enqueue: ")
			}
			if !strings.Contains(msg, tt.wantText) {
				t.Errorf("stderr = %q, want it to contain %q", msg, tt.wantText)
			}
			if strings.Contains(msg, secret) || strings.Contains(msg, "pw-SECRET") {
				t.Errorf("stderr %q quotes a secret", msg)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			if qs := queues(t, r); len(qs) != 0 {
				t.Errorf("queues = %q, want none: a usage error must enqueue nothing", qs)
			}
		})
	}
}

func TestRunHelp(t *testing.T) {
	t.Parallel()
	var stderr bytes.Buffer
	code, stdout := run(t, func(string) string { return "" }, &stderr, "-h")
	if code != exitOK || stderr.Len() != 0 {
		t.Errorf("exit code = %d, stderr %q; want 0 and nothing", code, stderr.String())
	}
	for _, want := range []string{"Usage: enqueue", "-env K=V", "--env K alone", "-wait", "-tenant tenant", "$BOTTLEQ_TENANT", "-cpus N", "-mem MiB"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("help does not mention %q:\n%s", want, stdout)
		}
	}
}

func TestRunEnqueue(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr} // no worker: the task stays pending
	var stderr bytes.Buffer

	code, stdout := run(t, env(r, "TOKEN", secret), &stderr,
		"--image", "alpine:3.20", "--env", "A=1", "--env", "B=x=y", "--env", "TOKEN",
		"--workdir", "/src", "--timeout", "90s", "--no-commit",
		"--task-id", "job-1", "--queue", "agents", "--max-retry", "0",
		"--", "sh", "-c", "echo $TOKEN")

	if code != exitOK || stderr.Len() != 0 {
		t.Fatalf("exit code = %d, stderr %q; want 0 and nothing", code, stderr.String())
	}
	if stdout != "job-1\n" {
		t.Errorf("stdout = %q, want the task ID on one line", stdout)
	}
	i := asynq.NewInspector(r)
	defer i.Close()
	info, err := i.GetTaskInfo("agents", "job-1")
	if err != nil {
		t.Fatalf("GetTaskInfo: %v", err)
	}
	if info.Type != tasks.TypeAgentRun || info.State != asynq.TaskStatePending || info.MaxRetry != 0 {
		t.Errorf("task = type %s state %s max retry %d, want %s pending 0", info.Type, info.State, info.MaxRetry, tasks.TypeAgentRun)
	}
	p, err := tasks.Decode(info.Payload)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	got := fmt.Sprintf("%s|%q|%v|%s|%s|%t", p.Image, p.Command, p.Env, p.Workdir, p.CommandTimeout(), p.CommitEnabled())
	want := fmt.Sprintf("alpine:3.20|%q|%v|/src|1m30s|false", []string{"sh", "-c", "echo $TOKEN"}, map[string]string{"A": "1", "B": "x=y", "TOKEN": secret})
	if got != want {
		t.Errorf("payload = %s\nwant      %s", got, want)
	}

	// The same task ID again is refused.
	stderr.Reset()
	code, _ = run(t, env(r), &stderr, "--image", "alpine", "--task-id", "job-1", "--queue", "agents", "--", "true")
	if code != exitFail || !strings.Contains(stderr.String(), "--task-id: task job-1 already exists") {
		t.Errorf("duplicate: exit code %d, stderr %q; want 1 and a --task-id message", code, stderr.String())
	}
}

// TestRunTenantAndResources: --tenant, --cpus and --mem land in the stored
// payload; BOTTLEQ_TENANT stands in for --tenant (the flag wins); without
// either the payload names no tenant, which reads as the default.
func TestRunTenantAndResources(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		env        []string
		wantTenant string // the payload's Tenant as stored
		wantCPUs   int
		wantMem    int
	}{
		{name: "flags", args: []string{"--tenant", "acme-2", "--cpus", "2", "--mem", "1536"}, wantTenant: "acme-2", wantCPUs: 2, wantMem: 1536},
		{name: "limits", args: []string{"--cpus", "255", "--mem", "1048576"}, wantCPUs: 255, wantMem: 1048576},
		{name: "zero is the worker's default", args: []string{"--cpus", "0", "--mem", "0"}},
		{name: "BOTTLEQ_TENANT", env: []string{"BOTTLEQ_TENANT", "from-env"}, wantTenant: "from-env"},
		{name: "--tenant wins over BOTTLEQ_TENANT", args: []string{"--tenant", "from-flag"}, env: []string{"BOTTLEQ_TENANT", "from-env"}, wantTenant: "from-flag"},
		{name: "neither", wantTenant: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
			var stderr bytes.Buffer
			args := append(append([]string{"--image", "alpine", "--task-id", "t1"}, tt.args...), "--", "true")

			code, _ := run(t, env(r, tt.env...), &stderr, args...)

			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			i := asynq.NewInspector(r)
			defer i.Close()
			info, err := i.GetTaskInfo(tasks.DefaultQueue, "t1")
			if err != nil {
				t.Fatalf("GetTaskInfo: %v", err)
			}
			p, err := tasks.Decode(info.Payload)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if p.Tenant != tt.wantTenant || p.CPUs != tt.wantCPUs || p.MemMiB != tt.wantMem {
				t.Errorf("payload %s = tenant %q, cpus %d, mem_mib %d; want %q, %d, %d",
					info.Payload, p.Tenant, p.CPUs, p.MemMiB, tt.wantTenant, tt.wantCPUs, tt.wantMem)
			}
		})
	}
}

func TestRunWait(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string // before --image
		result     tasks.Result
		err        error
		wantCode   int
		wantStdout string
		wantStderr []string
		// noLive: the task has no live output, and its result's output is
		// printed.
		noLive bool
	}{
		{
			name:       "exit 0",
			result:     tasks.Result{Stdout: "hello\n", Stderr: "note\n", Commit: "/srv/commits/x.smolmachine", Host: "w1"},
			wantStdout: "hello\n",
			wantStderr: []string{"note\n", "bottleq: commit: /srv/commits/x.smolmachine on w1 (use --from task:"},
		},
		{
			name:       "a tenant's commit",
			args:       []string{"--tenant", "acme"},
			result:     tasks.Result{Commit: "/srv/commits/x.smolmachine", Host: "w1"},
			wantStderr: []string{" --tenant acme)\n"},
		},
		{
			name:       "the agent's exit code",
			result:     tasks.Result{ExitCode: 3, Stdout: "partial\n", Stderr: "boom\n"},
			wantCode:   3,
			wantStdout: "partial\n",
			wantStderr: []string{"boom\n"},
		},
		{
			name: "artifacts",
			result: tasks.Result{Artifacts: []tasks.Artifact{
				{Path: "/w/out/A.txt", Host: "w1", HostPath: "/data/artifacts/k/0-A.txt", Size: 6, SHA256: "abc123"},
				{Path: "/w/out/none.txt", Error: tasks.ArtifactMissing},
				{Path: "/w/out/big", Size: 9 << 20, Error: "over the cap of 1 MiB per artifact (-max-artifact-bytes): 9 MiB"},
				{Path: "/w/out/B.txt", Host: "w1", Key: "artifacts/default/k/3", Size: 7, SHA256: "def456"},
			}},
			wantStderr: []string{
				"bottleq: artifact /w/out/B.txt: in the store as artifacts/default/k/3 (7 bytes, sha256 def456; --artifacts-dir downloads it)\n",
				"bottleq: artifact /w/out/A.txt: /data/artifacts/k/0-A.txt (6 bytes, sha256 abc123)\n",
				"bottleq: artifact /w/out/none.txt: missing\n",
				"bottleq: artifact /w/out/big: over the cap of 1 MiB per artifact (-max-artifact-bytes): 9 MiB\n",
			},
		},
		{
			name:       "timed out",
			result:     tasks.Result{ExitCode: 124, TimedOut: true},
			wantCode:   124,
			wantStderr: []string{"the command timed out"},
		},
		{
			name:       "archived",
			err:        fmt.Errorf("from: no commit\nfor task x: %w", asynq.SkipRetry),
			wantCode:   exitFail,
			wantStderr: []string{"enqueue: task ", " failed: from: no commit for task x\n"},
		},
		{
			name:       "no live output",
			noLive:     true,
			result:     tasks.Result{ExitCode: 2, Stdout: "from the result\n", Stderr: "its stderr\n"},
			wantCode:   2,
			wantStdout: "from the result\n",
			wantStderr: []string{"its stderr\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
			testworker.Serve(t, r, &testworker.Agent{
				NoLiveOutput: tt.noLive,
				Run:          func(context.Context, tasks.AgentRun, int) (tasks.Result, error) { return tt.result, tt.err },
			})
			var stderr bytes.Buffer

			args := append(append([]string{"--wait"}, tt.args...), "--image", "alpine", "--", "agent")
			code, stdout := run(t, env(r), &stderr, args...)

			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tt.wantCode, stderr.String())
			}
			if stdout != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", stdout, tt.wantStdout)
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr = %q, want it to contain %q", stderr.String(), want)
				}
			}
			if strings.Contains(stderr.String(), asynq.SkipRetry.Error()) {
				t.Errorf("stderr shows asynq's own words: %q", stderr.String())
			}
		})
	}
}

// TestRunWaitLive: --wait shows the task's live output as the worker
// writes it: each phase once, in order, with what it does; a failed
// attempt, and the retry that follows; the agent's output once, from the
// live output, not again from the result.
func TestRunWaitLive(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	testworker.Serve(t, r, &testworker.Agent{
		Phases: []string{tasks.PhasePack, tasks.PhaseStop},
		Run: func(_ context.Context, _ tasks.AgentRun, attempt int) (tasks.Result, error) {
			if attempt == 1 {
				return tasks.Result{}, errors.New("machine start: kvm not available")
			}
			return tasks.Result{Stdout: "hi\n", Stderr: "no newline", ExitCode: 4}, nil
		},
	})
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), []string{"--wait", "--task-id", "l1", "--image", "alpine", "--", "agent"}, env(r), &stdout, &stderr)

	if code != 4 || stdout.String() != "hi\n" {
		t.Errorf("exit %d, stdout %q; want 4 and the output once", code, stdout.String())
	}
	want := "bottleq: task l1: enqueued on queue default\n" +
		"bottleq: task l1: pack (getting the VM's pack)\n" +
		"bottleq: task l1: stop (stopping the VM to commit its state)\n" +
		"bottleq: task l1: attempt 1 failed: machine start: kvm not available\n" +
		"bottleq: task l1: attempt 2 starts on host testworker\n" +
		"bottleq: task l1: pack (getting the VM's pack), attempt 2\n" +
		"bottleq: task l1: stop (stopping the VM to commit its state), attempt 2\n" +
		"no newline\n"
	if stderr.String() != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr.String(), want)
	}
}

// lines is a stderr that hands each line it gets to a channel.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
	ch  chan string
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadString('\n')
		if err != nil {
			l.buf.WriteString(line) // keep the partial line
			return len(p), nil
		}
		l.ch <- line
	}
}

// TestRunWaitProgress holds the stand-in worker at each phase until Run has
// printed it, so every phase line is seen whatever the timing.
func TestRunWaitProgress(t *testing.T) {
	t.Parallel()
	phases := []string{tasks.PhasePack, tasks.PhaseCreate, tasks.PhaseExec, tasks.PhaseCommit}
	stderr := &lines{ch: make(chan string, 16)}
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	testworker.Serve(t, r, &testworker.Agent{
		Phases: phases,
		Step: func(ctx context.Context, phase string) error {
			for {
				select {
				case line := <-stderr.ch:
					if strings.HasPrefix(line, "bottleq: task p1: "+phase+" (") {
						return nil
					}
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		},
		Run: func(context.Context, tasks.AgentRun, int) (tasks.Result, error) {
			return tasks.Result{Stdout: "done\n"}, nil
		},
	})
	var stdout bytes.Buffer

	code := Run(context.Background(), []string{"--wait", "--task-id", "p1", "--image", "alpine", "--", "agent"}, env(r), &stdout, stderr)

	if code != exitOK || stdout.String() != "done\n" {
		t.Errorf("exit code = %d, stdout %q; want 0 and %q", code, stdout.String(), "done\n")
	}
	// Every phase line reached the worker in order, or it would still be
	// waiting; the channel holds whatever followed.
	close(stderr.ch)
	for line := range stderr.ch {
		if strings.HasPrefix(line, "bottleq: task p1: ") && !strings.Contains(line, "enqueued") {
			t.Errorf("phase line %q after the last phase", line)
		}
	}
}

// TestRunFiles: --file reads LOCAL into the payload with its mode, split at
// the first ':'; --artifact lists guest paths; each mistake is a usage
// error naming the flag, and nothing is enqueued.
func TestRunFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := filepath.Join(dir, "a.txt")
	script := filepath.Join(dir, "run.sh")
	big := filepath.Join(dir, "big")
	for path, n := range map[string]int{a: 3, script: 10, big: tasks.DefaultMaxFilesBytes + 1} {
		if err := os.WriteFile(path, bytes.Repeat([]byte("x"), n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(script, 0o755); err != nil {
		t.Fatal(err)
	}

	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	var stderr bytes.Buffer
	code, _ := run(t, env(r), &stderr, "--image", "alpine", "--task-id", "f1",
		"--file", a+":/workspace/in/a.txt", "--file", script+":/workspace/run.sh",
		"--artifact", "/workspace/out/A.txt", "--artifact", "/workspace/out/none.txt", "--", "true")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	i := asynq.NewInspector(r)
	defer i.Close()
	info, err := i.GetTaskInfo(tasks.DefaultQueue, "f1")
	if err != nil {
		t.Fatal(err)
	}
	p, err := tasks.Decode(info.Payload)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%s %q %s | %s %q %s | %q", p.Files[0].Path, p.Files[0].Content, p.Files[0].Mode,
		p.Files[1].Path, p.Files[1].Content, p.Files[1].Mode, p.Artifacts)
	want := `/workspace/in/a.txt "xxx" 0644 | /workspace/run.sh "xxxxxxxxxx" 0755 | ["/workspace/out/A.txt" "/workspace/out/none.txt"]`
	if len(p.Files) != 2 || got != want {
		t.Errorf("payload files = %s\nwant %s", got, want)
	}

	tests := []struct {
		name     string
		args     []string
		wantText string
	}{
		{"no colon", []string{"--file", a}, "--file " + a + ": must be LOCAL:GUEST"},
		{"no guest", []string{"--file", a + ":"}, "must be LOCAL:GUEST"},
		{"no local", []string{"--file", ":/g"}, "must be LOCAL:GUEST"},
		{"missing local", []string{"--file", filepath.Join(dir, "none") + ":/g"}, "no such file"},
		{"colon in LOCAL splits there", []string{"--file", dir + "/a:b.txt:/g"}, "files[0].path"},
		{"relative guest", []string{"--file", a + ":g/a"}, "files[0].path: \"g/a\" must be an absolute guest path"},
		{"duplicate guest", []string{"--file", a + ":/g", "--file", script + ":/g"}, "files[1].path"},
		{"a directory", []string{"--file", dir + ":/g"}, "not a regular file"},
		{"oversize", []string{"--file", big + ":/g"}, "1 MiB (1048577 bytes) in total, over the cap of 1 MiB"},
		{"relative artifact", []string{"--artifact", "out/A.txt"}, `--artifact: "out/A.txt" must be an absolute guest path`},
		{"colon in artifact", []string{"--artifact", "/out/a:b"}, `--artifact: "/out/a:b" must not contain ':'`},
		{"duplicate artifact", []string{"--artifact", "/a", "--artifact", "/a"}, `--artifact: "/a" is also artifacts[0]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
			var stderr bytes.Buffer
			args := append(append([]string{"--image", "alpine"}, tt.args...), "--", "true")
			code, stdout := run(t, env(r), &stderr, args...)
			msg := stderr.String()
			if code != exitUsage || stdout != "" || !strings.HasPrefix(msg, "enqueue: ") || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, tt.wantText) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 2 and one line containing %q", code, stdout, msg, tt.wantText)
			}
			if !strings.Contains(msg, "--file") && !strings.Contains(msg, "--artifact") {
				t.Errorf("stderr %q does not name the flag", msg)
			}
			if qs := queues(t, r); len(qs) != 0 {
				t.Errorf("queues = %q, want none", qs)
			}
		})
	}
}

// TestRunWaitCutOutput: when the live output of the attempt that ends the
// task was cut (here at the task's cap), --wait says so as it happens and
// prints the result's copy of the output after it.
func TestRunWaitCutOutput(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	testworker.Serve(t, r, &testworker.Agent{
		Phases: []string{tasks.PhaseExec},
		Step: func(ctx context.Context, _ string) error {
			_, err := livelog.Append(ctx, rdb, tasks.DefaultQueue, "c1", livelog.Limits{MaxBytes: 1 << 20, MaxEntries: 100}, time.Hour,
				[]livelog.Entry{{Kind: livelog.KindTruncated, Attempt: 1, Reason: livelog.ReasonCap, StdoutDropped: 5}})
			return err
		},
		Run: func(context.Context, tasks.AgentRun, int) (tasks.Result, error) {
			return tasks.Result{Stdout: "tail\n"}, nil
		},
	})
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), []string{"--wait", "--task-id", "c1", "--image", "alpine", "--", "agent"}, env(r), &stdout, &stderr)
	if code != 0 || stdout.String() != "tail\ntail\n" {
		t.Errorf("exit %d, stdout %q; want the live output, then the result's copy", code, stdout.String())
	}
	for _, want := range []string{
		"bottleq: task c1: live output reached the task's cap: no more of its output is shown as it comes (5 bytes of stdout dropped so far)\n",
		"bottleq: task c1: not all of its output was shown as it came; the result's copy follows (the head and tail of each stream)\n",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q lacks %q", stderr.String(), want)
		}
	}
}
