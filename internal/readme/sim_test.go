package readme

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/internal/testredis"
)

// simNote is the line smolvm 1.7.0 and later (and so the simulator)
// prints first on stderr when its binary is not named smolvm.
const simNote = "note: no packed assets found for"

// TestSimulatorByHand runs README's simulator walk-through as a user
// would: `make sim` (into a directory of the test's), the worker line
// exactly as README shows it, and the enqueue line from a second
// "terminal". The task's output comes back, its stderr included, and
// without the note smolvm prints when it runs under another name. The
// same worker with the simulator under its package's name does get the
// note, so the check can fail.
func TestSimulatorByHand(t *testing.T) {
	t.Parallel()
	makeBin, err := exec.LookPath("make")
	if err != nil {
		t.Skip("make is not installed: install make (CI runs `make test`, which has it) to run README's `make sim`")
	}
	var mk, workerLine, enqueueLine string
	for _, line := range commands(t) {
		switch {
		case line == "make sim":
			mk = line
		case mk != "" && workerLine == "" && strings.HasPrefix(line, "bin/worker "):
			workerLine = line
		case workerLine != "" && enqueueLine == "" && strings.HasPrefix(line, "bin/enqueue "):
			enqueueLine = line
		}
	}
	if enqueueLine == "" || !strings.Contains(workerLine, "-smolvm bin/sim/smolvm") {
		t.Fatalf("README has no `make sim`, then `bin/worker -smolvm bin/sim/smolvm`, then a bin/enqueue line (found %q, %q, %q)", mk, workerLine, enqueueLine)
	}

	// make sim, as README says, but into the test's own bin/.
	scratch := t.TempDir()
	bin := filepath.Join(scratch, "bin")
	args := []string{"-C", filepath.Join("..", ".."), "--no-print-directory", "sim", "BIN=" + bin}
	if root := os.Getenv("GOROOT"); root != "" {
		args = append(args, "GO="+filepath.Join(root, "bin", "go"))
	}
	if out, err := exec.Command(makeBin, args...).CombinedOutput(); err != nil {
		t.Fatalf("make sim: %v\n%s", err, out)
	}
	// The same simulator under the name `make build` gives it.
	if b, err := os.ReadFile(filepath.Join(bin, "sim", "smolvm")); err != nil {
		t.Fatalf("make sim made no bin/sim/smolvm: %v", err)
	} else if err := os.WriteFile(filepath.Join(bin, "smolvm-sim"), b, 0o755); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name   string
		worker string
		note   bool
	}{
		{"as README says", workerLine, false},
		{"simulator named smolvm-sim", strings.Replace(workerLine, "bin/sim/smolvm", "bin/smolvm-sim", 1), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			redis := testredis.Mini(t)
			home := t.TempDir()
			env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "REDIS_URL=" + redis.URL(),
				"BOTTLEQ_METRICS_ADDR=off", "BOTTLEQ_POLL_INTERVAL=20ms", "BOTTLEQ_LOG_FORMAT=json"}
			var workerLog bytes.Buffer
			worker := exec.Command("sh", "-c", "exec "+tt.worker)
			worker.Dir, worker.Env = scratch, env
			worker.Stdout, worker.Stderr = &workerLog, &workerLog
			worker.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := worker.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				worker.Process.Signal(syscall.SIGTERM)
				worker.Wait()
			}()

			out, code := run(t, scratch, env, enqueueLine, 2*time.Minute)
			if code != 0 {
				t.Fatalf("%q exits %d:\n%s\nworker:\n%s", enqueueLine, code, out, workerLog.String())
			}
			for _, want := range []string{"hello from the simulator\n", "a warning\n"} {
				if !strings.Contains(out, want) {
					t.Errorf("%q printed no %q:\n%s", enqueueLine, want, out)
				}
			}
			if got := strings.Contains(out, simNote); got != tt.note {
				t.Errorf("the task's stderr has smolvm's note: %v, want %v:\n%s", got, tt.note, out)
			}
			// The simulator kept its machines where README says.
			if _, err := os.Stat(filepath.Join(home, ".smolvm-sim")); err != nil {
				t.Errorf("the simulator's state is not in ~/.smolvm-sim: %v", err)
			}
			if m := regexp.MustCompile(`bottleq: commit: (\S+)`).FindStringSubmatch(out); m == nil || !strings.HasPrefix(m[1], filepath.Join(home, ".local", "share", "bottleq")+"/") {
				t.Errorf("the commit is not in the worker's default data directory:\n%s", out)
			}
		})
	}
}
