package worker

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDataDirPrivate: Sweep makes a data directory others could enter
// 0700, with a warning; after a task with an artifact and a commit, every
// directory under it is 0700 and every file the user's alone, the commit
// and the artifact exactly 0600.
func TestDataDirPrivate(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.exec = upper(f, 0)
	h, logs := newHandler(t, f, nil)
	data := h.cfg.DataDir
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := h.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(data); err != nil || info.Mode().Perm() != 0o700 {
		t.Fatalf("data dir after Sweep: %v; want 0700", describe(info, err))
	}
	if !strings.Contains(logs.String(), "made it 0700") {
		t.Errorf("no warning that the data dir was open:\n%s", logs)
	}
	var w results
	if err := h.Run(context.Background(), Meta{ID: "priv"}, payload(t, withIO()), &w); err != nil {
		t.Fatal(err)
	}
	res := w.result(t)
	for _, p := range []string{res.Commit, res.Artifacts[0].HostPath} {
		if info, err := os.Stat(p); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v; want 0600", p, describe(info, err))
		}
	}
	n := 0
	filepath.WalkDir(data, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		info, err := d.Info()
		if err != nil {
			t.Error(err)
			return nil
		}
		n++
		if perm := info.Mode().Perm(); perm&0o077 != 0 || d.IsDir() && perm != 0o700 {
			t.Errorf("%s is %v, open to other users", p, perm)
		}
		return nil
	})
	if n < 6 { // data, tmp, packs and a pack, commits and a commit, artifacts…
		t.Errorf("walked %d entries: the task left less than it should", n)
	}
}

// describe is a file's mode, or the error that kept it from being read.
func describe(info fs.FileInfo, err error) string {
	if err != nil {
		return err.Error()
	}
	return info.Mode().String()
}
