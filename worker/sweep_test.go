package worker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/tasks"
)

// TestSweep: a handler leaves the data directory alone until Sweep, which
// removes a crashed worker's temporaries older than an hour from the
// cache's tmp (packs, commits and downloads being made), artifacts and tmp,
// and keeps cached packs and commits, kept artifacts and young temporaries.
func TestSweep(t *testing.T) {
	t.Parallel()
	h, _ := newHandler(t, newFake(), nil)
	data := h.cfg.DataDir
	old := time.Now().Add(-2 * time.Hour)
	files := map[string]bool{ // path under data → kept by Sweep
		"cache/tmp/pack-0a1b.smolmachine":   false,
		"cache/tmp/commit-2c3d.smolmachine": false,
		"cache/tmp/get-4e5f":                false,
		"cache/packs/img-1.smolmachine":     true,
		"cache/commits/acme/t1.smolmachine": true,
		"artifacts/acme/t1/.tmp-0-ef":       false,
		"artifacts/acme/t1/0-report.txt":    true,
		"tmp/files-123/0":                   false,
		"tmp/output-stdout-young":           true, // a running task's spool, 2 h old
		"cache/tmp/pack-young.smolmachine":  true,
	}
	for rel := range files {
		p := filepath.Join(data, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if filepath.Base(p) == "output-stdout-young" {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		} else if filepath.Base(p) != "pack-young.smolmachine" {
			when := old
			if strings.HasPrefix(rel, "tmp/") {
				when = old.Add(-tasks.MaxTimeout) // a spool lasts as long as its command
			}
			for _, q := range []string{p, filepath.Dir(p)} {
				if err := os.Chtimes(q, when, when); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if _, err := NewHandler(Config{Smolvm: newFake(), DataDir: data}); err != nil {
		t.Fatal(err)
	}
	for rel := range files {
		if _, err := os.Stat(filepath.Join(data, rel)); err != nil {
			t.Errorf("NewHandler removed %s: it must touch no file", rel)
		}
	}
	if err := h.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	for rel, kept := range files {
		_, err := os.Stat(filepath.Join(data, rel))
		if gotKept := err == nil; gotKept != kept {
			t.Errorf("%s kept = %v, want %v", rel, gotKept, kept)
		}
	}
}

// TestSweepCreatesTmp: the input files' directory comes with Sweep, private
// to this user; NewHandler alone creates nothing.
func TestSweepCreatesTmp(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "data")
	h, err := NewHandler(Config{Smolvm: newFake(), DataDir: data})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("NewHandler created the data directory (%v)", err)
	}
	if err := h.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(filepath.Join(data, "tmp")); err != nil || !info.IsDir() || info.Mode().Perm() != 0o700 {
		t.Errorf("tmp after Sweep: %v; want a 0700 directory", err)
	}
}
