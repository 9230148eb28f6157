package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/internal/testworker"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// hostileArtifacts are guest paths a result may carry, as a worker (or
// something posing as one) wrote them, with the file each must land in.
var hostileArtifacts = []struct{ guest, file string }{
	{"/workspace/out/report.txt", "report.txt"},
	{"/other/report.txt", "1-report.txt"},
	{"../x", "x"},
	{"/etc/passwd", "passwd"},
	{"..", "artifact-4"},
	{"/", "artifact-5"},
	{"/w/../../../../tmp/evil", "evil"},
}

// storeAgent stands in for a worker with a store: it puts each artifact of
// hostileArtifacts into st, as a worker does, and lists them in its
// result, with one more that was missing. The agent exits 3.
func storeAgent(st store.Store) *testworker.Agent {
	return &testworker.Agent{Run: func(ctx context.Context, p tasks.AgentRun, _ int) (tasks.Result, error) {
		id, _ := asynq.GetTaskID(ctx)
		r := tasks.Result{ExitCode: 3, Tenant: p.TenantName(), Host: "w1"}
		for i, h := range hostileArtifacts {
			a, err := testworker.PutArtifact(ctx, st, p.TenantName(), id, i, h.guest, content(id, i))
			if err != nil {
				return r, err
			}
			r.Artifacts = append(r.Artifacts, a)
		}
		r.Artifacts = append(r.Artifacts, tasks.Artifact{Path: "/workspace/out/none.txt", Error: tasks.ArtifactMissing})
		return r, nil
	}}
}

// content is artifact i of task id.
func content(id string, i int) []byte { return []byte(fmt.Sprintf("artifact %d of %s\n", i, id)) }

// checkDownloads checks that dir holds the artifacts of task id, each
// under its name and nothing else, that parent holds dir alone (nothing
// landed beside it), and that stderr says where each went.
func checkDownloads(t *testing.T, parent, dir, id, stderr string) {
	t.Helper()
	var want []string
	for i, h := range hostileArtifacts {
		want = append(want, h.file)
		p := filepath.Join(dir, h.file)
		if b, err := os.ReadFile(p); err != nil || string(b) != string(content(id, i)) {
			t.Errorf("%s: %q, %v; want %q", p, b, err, content(id, i))
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s is %v, want 0600", p, fi.Mode().Perm())
		}
		if line := fmt.Sprintf("bottleq: artifact %s: %s (%d bytes, sha256 ", h.guest, p, len(content(id, i))); !strings.Contains(stderr, line) {
			t.Errorf("stderr lacks %q:\n%s", line, stderr)
		}
	}
	slices.Sort(want)
	ents, _ := os.ReadDir(dir)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s holds %q, want %q", dir, got, want)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 1 || ents[0].Name() != filepath.Base(dir) {
		t.Errorf("%s holds %d entries, want only %s", parent, len(ents), filepath.Base(dir))
	}
	if !strings.Contains(stderr, "bottleq: artifact /workspace/out/none.txt: missing\n") {
		t.Errorf("stderr does not report the missing artifact:\n%s", stderr)
	}
}

