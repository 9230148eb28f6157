package worker

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]guestFile{
		"regular file 419430400\n":            {known: true, kind: "regular file", size: 419430400},
		"regular empty file 0\n":              {known: true, kind: "regular empty file"},
		"fifo 0\n":                            {known: true, kind: "fifo"},
		"directory 4096":                      {known: true, kind: "directory", size: 4096},
		"character special file 0":            {known: true, kind: "character special file"},
		"":                                    {},
		"regular file\n":                      {},
		"regular file -1\n":                   {},
		"regular file 1\n2\n":                 {},
		"Regular File 1\n":                    {},
		"regular file 99999999999999999999\n": {},
		"sk-secret 12\n":                      {},
	} {
		if got := parseStat([]byte(in)); got != want {
			t.Errorf("parseStat(%q) = %+v, want %+v", in, got, want)
		}
	}
}

// TestHandlerArtifactGuards: an artifact that is no regular file or is
// over a cap by the guest's stat is never copied; one whose copy passes
// the cap (the guest's stat lied) is stopped mid-copy; a copy that hangs
// (a FIFO, with no stat to tell) ends at the copy timeout. Each is
// recorded, the task completes, and nothing of them stays on disk.
func TestHandlerArtifactGuards(t *testing.T) {
	t.Parallel()
	const limit = 1000
	lie := func(context.Context, string, string) (smolvm.ExecResult, error) {
		return smolvm.ExecResult{Stdout: []byte("regular file 10\n")}, nil
	}
	noStat := func(context.Context, string, string) (smolvm.ExecResult, error) {
		return smolvm.ExecResult{ExitCode: 127, Stderr: []byte("stat: not found\n")}, nil
	}
	// flood writes past the cap into a staging file beside host, as smolvm
	// may, then waits for the copy to be stopped.
	flood := func(stopped *bool) func(context.Context, string, string, string) error {
		return func(ctx context.Context, name, _, host string) error {
			if err := os.WriteFile(filepath.Join(filepath.Dir(host), ".staging"), make([]byte, limit+1), 0o600); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				*stopped = true
				return &smolvm.Error{Op: "machine cp", Machine: name, ExitCode: -1, Err: ctx.Err()}
			case <-time.After(30 * time.Second):
				return errors.New("the copy was not stopped")
			}
		}
	}
	for _, tt := range []struct {
		name    string
		file    fakeFile
		kept    int64 // bytes kept before it, of an earlier artifact
		stat    func(context.Context, string, string) (smolvm.ExecResult, error)
		flood   bool
		timeout time.Duration
		want    string
		copied  bool
	}{
		{"fifo by stat", fakeFile{mode: fs.ModeNamedPipe | 0o644}, 0, nil, false, 0, "not a regular file: fifo", false},
		{"over the cap by stat", fakeFile{data: make([]byte, limit+1), mode: 0o644}, 0, nil, false, 0, "over this worker's cap of 1000 bytes per artifact: 1001 bytes", false},
		{"over the total by stat", fakeFile{data: make([]byte, 500), mode: 0o644}, 600, nil, false, 0, "over this worker's cap of 1000 bytes for a task's artifacts together: 500 bytes after 600 bytes kept", false},
		{"stat lies, copy stopped at the cap", fakeFile{data: []byte("x"), mode: 0o644}, 0, lie, true, 0, "over this worker's cap of 1000 bytes per artifact: more than 1000 bytes", true},
		{"stat lies, copy stopped at the total", fakeFile{data: []byte("x"), mode: 0o644}, 600, lie, true, 0, "over this worker's cap of 1000 bytes for a task's artifacts together: more than 400 bytes after 600 bytes kept", true},
		{"no stat, fifo hangs cp", fakeFile{mode: fs.ModeNamedPipe | 0o644}, 0, noStat, false, 200 * time.Millisecond, "not copied within this worker's limit of 200ms per copy (a FIFO, or too slow)", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake()
			f.stat = tt.stat
			var stopped bool
			f.exec = func(_ context.Context, vm string, _ []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
				f.put(vm, "/o/kept", make([]byte, tt.kept), 0o644)
				f.put(vm, "/o/it", tt.file.data, tt.file.mode)
				if tt.flood {
					f.copyOut = func(ctx context.Context, name, guest, host string) error {
						if guest == "/o/it" {
							return flood(&stopped)(ctx, name, guest, host)
						}
						return nil
					}
				}
				return smolvm.ExecResult{}, nil
			}
			h, _ := newHandler(t, f, func(c *Config) {
				c.MaxArtifactBytes, c.MaxArtifactsBytes, c.CopyTimeout = limit, limit, tt.timeout
			})
			p := basic
			p.Artifacts = []string{"/o/kept", "/o/it"}
			if tt.kept == 0 {
				p.Artifacts = p.Artifacts[1:]
			}
			var w results
			if err := h.Run(context.Background(), Meta{ID: "guard"}, payload(t, p), &w); err != nil {
				t.Fatal(err)
			}
			res := w.result(t)
			a := res.Artifacts[len(res.Artifacts)-1]
			if a.Error != tt.want || a.HostPath != "" || res.State != tasks.StateDone {
				t.Errorf("artifact = %+v, want %q", a, tt.want)
			}
			if got := f.count("cp-out " + VMName(DefaultDeployment, "guard", 1) + ":/o/it"); (got > 0) != tt.copied {
				t.Errorf("cp-out of it called %d times, want copied %v: %q", got, tt.copied, f.ops())
			}
			if tt.flood && !stopped {
				t.Error("the copy was not stopped")
			}
			var left []string
			filepath.WalkDir(h.artifactDir(tasks.DefaultTenant, "guard"), func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() && !strings.HasSuffix(p, "-kept") {
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

// TestHandlerCopyInTimeout: a file copy that hangs ends at the copy
// timeout and fails the attempt, to be retried, naming the file; the task
// itself was not cancelled.
func TestHandlerCopyInTimeout(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.copyIn = func(ctx context.Context, name, _, _ string, _ fs.FileMode) error {
		<-ctx.Done()
		return &smolvm.Error{Op: "machine cp", Machine: name, ExitCode: -1, Err: ctx.Err()}
	}
	h, _ := newHandler(t, f, func(c *Config) { c.CopyTimeout = 100 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := h.Run(ctx, Meta{ID: "slow-in"}, payload(t, withIO()), nil)
	if !retryable(err) || !strings.Contains(err.Error(), "files[0]: not copied in within this worker's limit of 100ms per copy") {
		t.Fatalf("err = %v, want a retryable error naming files[0] and the limit", err)
	}
	if o := outcomeOf(ctx, err, Meta{MaxRetry: 1}); ctx.Err() != nil || o != OutcomeRetried {
		t.Errorf("outcome %s (task context: %v), want retried", o, ctx.Err())
	}
}
