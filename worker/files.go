package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// Modes of what the worker keeps in its data directory: private to the
// worker's user. A producer reads an artifact by running as that user.
const (
	privateDir  os.FileMode = 0o700
	privateFile os.FileMode = 0o600
)

// makeDataDir creates the data directory private to this user, and makes
// an existing one that others may enter private, with a warning: what it
// holds is the tenants' (commits, artifacts).
func (h *Handler) makeDataDir() error {
	if err := os.MkdirAll(h.cfg.DataDir, privateDir); err != nil {
		return err
	}
	info, err := os.Stat(h.cfg.DataDir)
	if err != nil {
		return err
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(h.cfg.DataDir, privateDir); err != nil {
			return fmt.Errorf("%s is open to other users (%#o) and cannot be made private: %w", h.cfg.DataDir, perm, err)
		}
		h.log.Warn().Str("data_dir", h.cfg.DataDir).Str("was", fmt.Sprintf("%#o", perm)).Msg("data directory was open to other users; made it 0700")
	}
	return nil
}

// tmpDir holds each task's input files while they are copied in
// (DATA/tmp); nothing in it outlives the files phase.
func (h *Handler) tmpDir() string { return filepath.Join(h.cfg.DataDir, "tmp") }

// artifactDir holds this host's copies of the artifacts of one task of a
// tenant (DATA/artifacts/TENANT/KEY), for readers on this host; the store
// holds them for everyone. Handler.Retain removes copies older than
// Config.Retention.
func (h *Handler) artifactDir(tenant, taskID string) string {
	return filepath.Join(h.cfg.DataDir, "artifacts", tenant, fileKey(taskID))
}

// copyIn is the files phase: it writes each file of the payload into a
// private temporary directory with its mode and copies it into the VM. The
// directory is removed whatever happens.
func (r *run) copyIn(ctx context.Context) error {
	if err := os.MkdirAll(r.h.tmpDir(), privateDir); err != nil {
		return diskErr("files", err)
	}
	timeout := r.h.cfg.CopyTimeout
	dir, err := os.MkdirTemp(r.h.tmpDir(), "files-")
	if err != nil {
		return diskErr("files", err)
	}
	defer os.RemoveAll(dir)
	for i, f := range r.p.Files {
		mode, err := f.Perm()
		if err != nil { // Decode validated it
			return &tasks.ValidationError{Field: fmt.Sprintf("files[%d].mode", i), Reason: err.Error()}
		}
		host := filepath.Join(dir, strconv.Itoa(i))
		// The owner must be able to read the file for smolvm to copy it;
		// smolvm (or a chmod) gives the guest's copy the exact mode.
		if err := r.writeInput(ctx, i, f, host, mode|0o400); err != nil {
			return err
		}
		cpCtx, cancel := context.WithTimeout(ctx, timeout)
		err = r.h.cfg.Smolvm.CopyIn(cpCtx, r.vm, host, f.Path, mode)
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(cpCtx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("files[%d]: not copied in within this worker's limit of %s per copy: %w", i, timeout, err)
		}
		if err != nil {
			return err
		}
		if err := os.Remove(host); err != nil {
			return fmt.Errorf("files[%d]: %w", i, err)
		}
	}
	return nil
}

// writeFile creates path, which must not exist, with exactly mode.
func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode) // not subject to the umask
	}
	return errors.Join(err, f.Close())
}