// TestRunArtifactsDir: --wait --artifacts-dir downloads a finished task's
// artifacts from the store --store, BOTTLEQ_STORE or the worker's default
// store names into a directory it makes, each under the base of its guest
// path made safe and distinct, and exits with the agent's exit code; so
// does the wait verb for a task that finished before.
func TestRunArtifactsDir(t *testing.T) {
	t.Parallel()
	data := t.TempDir() // a worker's data directory, holding its default store
	storeDir := filepath.Join(data, "store")
	st, err := store.Open(context.Background(), "file://"+storeDir)
	if err != nil {
		t.Fatal(err)
	}
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	testworker.Serve(t, r, storeAgent(st))

	for _, tt := range []struct {
		name string
		args []string
		env  []string
	}{
		{"--store", []string{"--store", "file://" + storeDir}, nil},
		{"BOTTLEQ_STORE", nil, []string{"BOTTLEQ_STORE", "file://" + storeDir}},
		{"the worker's default store", nil, []string{"BOTTLEQ_DATA_DIR", data}},
		{"the worker's default data directory", nil, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := tt.env
			if tt.name == "the worker's default data directory" {
				// The worker's default is XDG_DATA_HOME/bottleq.
				xdg := t.TempDir()
				if err := os.Symlink(data, filepath.Join(xdg, "bottleq")); err != nil {
					t.Fatal(err)
				}
				e = []string{"XDG_DATA_HOME", xdg, "HOME", "/nonexistent"}
			}
			parent := t.TempDir()
			dir := filepath.Join(parent, "out", "artifacts") // made, parents too
			id := "t-" + strings.ReplaceAll(tt.name, " ", "-")
			args := append(append([]string{"--wait", "--artifacts-dir", dir, "--tenant", "acme", "--task-id", id}, tt.args...), "--image", "alpine", "--", "agent")
			_, stderr := must(t, env(r, e...), 3, args...)
			checkDownloads(t, filepath.Join(parent, "out"), dir, id, stderr)

			// Again with the wait verb, into another directory: the
			// same files, the same exit code.
			parent2 := t.TempDir()
			dir2 := filepath.Join(parent2, "again")
			args = append(append([]string{"wait", "--artifacts-dir", dir2}, tt.args...), id)
			_, stderr = must(t, env(r, e...), 3, args...)
			checkDownloads(t, parent2, dir2, id, stderr)
		})
	}
}

