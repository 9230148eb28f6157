package worker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// leftoverAge is how old a temporary must be for Sweep to remove it; those
// of a task running now are younger.
const leftoverAge = time.Hour

// Sweep removes what a crashed worker left in the data directory, older
// than an hour: half-written packs and commits, half-copied artifacts, and
// task input files. It first creates the data directory 0700 (an existing
// one open to other users is made 0700, with a warning) and the directory
// of those input files (DATA/tmp), so a data directory this process cannot
// write fails here. Call it once at start-up, before tasks run; it stops
// early when ctx ends.
func (h *Handler) Sweep(ctx context.Context) error {
	if err := h.makeDataDir(); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if err := os.MkdirAll(h.tmpDir(), privateDir); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	// Commits and artifacts are per tenant: DATA/commits/TENANT and
	// DATA/artifacts/TENANT/KEY.
	dirs := []string{h.packs.store.dir, h.commits.dir}
	commits, _ := filepath.Glob(filepath.Join(h.commits.dir, "*"))
	artifacts, _ := filepath.Glob(filepath.Join(h.cfg.DataDir, "artifacts", "*", "*"))
	dirs = append(append(dirs, commits...), artifacts...)
	for _, d := range dirs {
		if err := ctx.Err(); err != nil {
			return err
		}
		packStore{dir: d}.sweep(leftoverAge)
	}
	sweepTmp(h.tmpDir(), leftoverAge)
	return nil
}

// sweepTmp removes what a crashed worker left in dir, older than age.
func sweepTmp(dir string, age time.Duration) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > age {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}