// copyOut is the artifacts phase: each artifact is copied from the VM to a
// temporary name in the task's artifact directory, checked against the
// caps, hashed, renamed into place and stored (see artifactKey). A missing
// or unreadable guest file is recorded and does not fail the task; a smolvm
// failure that says the VM is gone, a store that cannot take it, or the
// task's end, fails the attempt.
func (r *run) copyOut(ctx context.Context) error {
	dir := r.h.artifactDir(r.p.TenantName(), r.taskID)
	if err := os.MkdirAll(dir, privateDir); err != nil {
		return fmt.Errorf("artifacts: %w", err)
	}
	defer os.Remove(dir) // only if nothing was kept
	var total int64
	r.res.Artifacts = make([]tasks.Artifact, 0, len(r.p.Artifacts))
	for i, guest := range r.p.Artifacts {
		a, err := r.copyArtifact(ctx, dir, i, guest, &total)
		if err != nil {
			r.res.Artifacts = nil
			return err
		}
		a.Error = r.scrub.text(a.Error)
		if a.Error != "" {
			r.log.Info().Str("phase", tasks.PhaseArtifacts).Str("artifact", guest).Str("reason", a.Error).Msg("artifact not kept")
		}
		r.res.Artifacts = append(r.res.Artifacts, a)
	}
	return nil
}

