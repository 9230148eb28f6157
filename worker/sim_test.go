package worker

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/internal/testbin"
	"github.com/bot-bottle/bottleq/smolvm"
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
