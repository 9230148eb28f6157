package worker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// TestSweep: a handler leaves the data directory alone until Sweep, which
// removes a crashed worker's temporaries older than an hour from the
// cache's tmp (packs, commits and downloads being made), artifacts and tmp,
// and keeps cached packs and commits, kept artifacts and young temporaries,
// a cache temporary whose name says it was made now among them.
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
	// A download's age is its name's too: one linked just now from an old
	// object in a file store has the object's mtime.
	files["cache/tmp/get-"+old.UTC().Format(tmpStamp)+"-0a0b"] = false
	files["cache/tmp/get-"+time.Now().UTC().Format(tmpStamp)+"-1c1d"] = true
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

// linkThen is a file store that runs then after GetFile links an object
// into the cache's tmp, before the cache renames it into place.
type linkThen struct {
	store.Store
	store.Linker
	then func()
}

func (s linkThen) GetFile(ctx context.Context, key, dst string) (store.Object, error) {
	obj, err := s.Linker.GetFile(ctx, key, dst)
	if err == nil {
		s.then()
	}
	return obj, err
}

// TestSweepSparesDownload: a download hard-linked from a file store into
// the cache's tmp carries the object's mtime, days old. Another worker's
// start-up Sweep that runs before the download is renamed into place
// leaves it be, and the download lands.
func TestSweepSparesDownload(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	data := t.TempDir()
	fs, err := store.NewFile(filepath.Join(data, "store"))
	if err != nil {
		t.Fatal(err)
	}
	const key = "commits/t/k.smolmachine"
	if _, err := fs.Put(ctx, key, strings.NewReader("a commit"), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-72 * time.Hour)
	if err := os.Chtimes(filepath.Join(data, "store", key), old, old); err != nil {
		t.Fatal(err)
	}
	other, _ := newHandler(t, newFake(), func(c *Config) { c.DataDir, c.Store = data, fs })
	swept := false
	st := linkThen{Store: fs, Linker: fs.(store.Linker), then: func() {
		swept = true
		if err := other.Sweep(ctx); err != nil {
			t.Error(err)
		}
	}}
	c := newCache(filepath.Join(data, "cache"), st, 1<<30, zerolog.Nop())
	l, _, err := c.fetch(ctx, key, key)
	if !swept {
		t.Fatal("the cache did not link the object from the store")
	}
	if err != nil {
		t.Fatalf("fetch with a Sweep mid-download: %v", err)
	}
	defer l.Release()
	if b, err := os.ReadFile(l.Path); err != nil || string(b) != "a commit" {
		t.Errorf("fetched %q, %v", b, err)
	}
}
