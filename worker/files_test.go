package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/egress"
	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// withIO is basic with two input files and two artifacts.
func withIO() tasks.AgentRun {
	p := basic
	p.Files = []tasks.File{
		{Path: "/work/in/a.txt", Content: []byte("hello\n")},
		{Path: "/work/in/run.sh", Content: []byte("#!/bin/sh\necho hi\n"), Mode: "0755"},
	}
	p.Artifacts = []string{"/work/out/A.txt", "/work/out/none.txt"}
	return p
}

// upper is a command that reads in/a.txt and writes out/A.txt, exiting
// with code.
func upper(f *fakeSmolvm, code int) func(context.Context, string, []string, smolvm.ExecOptions) (smolvm.ExecResult, error) {
	return func(_ context.Context, vm string, _ []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
		in, ok := f.file(vm, "/work/in/a.txt")
		if !ok {
			return smolvm.ExecResult{ExitCode: 1, Stderr: []byte("no input\n")}, nil
		}
		f.put(vm, "/work/out/A.txt", bytes.ToUpper(in.data), 0o600)
		return smolvm.ExecResult{ExitCode: code}, nil
	}
}

// tmpLeft lists what is left in the handler's DATA/tmp and as temporaries
// in its artifact directories.
func tmpLeft(t *testing.T, h *Handler) []string {
	t.Helper()
	var left []string
	ents, err := os.ReadDir(h.tmpDir())
	if err != nil {
		t.Fatalf("DATA/tmp: %v", err)
	}
	for _, e := range ents {
		left = append(left, e.Name())
	}
	filepath.WalkDir(filepath.Join(h.cfg.DataDir, "artifacts"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			left = append(left, p)
		}
		return nil
	})
	return left
}

// TestHandlerFilesAndArtifacts: files go in after ready and before exec,
// with their modes; artifacts come out after exec, whatever the exit code,
// before stop; a missing one is recorded and the task completes.
func TestHandlerFilesAndArtifacts(t *testing.T) {
	t.Parallel()
	for _, code := range []int{0, 3} {
		t.Run("exit "+string(rune('0'+code)), func(t *testing.T) {
			t.Parallel()
			f := newFake()
			f.exec = upper(f, code)
			h, _ := newHandler(t, f, nil)
			var w results
			if err := h.Run(context.Background(), Meta{ID: "io"}, payload(t, withIO()), &w); err != nil {
				t.Fatal(err)
			}
			vm := VMName(DefaultDeployment, "io", 1)
			want := []string{"pack-image alpine:3", "create " + vm, "status " + vm, "start " + vm, "ready " + vm,
				"cp-in " + vm + ":/work/in/a.txt", "cp-in " + vm + ":/work/in/run.sh", "exec " + vm,
				"stat " + vm + ":/work/out/A.txt", "cp-out " + vm + ":/work/out/A.txt",
				"stat " + vm + ":/work/out/none.txt", "cp-out " + vm + ":/work/out/none.txt",
				"stop " + vm, "pack-vm " + vm, "delete " + vm}
			if got := f.ops(); !slices.Equal(got, want) {
				t.Errorf("calls:\n got %q\nwant %q", got, want)
			}
			res := w.result(t)
			if res.State != tasks.StateDone || res.ExitCode != code {
				t.Fatalf("result = %+v", res)
			}
			var phases []string
			for _, p := range res.Phases {
				phases = append(phases, p.Name)
			}
			if want := []string{"pack", "create", "start", "ready", "files", "exec", "artifacts", "stop", "commit", "delete"}; !slices.Equal(phases, want) {
				t.Errorf("phases = %q, want %q", phases, want)
			}
			if len(res.Artifacts) != 2 {
				t.Fatalf("artifacts = %+v, want 2", res.Artifacts)
			}
			a := res.Artifacts[0]
			sum := sha256.Sum256([]byte("HELLO\n"))
			if a.Path != "/work/out/A.txt" || a.Host != "host-a" || a.Size != 6 || a.SHA256 != hex.EncodeToString(sum[:]) || a.Error != "" {
				t.Errorf("artifact 0 = %+v", a)
			}
			if got, err := os.ReadFile(a.HostPath); err != nil || string(got) != "HELLO\n" {
				t.Errorf("artifact file %s: %q, %v", a.HostPath, got, err)
			}
			if dir := h.artifactDir(tasks.DefaultTenant, "io"); filepath.Dir(a.HostPath) != dir {
				t.Errorf("artifact at %s, want it in %s", a.HostPath, dir)
			}
			if m := res.Artifacts[1]; m.Path != "/work/out/none.txt" || m.Error != tasks.ArtifactMissing || m.HostPath != "" {
				t.Errorf("missing artifact = %+v", m)
			}
			if left := tmpLeft(t, h); len(left) != 0 {
				t.Errorf("temporaries left: %q", left)
			}
		})
	}
}

