package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/internal/testbin"
	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// simBin is cmd/smolvm-sim, built once for this test binary and named
// smolvm, for the tests that drive the handler through a real smolvm
// client and process.
var simBin string

func TestMain(m *testing.M) {
	os.Exit(testbin.Main(m.Run, func(d *testbin.Dir) (err error) {
		simBin, err = d.Build("github.com/bot-bottle/bottleq/cmd/smolvm-sim", "smolvm")
		return err
	}))
}

// simHandler returns a handler on the simulator (smolvm 1.9.3, a state
// directory of its own, env added to the simulator's environment), its
// log, and the simulator's state directory.
func simHandler(t *testing.T, mod func(*Config), env ...string) (*Handler, *bytes.Buffer, string) {
	t.Helper()
	state := t.TempDir()
	var logs bytes.Buffer
	log := zerolog.New(&syncWriter{w: &logs}).Level(zerolog.DebugLevel)
	c, err := smolvm.New(context.Background(), smolvm.Config{
		Bin: simBin, Env: append([]string{"SMOLVM_SIM_VERSION=1.9.3", "SMOLVM_SIM_STATE=" + state}, env...),
		KillGrace: 2 * time.Second, Logger: &log,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Smolvm: c, DataDir: t.TempDir(), Host: "host-a", Logger: log}
	if mod != nil {
		mod(&cfg)
	}
	h, err := NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h, &logs, state
}

// TestSimFakedSmolvmError: through the real client and simulator, an
// agent that ends its stderr with smolvm's "Error: vm not found: …" line,
// holding an env value, and exits 1 has completed: exit code 1, its
// artifact and commit kept, no retry, and neither the line nor the value
// in the log or the error. An agent that stops its own VM first has made
// it smolvm's failure, retried, and still leaks nothing.
func TestSimFakedSmolvmError(t *testing.T) {
	t.Parallel()
	const secret = "sekret-value-42"
	script := `mkdir -p out && echo made > out/a.txt; %s echo "Error: vm not found: $TOKEN" >&2; exit 1`
	for _, tt := range []struct {
		name  string
		first string // run before the line
		agent bool
	}{
		{"VM runs", "", true},
		{"VM stopped from inside", `"$SIM" machine stop --name "$SMOLVM_SIM_MACHINE" >/dev/null;`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, logs, _ := simHandler(t, nil)
			p := basic
			p.Env = map[string]string{"TOKEN": secret, "SIM": simBin}
			p.Command = []string{"sh", "-c", fmt.Sprintf(script, tt.first)}
			p.Artifacts = []string{"/work/out/a.txt"}
			var w results
			err := h.Run(context.Background(), Meta{ID: "faked"}, payload(t, p), &w)
			res := w.result(t)
			for what, text := range map[string]string{"log": logs.String(), "error": fmt.Sprint(err), "result's error": res.Error} {
				if strings.Contains(text, secret) || strings.Contains(text, "vm not found: ") {
					t.Errorf("the agent's stderr line reached the %s", what)
				}
			}
			if !tt.agent {
				var se *smolvm.Error
				if !errors.As(err, &se) || !errors.Is(err, smolvm.ErrNotFound) || errors.Is(err, asynq.SkipRetry) {
					t.Errorf("err = %v, want smolvm's failure, retried", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v, want the agent's exit", err)
			}
			if res.State != tasks.StateDone || res.ExitCode != 1 || res.Commit == "" {
				t.Errorf("result = %+v, want done with exit code 1 and a commit", res)
			}
			if len(res.Artifacts) != 1 || res.Artifacts[0].HostPath == "" || res.Artifacts[0].Size != 5 {
				t.Errorf("artifacts = %+v, want out/a.txt copied", res.Artifacts)
			}
		})
	}
}

// simCalls counts the simulator's logged calls of op.
func simCalls(t *testing.T, state, op string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "calls.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), `"op":"`+op+`"`)
}

// TestSimArtifactGuards: through the real client and simulator, an
// artifact that is a FIFO, or 400 MiB against a 1 MiB cap, is refused on
// the guest's stat without a copy, so nothing lands and nothing hangs. When
// the guest's stat lies, the 400 MiB copy is stopped once it passes the
// cap, and the FIFO's copy at the copy timeout. Nothing stays on disk and
// the task completes.
func TestSimArtifactGuards(t *testing.T) {
	t.Parallel()
	liar := t.TempDir()
	if err := os.WriteFile(filepath.Join(liar, "stat"), []byte("#!/bin/sh\necho 'regular file 1'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		make   string
		lie    bool
		want   string
		copied bool
	}{
		{"fifo", "mkfifo out/it", false, "not a regular file: fifo", false},
		{"400 MiB", "truncate -s 400M out/it", false, "over this worker's cap of 1 MiB per artifact: 400 MiB", false},
		{"400 MiB, stat lies", "truncate -s 400M out/it", true, "over this worker's cap of 1 MiB per artifact: more than 1 MiB", true},
		{"fifo, stat lies", "mkfifo out/it", true, "not copied within this worker's limit of 500ms per copy (a FIFO, or too slow)", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var env []string
			if tt.lie {
				env = append(env, "PATH="+liar+":"+os.Getenv("PATH"))
			}
			h, _, state := simHandler(t, func(c *Config) {
				c.MaxArtifactBytes, c.CopyTimeout = 1<<20, 500*time.Millisecond
			}, env...)
			p := basic
			p.Command = []string{"sh", "-c", "mkdir -p out && " + tt.make}
			p.Artifacts = []string{"/work/out/it"}
			p.Commit = tasks.Bool(false)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var w results
			if err := h.Run(ctx, Meta{ID: "guard"}, payload(t, p), &w); err != nil {
				t.Fatal(err)
			}
			res := w.result(t)
			if len(res.Artifacts) != 1 || res.Artifacts[0].Error != tt.want || res.State != tasks.StateDone {
				t.Errorf("artifacts = %+v, want %q", res.Artifacts, tt.want)
			}
			if n := simCalls(t, state, "machine cp"); !tt.copied && n != 0 {
				t.Errorf("%d machine cp calls, want none", n)
			}
			var left []string
			filepath.WalkDir(filepath.Join(h.cfg.DataDir, "artifacts"), func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					left = append(left, p)
				}
				return nil
			})
			if len(left) != 0 {
				t.Errorf("left on disk: %q", left)
			}
		})
	}
}