// TestRunArtifactsDirFailures: an artifact that cannot be downloaded (gone
// from the store, or not matching its result) is one "enqueue:" line each
// and exit 1, after the others are downloaded; nothing of it is left in
// the directory.
func TestRunArtifactsDirFailures(t *testing.T) {
	t.Parallel()
	storeDir := t.TempDir()
	st, err := store.Open(context.Background(), "file://"+storeDir)
	if err != nil {
		t.Fatal(err)
	}
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	testworker.Serve(t, r, &testworker.Agent{Run: func(ctx context.Context, p tasks.AgentRun, _ int) (tasks.Result, error) {
		id, _ := asynq.GetTaskID(ctx)
		res := tasks.Result{Tenant: p.TenantName()}
		for i, g := range []string{"/out/ok.txt", "/out/gone.txt", "/out/other.txt"} {
			a, err := testworker.PutArtifact(ctx, st, p.TenantName(), id, i, g, content(id, i))
			if err != nil {
				return res, err
			}
			res.Artifacts = append(res.Artifacts, a)
		}
		// Past retention: the object is gone.
		if err := st.Delete(ctx, res.Artifacts[1].Key); err != nil {
			return res, err
		}
		// The result and the store disagree.
		res.Artifacts[2].SHA256 = strings.Repeat("0", 64)
		// An older worker kept one on its own disk only.
		res.Artifacts = append(res.Artifacts, tasks.Artifact{Path: "/out/local.txt", Host: "w0", HostPath: "/data/artifacts/x/3-local.txt", Size: 1, SHA256: strings.Repeat("1", 64)})
		return res, nil
	}})
	dir := t.TempDir()
	var stderr strings.Builder
	code, _ := run(t, env(r), &stderr, "--wait", "--artifacts-dir", dir, "--store", "file://"+storeDir, "--task-id", "f1", "--image", "alpine", "--", "agent")
	if code != exitFail {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{
		"bottleq: artifact /out/ok.txt: " + filepath.Join(dir, "ok.txt") + " (",
		"enqueue: artifact /out/gone.txt: store: get artifacts/default/",
		"enqueue: artifact /out/other.txt: SHA-256 mismatch: the store holds",
		"enqueue: artifact /out/local.txt has no store key in the result (the worker kept it on host w0 at /data/artifacts/x/3-local.txt only)\n",
	} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 || ents[0].Name() != "ok.txt" {
		t.Errorf("%s holds %d entries, want ok.txt alone", dir, len(ents))
	}
}

// TestArtifactsDirRefused: --artifacts-dir and --store are checked before
// anything is enqueued: a usage error (exit 2) for a bad command line, an
// exit 1 for a store that is not there; one line each, quoting no secret.
func TestArtifactsDirRefused(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir() // a data directory without a store
	cmd := []string{"--image", "alpine", "--", "true"}
	for _, tt := range []struct {
		name     string
		args     []string
		env      []string
		code     int
		wantText string
	}{
		{"--artifacts-dir without --wait", append([]string{"--artifacts-dir", "out"}, cmd...), nil, exitUsage, "--artifacts-dir: only with --wait"},
		{"--store without --artifacts-dir", append([]string{"--wait", "--store", "file:///nonexistent/store"}, cmd...), nil, exitFail, "--store: the store directory /nonexistent/store does not exist"},
		{"--artifacts-dir a file", append([]string{"--wait", "--artifacts-dir", file}, cmd...), nil, exitUsage, "--artifacts-dir: " + file + " is not a directory"},
		{"bad --store scheme", append([]string{"--wait", "--artifacts-dir", "out", "--store", "http://h/b"}, cmd...), nil, exitUsage, `--store: scheme: "http" is not file or s3`},
		{"relative file store", append([]string{"--wait", "--artifacts-dir", "out", "--store", "file://store"}, cmd...), nil, exitUsage, "--store: dir: a file URL needs an absolute path"},
		{"credentials in --store", append([]string{"--wait", "--artifacts-dir", "out", "--store", "s3://AKIA:pw-SECRET@bucket/p"}, cmd...), nil, exitUsage, "--store: url: credentials do not belong in the store URL"},
		{"credentials in BOTTLEQ_STORE's query", append([]string{"--wait", "--artifacts-dir", "out"}, cmd...), []string{"BOTTLEQ_STORE", "s3://bucket/p?secret_key=pw-SECRET"}, exitUsage, "BOTTLEQ_STORE: secret_key: credentials do not belong"},
		{"wait: bad --store", []string{"wait", "--artifacts-dir", "out", "--store", "s3://B/p", "x"}, nil, exitUsage, `--store: bucket: "B" is not a valid bucket name`},
		{"wait: --store alone", []string{"wait", "--store", "file:///nonexistent", "x"}, nil, exitFail, "--store: the store directory /nonexistent does not exist"},
		{"status has no --artifacts-dir", []string{"status", "--artifacts-dir", "out", "x"}, nil, exitUsage, "flag provided but not defined: -artifacts-dir"},
		{"missing store directory", append([]string{"--wait", "--artifacts-dir", "out", "--store", "file:///nonexistent/store"}, cmd...), nil, exitFail, "--store: the store directory /nonexistent/store does not exist"},
		{"no default store here", append([]string{"--wait", "--artifacts-dir", "out"}, cmd...), []string{"BOTTLEQ_DATA_DIR", empty}, exitFail,
			"--artifacts-dir: no store to download from: --store and BOTTLEQ_STORE are not set, and the worker's default store " + filepath.Join(empty, "store") + " is not on this machine; give --store"},
		{"wait: no default store here", []string{"wait", "--artifacts-dir", "out", "x"}, []string{"BOTTLEQ_DATA_DIR", empty}, exitFail, "no store to download from"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
			dir := t.TempDir()
			args := slices.Clone(tt.args)
			for i, a := range args {
				if a == "out" {
					args[i] = filepath.Join(dir, "out")
				}
			}
			stdout, stderr := must(t, env(r, tt.env...), tt.code, args...)
			refused(t, r, stdout, stderr, tt.wantText)
			if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
				t.Errorf("a refused command made --artifacts-dir")
			}
		})
	}
}