// TestHandlerFilesModes: each file reaches the guest with its content and
// mode (0644 by default).
func TestHandlerFilesModes(t *testing.T) {
	t.Parallel()
	f := newFake()
	var seen map[string]fakeFile
	f.exec = func(_ context.Context, vm string, _ []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
		f.mu.Lock()
		seen = f.files[vm]
		f.mu.Unlock()
		return smolvm.ExecResult{}, nil
	}
	h, _ := newHandler(t, f, nil)
	p := withIO()
	p.Files = append(p.Files, tasks.File{Path: "/secret", Content: []byte("k"), Mode: "0400"}, tasks.File{Path: "/empty"})
	if err := h.Run(context.Background(), Meta{ID: "modes"}, payload(t, p), nil); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		path, data string
		mode       fs.FileMode
	}{{"/work/in/a.txt", "hello\n", 0o644}, {"/work/in/run.sh", "#!/bin/sh\necho hi\n", 0o755}, {"/secret", "k", 0o400}, {"/empty", "", 0o644}} {
		got, ok := seen[want.path]
		if !ok || string(got.data) != want.data || got.mode != want.mode {
			t.Errorf("%s in the guest = %q %o (present %v), want %q %o", want.path, got.data, got.mode, ok, want.data, want.mode)
		}
	}
}

// TestHandlerArtifactCaps: an artifact over the per-file cap, or one that
// would pass the per-task cap, is deleted and recorded; the rest are kept.
func TestHandlerArtifactCaps(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.exec = func(_ context.Context, vm string, _ []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
		f.put(vm, "/o/big", make([]byte, 2000), 0o644)
		f.put(vm, "/o/a", make([]byte, 600), 0o644)
		f.put(vm, "/o/b", make([]byte, 600), 0o644)
		f.put(vm, "/o/c", make([]byte, 300), 0o644)
		return smolvm.ExecResult{}, nil
	}
	h, _ := newHandler(t, f, func(c *Config) { c.MaxArtifactBytes = 1000; c.MaxArtifactsBytes = 1000 })
	// An earlier attempt left a file under big's name: it must go too.
	if err := os.MkdirAll(h.artifactDir(tasks.DefaultTenant, "caps"), 0o755); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(h.artifactDir(tasks.DefaultTenant, "caps"), artifactName(0, "/o/big"))
	if err := os.WriteFile(stale, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := basic
	p.Artifacts = []string{"/o/big", "/o/a", "/o/b", "/o/c"}
	var w results
	if err := h.Run(context.Background(), Meta{ID: "caps"}, payload(t, p), &w); err != nil {
		t.Fatal(err)
	}
	res := w.result(t)
	want := []struct {
		kept  bool
		size  int64
		error string
	}{
		{false, 2000, "over this worker's cap of 1000 bytes per artifact: 2 KiB (2000 bytes)"},
		{true, 600, ""},
		{false, 600, "over this worker's cap of 1000 bytes for a task's artifacts together: 600 bytes after 600 bytes kept"},
		{true, 300, ""},
	}
	if len(res.Artifacts) != len(want) {
		t.Fatalf("artifacts = %+v", res.Artifacts)
	}
	for i, a := range res.Artifacts {
		w := want[i]
		if (a.HostPath != "") != w.kept || a.Size != w.size || a.Error != w.error {
			t.Errorf("artifact %d = %+v, want kept %v size %d error %q", i, a, w.kept, w.size, w.error)
		}
	}
	ents, _ := os.ReadDir(h.artifactDir(tasks.DefaultTenant, "caps"))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"1-a", "3-c"}; !slices.Equal(names, want) {
		t.Errorf("artifact dir holds %q, want %q (over-cap files deleted)", names, want)
	}
}

