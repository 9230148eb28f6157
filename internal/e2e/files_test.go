package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// TestFilesAndArtifacts: enqueue --file puts two files into the VM, the
// command turns one into an artifact, and --wait reports it and a missing
// one; the artifact on the worker's host has the bytes and digest the
// result names. An oversize file is refused by enqueue before anything is
// enqueued, and the same payload forced in raw is archived by the worker
// without a smolvm call. Nothing temporary is left behind, in both
// dialects (smolvm 1.9.3 passes cp --mode; 1.0.1 does not have it). The
// worker makes its data directory private at start, and keeps the artifact
// and the commit its user's alone.
func TestFilesAndArtifacts(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"1.0.1", "1.9.3"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, "miniredis", v)
			if err := os.Chmod(s.dataDir, 0o755); err != nil {
				t.Fatal(err)
			}
			w := s.worker()
			dir := t.TempDir()
			local := map[string]struct {
				data string
				mode fs.FileMode
			}{
				"a.txt":  {"hello, artifacts\n", 0o644},
				"run.sh": {"#!/bin/sh\necho script ran\n", 0o750},
				"big":    {strings.Repeat("x", tasks.DefaultMaxFilesBytes+1), 0o644},
			}
			for name, f := range local {
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, []byte(f.data), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, f.mode); err != nil {
					t.Fatal(err)
				}
			}
			insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: s.redis.Addr})
			defer insp.Close()

			// Oversize: refused by enqueue, nothing enqueued.
			_, stderr, code := s.enqueue("--image", "alpine:3", "--file", filepath.Join(dir, "big")+":/workspace/in/big", "--", "true")
			if code != 2 || !strings.HasPrefix(stderr, "enqueue: --file ") || !strings.Contains(stderr, "over the cap of 1 MiB") || strings.Count(stderr, "\n") != 1 {
				t.Errorf("oversize --file: exit %d, stderr %q; want exit 2 and one line naming --file", code, stderr)
			}
			if qs, err := insp.Queues(); err != nil || len(qs) != 0 {
				t.Errorf("queues after a refused enqueue = %q, %v; want none", qs, err)
			}

			stdout, stderr, code := s.enqueue("--image", "alpine:3", "--workdir", "/workspace", "--wait",
				"--file", filepath.Join(dir, "a.txt")+":/workspace/in/a.txt",
				"--file", filepath.Join(dir, "run.sh")+":/workspace/in/run.sh",
				"--artifact", "/workspace/out/A.txt", "--artifact", "/workspace/out/none.txt",
				"--", "sh", "-c", "mkdir -p out && tr a-z A-Z < in/a.txt > out/A.txt && stat -c %a in/run.sh && ./in/run.sh")
			if code != 0 || stdout != "750\nscript ran\n" {
				t.Fatalf("exit %d\nstdout %q\nstderr %q\nworker:\n%s", code, stdout, stderr, w.logs)
			}
			m := regexp.MustCompile(`bottleq: task (\S+): enqueued on queue (\S+)`).FindStringSubmatch(stderr)
			if m == nil {
				t.Fatalf("no task ID in %q", stderr)
			}
			info, err := insp.GetTaskInfo(m[2], m[1])
			if err != nil {
				t.Fatal(err)
			}
			var res tasks.Result
			if err := json.Unmarshal(info.Result, &res); err != nil {
				t.Fatal(err)
			}
			if len(res.Artifacts) != 2 {
				t.Fatalf("artifacts = %+v", res.Artifacts)
			}
			want := []byte("HELLO, ARTIFACTS\n")
			sum := sha256.Sum256(want)
			a := res.Artifacts[0]
			if a.Path != "/workspace/out/A.txt" || a.Size != int64(len(want)) || a.SHA256 != hex.EncodeToString(sum[:]) || a.Error != "" || a.Host != res.Host {
				t.Errorf("artifact = %+v, want %d bytes with sha256 %x", a, len(want), sum)
			}
			if !strings.HasPrefix(a.HostPath, filepath.Join(s.dataDir, "artifacts")+string(filepath.Separator)) {
				t.Errorf("artifact at %s, want it under the worker's data dir", a.HostPath)
			}
			got, err := os.ReadFile(a.HostPath)
			gotSum := sha256.Sum256(got)
			if err != nil || !bytes.Equal(got, want) || hex.EncodeToString(gotSum[:]) != a.SHA256 {
				t.Errorf("artifact file holds %q (sha256 %x), %v; want %q", got, gotSum, err, want)
			}
			if miss := res.Artifacts[1]; miss.Path != "/workspace/out/none.txt" || miss.Error != tasks.ArtifactMissing || miss.HostPath != "" {
				t.Errorf("missing artifact = %+v", miss)
			}
			for _, line := range []string{
				"bottleq: artifact /workspace/out/A.txt: " + a.HostPath + " (17 bytes, sha256 " + a.SHA256 + ")\n",
				"bottleq: artifact /workspace/out/none.txt: missing\n",
			} {
				if !strings.Contains(stderr, line) {
					t.Errorf("stderr lacks %q:\n%s", line, stderr)
				}
			}
			for p, want := range map[string]fs.FileMode{s.dataDir: 0o700, filepath.Dir(a.HostPath): 0o700, a.HostPath: 0o600, res.Commit: 0o600} {
				if info, err := os.Stat(p); err != nil {
					t.Error(err)
				} else if got := info.Mode().Perm(); got != want {
					t.Errorf("%s is %v, want %v", p, got, want)
				}
			}
			// The worker's default store, file://DATA/store, as a producer
			// on its host opens it.
			st, err := store.Open(t.Context(), "file://"+filepath.Join(s.dataDir, "store"))
			if err != nil {
				t.Fatal(err)
			}
			fetched := filepath.Join(t.TempDir(), "A.txt")
			if err := enqueue.FetchArtifact(t.Context(), st, a, fetched); err != nil || readFile(t, fetched) != string(want) {
				t.Errorf("FetchArtifact: %v", err)
			}
			var phases []string
			for _, p := range res.Phases {
				phases = append(phases, p.Name)
			}
			if want := []string{"pack", "create", "start", "ready", "files", "exec", "artifacts", "stop", "commit", "delete"}; !slices.Equal(phases, want) {
				t.Errorf("phases = %q, want %q", phases, want)
			}
			if cps := s.calls(func(c call) bool { return c.Op == "machine cp" }); len(cps) != 4 {
				t.Errorf("%d machine cp calls, want 4 (2 in, 2 out)", len(cps))
			}

			// The oversize payload forced in raw: archived by the worker at
			// once, no smolvm call.
			before := len(s.calls(vmCalls))
			raw, err := json.Marshal(tasks.AgentRun{Image: "alpine:3", Command: []string{"true"},
				Files: []tasks.File{{Path: "/workspace/in/big", Content: bytes.Repeat([]byte("x"), 2<<20)}}})
			if err != nil {
				t.Fatal(err)
			}
			client := asynq.NewClient(asynq.RedisClientOpt{Addr: s.redis.Addr})
			defer client.Close()
			rawInfo, err := client.Enqueue(asynq.NewTask(tasks.TypeAgentRun, raw), asynq.MaxRetry(5))
			if err != nil {
				t.Fatal(err)
			}
			archived := waitState(t, insp, rawInfo.Queue, rawInfo.ID, asynq.TaskStateArchived)
			if !strings.Contains(archived.LastErr, "files: 2 MiB in total, over this worker's cap of 1 MiB") || archived.Retried != 0 {
				t.Errorf("archived with %q after %d retries", archived.LastErr, archived.Retried)
			}
			if after := s.calls(vmCalls); len(after) != before {
				t.Errorf("smolvm was called for the raw oversize task: %+v", after[before:])
			}

			metrics := w.metrics(t)
			for _, want := range []string{
				`bottleq_phase_duration_seconds_count{phase="files"} 1`,
				`bottleq_phase_duration_seconds_count{phase="artifacts"} 1`,
				`bottleq_tasks_total{outcome="invalid"} 1`,
			} {
				if !strings.Contains(metrics, want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
			if left := temporaries(t, s); len(left) != 0 {
				t.Errorf("temporaries left: %q", left)
			}
		})
	}
}

// temporaries lists what a finished task must not leave: anything in the
// worker's DATA/tmp, ".tmp-" files in its data dir, and in the simulator's
// state any machine record, guest root or temporary.
func temporaries(t *testing.T, s *stack) []string {
	t.Helper()
	var left []string
	ents, err := os.ReadDir(filepath.Join(s.dataDir, "tmp"))
	if err != nil {
		t.Errorf("the worker's tmp dir: %v", err)
	}
	for _, e := range ents {
		left = append(left, filepath.Join(s.dataDir, "tmp", e.Name()))
	}
	for _, d := range []string{"machines", "roots"} {
		ents, _ := os.ReadDir(filepath.Join(s.simState, d))
		for _, e := range ents {
			left = append(left, filepath.Join(s.simState, d, e.Name()))
		}
	}
	for _, root := range []string{s.dataDir, s.simState} {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
				left = append(left, p)
			}
			return nil
		})
	}
	return left
}
