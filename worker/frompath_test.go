package worker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// TestHandlerFromPath: an absolute from path boots only a regular file that
// lies, symlinks resolved, under an operator's directory and not in the
// data directory; every refusal reads the same whether the file exists or
// not, and calls no smolvm.
func TestHandlerFromPath(t *testing.T) {
	t.Parallel()
	allowed, outside := t.TempDir(), t.TempDir()
	mustWrite := func(p string) {
		t.Helper()
		if _, err := writePack(strings.TrimSuffix(p, ".smolmachine")); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(filepath.Join(allowed, "base.smolmachine"))
	mustWrite(filepath.Join(outside, "secret.smolmachine"))
	if err := os.Symlink(filepath.Join(outside, "secret.smolmachine"), filepath.Join(allowed, "escape.smolmachine")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(allowed, "base.smolmachine"), filepath.Join(allowed, "alias.smolmachine")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(allowed, "dir.smolmachine"), 0o700); err != nil {
		t.Fatal(err)
	}

	f := newFake()
	// The first task leaves a pack-shaped artifact in the data directory.
	f.exec = func(_ context.Context, vm string, cmd []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
		f.put(vm, "/work/out/evil.smolmachine", []byte("agent-made pack"), 0o644)
		return smolvm.ExecResult{}, nil
	}
	h, _ := newHandler(t, f, func(c *Config) { c.FromDirs = []string{allowed} })
	// A link from the allowed directory into the data directory.
	if err := os.Symlink(filepath.Join(h.cfg.DataDir, "artifacts"), filepath.Join(allowed, "data")); err != nil {
		t.Fatal(err)
	}
	p := basic
	p.Artifacts = []string{"/work/out/evil.smolmachine"}
	var w results
	if err := h.Run(context.Background(), Meta{ID: "writer"}, payload(t, p), &w); err != nil {
		t.Fatal(err)
	}
	artifact := w.result(t).Artifacts[0].HostPath
	rel, err := filepath.Rel(filepath.Join(h.cfg.DataDir, "artifacts"), artifact)
	if err != nil || artifact == "" {
		t.Fatalf("artifact at %q: %v", artifact, err)
	}

	want := ""
	for _, tt := range []struct {
		name, from string
	}{
		{"missing", filepath.Join(allowed, "none.smolmachine")},
		{"outside every from dir", filepath.Join(outside, "secret.smolmachine")},
		{"symlink out of a from dir", filepath.Join(allowed, "escape.smolmachine")},
		{"an earlier task's artifact", artifact},
		{"an artifact through a link in a from dir", filepath.Join(allowed, "data", rel)},
		{"a directory", filepath.Join(allowed, "dir.smolmachine")},
	} {
		before := len(f.ops())
		err := h.Run(context.Background(), Meta{ID: "from-" + tt.name}, payload(t, tasks.AgentRun{From: tt.from, Command: []string{"true"}}), nil)
		var ve *tasks.ValidationError
		if !errors.As(err, &ve) || ve.Field != "from" || !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("%s: err = %v, want a from error that is not retried", tt.name, err)
			continue
		}
		if n := len(f.ops()); n != before {
			t.Errorf("%s: smolvm called: %q", tt.name, f.ops()[before:])
		}
		text := strings.ReplaceAll(ve.Error(), tt.from, "PATH")
		if want == "" {
			want = text
		}
		if text != want {
			t.Errorf("%s: refusal %q differs from a missing file's %q", tt.name, text, want)
		}
	}

	for _, from := range []string{filepath.Join(allowed, "base.smolmachine"), filepath.Join(allowed, "alias.smolmachine")} {
		if err := h.Run(context.Background(), Meta{ID: "ok"}, payload(t, tasks.AgentRun{From: from, Command: []string{"true"}}), nil); err != nil {
			t.Fatalf("from %s: %v", from, err)
		}
		real, _ := filepath.EvalSymlinks(filepath.Join(allowed, "base.smolmachine"))
		if f.lastCreate.From != real {
			t.Errorf("from %s created from %q, want the resolved %q", from, f.lastCreate.From, real)
		}
	}
}

// TestHandlerFromPathNoDirs: with no from directories, the default, an
// absolute path is refused even when it names a readable pack.
func TestHandlerFromPathNoDirs(t *testing.T) {
	t.Parallel()
	pack := filepath.Join(t.TempDir(), "base.smolmachine")
	if err := os.WriteFile(pack, []byte("pack"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFake()
	h, _ := newHandler(t, f, nil)
	err := h.Run(context.Background(), Meta{ID: "x"}, payload(t, tasks.AgentRun{From: pack, Command: []string{"true"}}), nil)
	if !errors.Is(err, asynq.SkipRetry) || !strings.HasPrefix(err.Error(), "from: ") || len(f.ops()) != 0 {
		t.Errorf("err = %v after %q, want a from error and no smolvm call", err, f.ops())
	}
}

// TestNewHandlerFromDirs: a from directory must exist, be a directory, and
// neither be, hold nor lie in the data directory, symlinks resolved.
func TestNewHandlerFromDirs(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	data := filepath.Join(root, "srv", "data")
	if err := os.MkdirAll(filepath.Join(data, "artifacts"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(data, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	packs := filepath.Join(root, "packs")
	if err := os.Mkdir(packs, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		dirs []string
		data string
		ok   bool
	}{
		{"separate", []string{packs}, data, true},
		{"none", nil, data, true},
		{"the data dir", []string{data}, data, false},
		{"holds the data dir", []string{filepath.Join(root, "srv")}, data, false},
		{"in the data dir", []string{filepath.Join(data, "artifacts")}, data, false},
		{"a link to the data dir", []string{filepath.Join(root, "link")}, data, false},
		{"the data dir through a link", []string{packs, data}, filepath.Join(root, "link"), false},
		{"holds a data dir not made yet", []string{packs}, filepath.Join(packs, "data"), false},
		{"missing", []string{filepath.Join(root, "none")}, data, false},
		{"a file", []string{filepath.Join(root, "file")}, data, false},
		{"empty", []string{""}, data, false},
	} {
		_, err := NewHandler(Config{Smolvm: newFake(), DataDir: tt.data, FromDirs: tt.dirs})
		var ce *ConfigError
		if tt.ok && err != nil || !tt.ok && (!errors.As(err, &ce) || ce.Field != "FromDirs") {
			t.Errorf("%s: err = %v, want ok=%v or a FromDirs error", tt.name, err, tt.ok)
		}
	}
}