// TestHandlerFilesOverWorkerCap: a payload whose files pass this worker's
// cap is archived at once, with no smolvm call, naming the cap.
func TestHandlerFilesOverWorkerCap(t *testing.T) {
	t.Parallel()
	f := newFake()
	h, _ := newHandler(t, f, nil)
	p := basic
	p.Files = []tasks.File{{Path: "/a", Content: make([]byte, 1<<20)}, {Path: "/b", Content: make([]byte, 1<<19)}}
	err := h.Run(context.Background(), Meta{ID: "big"}, payload(t, p), nil)
	var ve *tasks.ValidationError
	if !errors.Is(err, asynq.SkipRetry) || !errors.As(err, &ve) {
		t.Fatalf("err = %v, want a SkipRetry validation error", err)
	}
	if want := "files: 1.5 MiB in total, over this worker's cap of 1 MiB"; ve.Error() != want {
		t.Errorf("error = %q, want %q", ve.Error(), want)
	}
	if n := len(f.ops()); n != 0 {
		t.Errorf("%d smolvm calls, want 0: %q", n, f.ops())
	}
	h2, _ := newHandler(t, f, func(c *Config) { c.MaxFilesBytes = 2 << 20 })
	if err := h2.Run(context.Background(), Meta{ID: "big"}, payload(t, p), nil); err != nil {
		t.Errorf("a worker with a 2 MiB cap refused 1.5 MiB: %v", err)
	}
}

// TestHandlerFilesFailures: whatever ends the attempt, no temporary stays
// in DATA/tmp or among the artifacts, and the VM is deleted; cp failures of
// the VM itself are retried.
func TestHandlerFilesFailures(t *testing.T) {
	t.Parallel()
	notRunning := func(name string) error {
		return &smolvm.Error{Op: "machine cp", Machine: name, ExitCode: 1, Message: "machine is not running", Err: smolvm.ErrNotRunning}
	}
	tests := []struct {
		name      string
		inject    func(f *fakeSmolvm, cancel context.CancelFunc)
		wantErr   func(error) bool
		wantPhase string
	}{
		{"copy in fails", func(f *fakeSmolvm, _ context.CancelFunc) {
			f.copyIn = func(_ context.Context, name, _, guest string, _ fs.FileMode) error {
				if guest == "/work/in/run.sh" {
					return &smolvm.Error{Op: "machine cp", Machine: name, ExitCode: 1, Message: "agent operation failed: injected"}
				}
				return nil
			}
		}, retryable, tasks.PhaseFiles},
		{"exec fails", func(f *fakeSmolvm, _ context.CancelFunc) {
			f.exec = func(_ context.Context, vm string, _ []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
				f.setState(vm, smolvm.StateStopped) // the VM stopped under the command
				return smolvm.ExecResult{ExitCode: 1}, &smolvm.Error{Op: "machine exec", ExitCode: 1, Message: "agent operation failed: injected"}
			}
		}, retryable, tasks.PhaseExec},
		{"VM gone at copy out", func(f *fakeSmolvm, _ context.CancelFunc) {
			f.exec = upper(f, 0)
			f.copyOut = func(_ context.Context, name, _, _ string) error { return notRunning(name) }
		}, func(err error) bool { return retryable(err) && errors.Is(err, smolvm.ErrNotRunning) }, tasks.PhaseArtifacts},
		{"cancelled during copy in", func(f *fakeSmolvm, cancel context.CancelFunc) {
			f.copyIn = func(ctx context.Context, name, host, _ string, _ fs.FileMode) error {
				if _, err := os.Stat(host); err != nil {
					return err // the input must exist while it is copied
				}
				cancel()
				return &smolvm.Error{Op: "machine cp", Machine: name, ExitCode: -1, Err: ctx.Err()}
			}
		}, func(err error) bool { return errors.Is(err, context.Canceled) }, tasks.PhaseFiles},
		{"cancelled during copy out", func(f *fakeSmolvm, cancel context.CancelFunc) {
			f.exec = upper(f, 0)
			f.copyOut = func(ctx context.Context, name, _, host string) error {
				os.WriteFile(host, []byte("partial"), 0o644) // smolvm died mid-copy
				cancel()
				return &smolvm.Error{Op: "machine cp", Machine: name, ExitCode: -1, Err: ctx.Err()}
			}
		}, func(err error) bool { return errors.Is(err, context.Canceled) }, tasks.PhaseArtifacts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tt.inject(f, cancel)
			h, _ := newHandler(t, f, nil)
			var w results
			err := h.Run(ctx, Meta{ID: "fail"}, payload(t, withIO()), &w)
			if err == nil || !tt.wantErr(err) {
				t.Fatalf("err = %v", err)
			}
			if res := w.result(t); res.Phase != tt.wantPhase || res.Error == "" {
				t.Errorf("last report: phase %q error %q, want phase %q with the error", res.Phase, res.Error, tt.wantPhase)
			}
			if left := tmpLeft(t, h); len(left) != 0 {
				t.Errorf("temporaries left: %q", left)
			}
			if left := f.left(); len(left) != 0 {
				t.Errorf("machines left: %q", left)
			}
		})
	}
}

