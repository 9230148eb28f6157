package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
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
