package worker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bot-bottle/bottleq/tasks"
)

// leftoverAge is how old a temporary must be for Sweep to remove it; those
// of a task running now are younger, but for the output spools in tmp/,
// which last as long as the task's command, so tmp/ waits tasks.MaxTimeout
// more.
const leftoverAge = time.Hour

// Sweep removes what a crashed worker left in the data directory, older
// than an hour: half-made packs, commits and downloads (DATA/cache/tmp),
// half-copied artifacts, and task input files; then it trims the cache to
// Config.CacheMaxBytes. It first creates the data directory 0700 (an
// existing one open to other users is made 0700, with a warning) and the
// directory of those input files (DATA/tmp), so a data directory this
// process cannot write fails here. Call it once at start-up, before tasks
// run; it stops early when ctx ends.
func (h *Handler) Sweep(ctx context.Context) error {
	if err := h.makeDataDir(); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	if err := os.MkdirAll(h.tmpDir(), privateDir); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	// Artifacts are per tenant and task: DATA/artifacts/TENANT/KEY.
	artifacts, _ := filepath.Glob(filepath.Join(h.cfg.DataDir, "artifacts", "*", "*"))
	for _, d := range artifacts {
		if err := ctx.Err(); err != nil {
			return err
		}
		sweepLeftovers(d, leftoverAge)
	}
	// A running task's output spools live as long as its command.
	sweepTmp(h.tmpDir(), tasks.MaxTimeout+leftoverAge)
	h.cache.sweep(leftoverAge)
	return nil
}

// sweepLeftovers removes the temporaries (".tmp-…") in dir older than age,
// left by a crashed worker.
func sweepLeftovers(dir string, age time.Duration) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".tmp-") {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > age {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// sweepTmp removes what a crashed worker left in dir, older than age: both
// its mtime and the time in its name, when it is a tempPath name, are.
func sweepTmp(dir string, age time.Duration) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			continue
		}
		t := info.ModTime()
		if made, ok := madeAt(e.Name()); ok && made.After(t) {
			t = made
		}
		if time.Since(t) > age {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// packMargin is how long past its TTL a tagged image's pack stays in the
// store: no host starts using it then, but one may be downloading it.
const packMargin = time.Hour

// DefaultRetainInterval is how often [Serve] runs [Handler.Retain].
const DefaultRetainInterval = time.Hour

// Retain deletes from the store the commits, artifacts, output streams and
// input files older than Config.Retention, and the packs of tagged images older than
// Config.PackTTL and an hour (digest-pinned images' packs stay), with the
// uploads abandoned under them; and from this host the local copies of
// artifacts older than Config.Retention. The cache's own cap bounds the
// rest of the disk. Every worker of a pool may run it: deleting twice is
// harmless. [Serve] runs it at start and hourly.
func (h *Handler) Retain(ctx context.Context) error {
	now := time.Now()
	cut := now.Add(-h.cfg.Retention)
	var errs []error
	for _, prefix := range []string{"commits/", "artifacts/", tasks.OutputKeyPrefix, tasks.InputKeyPrefix} {
		n, err := h.cfg.Store.Expire(ctx, prefix, cut)
		errs = append(errs, err)
		if n > 0 {
			h.log.Info().Str("phase", "retain").Str("prefix", prefix).Int("deleted", n).Msg("expired from the store")
		}
	}
	if ttl := h.packs.ttl; ttl > 0 {
		n, err := h.cfg.Store.Expire(ctx, taggedPacks, now.Add(-ttl-packMargin))
		errs = append(errs, err)
		if n > 0 {
			h.log.Info().Str("phase", "retain").Str("prefix", taggedPacks).Int("deleted", n).Msg("expired from the store")
		}
	}
	errs = append(errs, expireLocal(ctx, filepath.Join(h.cfg.DataDir, "artifacts"), cut))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	return nil
}

// expireLocal removes the files under dir last modified before cut, then
// the directories older than cut left empty.
func expireLocal(ctx context.Context, dir string, cut time.Time) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			// An old directory only: a task may be about to copy into a
			// new one.
			if info, err := d.Info(); err == nil && p != dir && info.ModTime().Before(cut) {
				dirs = append(dirs, p)
			}
			return nil
		}
		if info, err := d.Info(); err == nil && info.ModTime().Before(cut) {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i]) // only if empty
	}
	return err
}

// retainLoop runs Retain now and every interval until ctx ends, logging
// what fails: the next pass tries again.
func (h *Handler) retainLoop(ctx context.Context, interval time.Duration) {
	for {
		if err := h.Retain(ctx); err != nil && ctx.Err() == nil {
			h.log.Warn().Str("phase", "retain").Err(err).Msg("retention sweep failed; the next one tries again")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