func retryable(err error) bool {
	var se *smolvm.Error
	return errors.As(err, &se) && !errors.Is(err, asynq.SkipRetry)
}

// TestHandlerArtifactNotAFileError: a cp error about the file itself is the
// artifact's result, not a failed attempt.
func TestHandlerArtifactNotAFileError(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.copyOut = func(_ context.Context, name, guest, _ string) error {
		if guest == "/work/out/A.txt" {
			return &smolvm.Error{Op: "machine cp", Machine: name, ExitCode: 1, Message: "config operation failed: cp: /work/out/A.txt is not a regular file"}
		}
		return nil
	}
	h, _ := newHandler(t, f, nil)
	var w results
	if err := h.Run(context.Background(), Meta{ID: "dir"}, payload(t, withIO()), &w); err != nil {
		t.Fatal(err)
	}
	res := w.result(t)
	if a := res.Artifacts[0]; a.Error != "config operation failed: cp: /work/out/A.txt is not a regular file" || a.HostPath != "" {
		t.Errorf("artifact = %+v", a)
	}
}

func TestArtifactName(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		i     int
		guest string
		want  string
	}{
		{0, "/workspace/out/A.txt", "0-A.txt"},
		{1, "/x/..hidden", "1-..hidden"},
		{2, "/x/a b\nc", "2-a_b_c"},
		{3, "/x/...", "3-file"},
		{4, "/x/é", "4-file"},
		{5, "/x/" + strings.Repeat("a", 300), "5-" + strings.Repeat("a", 100)},
	} {
		if got := artifactName(tt.i, tt.guest); got != tt.want {
			t.Errorf("artifactName(%d, %q) = %q, want %q", tt.i, tt.guest, got, tt.want)
		}
	}
}

// workerFlag matches the name of a flag of cmd/worker.
var workerFlag = regexp.MustCompile(`-(data-dir|proxy|egress-listen|allow-unenforced-egress|pack-ttl|max-files-bytes|max-artifacts?-bytes)\b`)

// TestNewHandlerRefuses: a Config NewHandler refuses gets a *ConfigError
// naming the field at fault, and never a command-line flag.
func TestNewHandlerRefuses(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		mod   func(*Config)
		field string
	}{
		{"no smolvm", func(c *Config) { c.Smolvm = nil }, "Smolvm"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "DataDir"},
		{"colon in data dir", func(c *Config) { c.DataDir += "/a:b" }, "DataDir"},
		{"files cap over the hard limit", func(c *Config) { c.MaxFilesBytes = tasks.MaxFilesBytesLimit + 1 }, "MaxFilesBytes"},
		{"negative files cap", func(c *Config) { c.MaxFilesBytes = -1 }, "MaxFilesBytes"},
		{"negative artifact cap", func(c *Config) { c.MaxArtifactBytes = -1 }, "MaxArtifactBytes"},
		{"negative artifacts cap", func(c *Config) { c.MaxArtifactsBytes = -1 }, "MaxArtifactsBytes"},
		{"proxy by name", func(c *Config) { c.ProxyURL = "http://proxy.local:3128" }, "ProxyURL"},
		{"bundled proxy without its address", func(c *Config) { c.BundledProxy = egress.New(egress.Config{}) }, "ProxyURL"},
		{"proxy on a smolvm that ignores it", func(c *Config) {
			f := newFake()
			f.version = smolvm.Version{Major: 1, Minor: 7}
			c.Smolvm, c.ProxyURL = f, "http://10.0.2.2:3128"
		}, "AllowUnenforcedEgress"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{Smolvm: newFake(), DataDir: t.TempDir()}
			tt.mod(&cfg)
			_, err := NewHandler(cfg)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != tt.field {
				t.Fatalf("err = %v, want a ConfigError of %s", err, tt.field)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "worker: Config."+tt.field+": ") || workerFlag.MatchString(msg) {
				t.Errorf("error %q: want it to name Config.%s and no flag", msg, tt.field)
			}
		})
	}
}