// copyArtifact copies artifact i. The guest's stat says first what the
// file is, where the image has one: a file that is not regular (a FIFO
// would hang cp) or over a cap is not copied at all. The copy itself lands
// in a private directory, under its own timeout, and is stopped once that
// directory passes the cap left, whatever stat said.
func (r *run) copyArtifact(ctx context.Context, dir string, i int, guest string, total *int64) (tasks.Artifact, error) {
	a := tasks.Artifact{Path: guest}
	final := filepath.Join(dir, artifactName(i, guest))
	tmpDir := filepath.Join(dir, ".tmp-"+strconv.Itoa(i)+"-"+randHex(6))
	tmp := filepath.Join(tmpDir, "file")
	// Whatever an earlier attempt left under this name is replaced or goes.
	drop := func(reason string) (tasks.Artifact, error) {
		a.Error = reason
		if err := os.Remove(final); err != nil && !errors.Is(err, os.ErrNotExist) {
			return a, fmt.Errorf("artifacts[%d]: %w", i, err)
		}
		return a, nil
	}
	if g := r.statGuest(ctx, guest); g.known {
		if !g.regular() {
			return drop("not a regular file: " + g.kind)
		}
		a.Size = g.size
		if reason := r.overCap(g.size, *total, false); reason != "" {
			return drop(reason)
		}
	}
	if err := os.Mkdir(tmpDir, 0o700); err != nil {
		return a, fmt.Errorf("artifacts[%d]: %w", i, err)
	}
	defer os.RemoveAll(tmpDir) // after the rename, only the directory
	limit := min(r.h.cfg.MaxArtifactBytes, r.h.cfg.MaxArtifactsBytes-*total)
	switch err := r.copyCapped(ctx, guest, tmpDir, tmp, limit); {
	case errors.Is(err, errCopyOverCap):
		a.Size = 0 // unknown: more than limit
		return drop(r.overCap(limit+1, *total, true))
	case errors.Is(err, errCopyTimeout):
		a.Size = 0
		return drop(fmt.Sprintf("not copied within this worker's limit of %s per copy (a FIFO, or too slow)", r.h.cfg.CopyTimeout))
	case err != nil && diskFull(err):
		// This host's disk, not the file: the attempt fails and is retried.
		return a, fmt.Errorf("artifacts[%d]: %w", i, smolvmDiskErr("artifacts", filepath.Dir(final), err))
	case err != nil && infraFailure(ctx, err):
		return a, err
	case err != nil:
		return drop(artifactReason(err))
	}
	// Readable whatever the guest's mode by this worker and by a producer
	// running as its user (see enqueue.FetchArtifact), and by no one else.
	if err := os.Chmod(tmp, privateFile); err != nil {
		return a, fmt.Errorf("artifacts[%d]: %w", i, err)
	}
	f, err := os.Open(tmp)
	if err != nil {
		return a, fmt.Errorf("artifacts[%d]: %w", i, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return a, fmt.Errorf("artifacts[%d]: %w", i, err)
	}
	a.Size = info.Size()
	if !info.Mode().IsRegular() {
		return drop("not a regular file")
	}
	if reason := r.overCap(a.Size, *total, false); reason != "" {
		return drop(reason)
	}
	sum := sha256.New()
	if n, err := io.Copy(sum, f); err != nil || n != a.Size {
		return a, fmt.Errorf("artifacts[%d]: read %d of %d bytes: %v", i, n, a.Size, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return a, fmt.Errorf("artifacts[%d]: %w", i, diskErr("artifacts", err))
	}
	digest := hex.EncodeToString(sum.Sum(nil))
	key := r.artifactKey(i, guest)
	if _, err := r.h.cache.put(ctx, key, final, digest); err != nil {
		os.Remove(final)
		return a, fmt.Errorf("artifacts[%d]: storing it: %w", i, err)
	}
	*total += a.Size
	a.Host, a.HostPath, a.Key, a.SHA256 = r.h.cfg.Host, final, key, digest
	return a, nil
}

// artifactKey is the store key of artifact i:
// artifacts/TENANT/KEY/RUN/N-NAME, KEY the task's fileKey, RUN this
// delivery's storeRun and N-NAME its artifactName. Every delivery has keys
// of its own: a store object is never overwritten.
func (r *run) artifactKey(i int, guest string) string {
	return "artifacts/" + r.p.TenantName() + "/" + fileKey(r.taskID) + "/" + r.storeRun + "/" + artifactName(i, guest)
}

// overCap is why an artifact of size bytes, after total kept, is not kept,
// or "" when it fits both caps. With more, size is a bound: the copy passed
// it and was stopped.
func (r *run) overCap(size, total int64, more bool) string {
	what := tasks.FormatBytes(size)
	if more {
		what = "more than " + tasks.FormatBytes(size-1)
	}
	switch {
	case size > r.h.cfg.MaxArtifactBytes:
		return fmt.Sprintf("over this worker's cap of %s per artifact: %s", tasks.FormatBytes(r.h.cfg.MaxArtifactBytes), what)
	case total+size > r.h.cfg.MaxArtifactsBytes:
		return fmt.Sprintf("over this worker's cap of %s for a task's artifacts together: %s after %s kept",
			tasks.FormatBytes(r.h.cfg.MaxArtifactsBytes), what, tasks.FormatBytes(total))
	}
	return ""
}

// infraFailure tells a cp failure that ends the attempt (the VM is gone or
// not running, smolvm could not run or misread its argv, the task's context
// ended, a host I/O error) from one about the file, which is the artifact's
// result.
func infraFailure(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, smolvm.ErrNotRunning) || errors.Is(err, smolvm.ErrNotFound) || errors.Is(err, smolvm.ErrUsage) {
		return true
	}
	var se *smolvm.Error
	if errors.As(err, &se) {
		return se.ExitCode < 0
	}
	return !errors.Is(err, smolvm.ErrInvalid)
}

// artifactReason is Artifact.Error for a cp failure about the file.
func artifactReason(err error) string {
	var se *smolvm.Error
	switch {
	case errors.Is(err, smolvm.ErrNoSuchFile):
		return tasks.ArtifactMissing
	case errors.As(err, &se) && se.Message != "":
		return se.Message
	}
	return err.Error()
}

// artifactName names the host file of artifact i: its index, which keeps
// names unique, and the guest file's base name reduced to letters, digits,
// '.', '-' and '_', so that it cannot leave its directory or look like a
// temporary.
func artifactName(i int, guest string) string {
	var b strings.Builder
	under := false
	for _, c := range []byte(path.Base(guest)) {
		ok := ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') || c == '.' || c == '-' || c == '_'
		switch {
		case ok:
			b.WriteByte(c)
			under = false
		case !under:
			b.WriteByte('_')
			under = true
		}
		if b.Len() >= 100 {
			break
		}
	}
	base := b.String()
	if strings.Trim(base, "._") == "" {
		base = "file"
	}
	return strconv.Itoa(i) + "-" + base
}
