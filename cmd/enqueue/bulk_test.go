package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/internal/testworker"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// TestRunFilesByRef: with --store (or BOTTLEQ_STORE) a --file over the
// inline threshold goes to the store and the task in Redis carries its
// reference; a small one stays inline; the task is kept for the store's
// default retention unless --retention says otherwise.
func TestRunFilesByRef(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	big, small := filepath.Join(dir, "big.bin"), filepath.Join(dir, "small.txt")
	bigData := bytes.Repeat([]byte("b"), 700_000)
	if err := os.WriteFile(big, bigData, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(small, []byte("small"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		env     []string
		wantRet time.Duration
	}{
		{"--store", []string{"--store", "file://@DIR@"}, nil, enqueue.DefaultStoreRetention},
		{"BOTTLEQ_STORE", nil, []string{"BOTTLEQ_STORE", "file://@DIR@"}, enqueue.DefaultStoreRetention},
		{"--retention", []string{"--store", "file://@DIR@", "--retention", "2h"}, nil, 2 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			storeDir := t.TempDir()
			fix := func(ss []string) []string {
				out := make([]string, len(ss))
				for i, s := range ss {
					out[i] = strings.ReplaceAll(s, "@DIR@", storeDir)
				}
				return out
			}
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
			var stderr bytes.Buffer
			args := append(fix(tt.args), "--image", "alpine", "--task-id", "r1", "--tenant", "acme",
				"--file", big+":/in/big.bin", "--file", small+":/in/small.txt", "--", "true")
			if code, _ := run(t, env(r, fix(tt.env)...), &stderr, args...); code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			i := asynq.NewInspector(r)
			defer i.Close()
			info, err := i.GetTaskInfo(tasks.DefaultQueue, "r1")
			if err != nil {
				t.Fatal(err)
			}
			p, err := tasks.Decode(info.Payload)
			if err != nil {
				t.Fatal(err)
			}
			ref := p.Files[0].Ref
			if ref == nil || !strings.HasPrefix(ref.Key, "inputs/acme/") || ref.Size != 700_000 || p.Files[0].Mode != "0640" ||
				p.Files[1].Ref != nil || string(p.Files[1].Content) != "small" {
				t.Fatalf("files in Redis: %s with %d bytes of content and ref %+v, %s with %q and ref %+v",
					p.Files[0].Path, len(p.Files[0].Content), ref, p.Files[1].Path, p.Files[1].Content, p.Files[1].Ref)
			}
			if info.Retention != tt.wantRet {
				t.Errorf("retention %s, want %s", info.Retention, tt.wantRet)
			}
			got, err := os.ReadFile(filepath.Join(storeDir, filepath.FromSlash(ref.Key)))
			if err != nil || !bytes.Equal(got, bigData) {
				t.Errorf("the store holds %d bytes (%v), want the file's %d", len(got), err, len(bigData))
			}
		})
	}
}

// TestRunStoreErrors: a bad --store, BOTTLEQ_STORE or --retention is a
// usage error naming it; a file:// store whose directory does not exist
// fails before anything is enqueued.
func TestRunStoreErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		env      []string
		wantCode int
		want     string
	}{
		{"bad scheme", []string{"--store", "ftp://bucket/x"}, nil, exitUsage, "enqueue: --store: scheme: "},
		{"relative dir in the env", nil, []string{"BOTTLEQ_STORE", "file://rel/dir"}, exitUsage, "enqueue: BOTTLEQ_STORE: dir: "},
		{"credentials in the URL", []string{"--store", "s3://bucket/p?secret_key=x"}, nil, exitUsage, "enqueue: --store: secret_key: credentials do not belong in the store URL"},
		{"negative retention", []string{"--retention", "-1s"}, nil, exitUsage, "enqueue: --retention: must not be negative"},
		{"sub-second retention", []string{"--retention", "10ms"}, nil, exitUsage, "enqueue: --retention: 10ms is shorter than a second"},
		{"missing store directory", []string{"--store", "file:///nonexistent/bottleq-store"}, nil, exitFail, "enqueue: --store: the store directory /nonexistent/bottleq-store does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
			var stderr bytes.Buffer
			args := append(tt.args, "--image", "alpine", "--", "true")
			code, stdout := run(t, env(r, tt.env...), &stderr, args...)
			msg := stderr.String()
			if code != tt.wantCode || stdout != "" || strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, tt.want) || strings.Contains(msg, "secret_key=x") {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and one line starting %q", code, stdout, msg, tt.wantCode, tt.want)
			}
			if qs := queues(t, r); len(qs) != 0 {
				t.Errorf("queues = %q, want none", qs)
			}
		})
	}
}

// TestRunWaitOutputFromStore: when the live output did not show a task's
// output, --wait with --store prints each stream whole from the store; a
// stream the store lost comes from the result's tail with a line saying
// why; without --store it prints the tails, saying --store would give all.
func TestRunWaitOutputFromStore(t *testing.T) {
	t.Parallel()
	storeDir := t.TempDir()
	st, err := store.Open(context.Background(), "file://"+storeDir)
	if err != nil {
		t.Fatal(err)
	}
	whole := strings.Repeat("a loud agent's stdout\n", 3000)
	outKey := tasks.OutputKeyPrefix + "default/w1/1-ab/stdout"
	if _, err := st.Put(context.Background(), outKey, strings.NewReader(whole), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	result := tasks.Result{
		Stdout: "[… 65000 bytes omitted …]\nagent's stdout\n", StdoutOmitted: 65000, StdoutKey: outKey,
		Stderr: "[… 9 bytes omitted …]\nerr tail\n", StderrOmitted: 9, StderrKey: tasks.OutputKeyPrefix + "default/w1/1-ab/stderr",
	}
	tests := []struct {
		name       string
		args       []string
		wantStdout string
		wantStderr []string
	}{
		{"with --store", []string{"--store", "file://" + storeDir}, whole,
			[]string{"bottleq: task w1: its stderr from the store: store: get " + result.StderrKey + ": object not found; the result's tail follows\n", result.Stderr}},
		{"without", nil, result.Stdout,
			[]string{"bottleq: task w1: the result's copy follows (the tail of each stream; --store reads all of it from the workers' store)\n", result.Stderr}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
			testworker.Serve(t, r, &testworker.Agent{
				NoLiveOutput: true,
				Run:          func(context.Context, tasks.AgentRun, int) (tasks.Result, error) { return result, nil },
			})
			var stderr bytes.Buffer
			args := append(tt.args, "--wait", "--task-id", "w1", "--image", "alpine", "--", "agent")
			code, stdout := run(t, env(r), &stderr, args...)
			if code != 0 || stdout != tt.wantStdout {
				t.Errorf("exit %d, stdout %d bytes %.80q; want exit 0 and %d bytes %.80q", code, len(stdout), stdout, len(tt.wantStdout), tt.wantStdout)
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q lacks %q", stderr.String(), w)
				}
			}
		})
	}
}
