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

// tmpDir holds each task's input files while they are copied in
// (DATA/tmp); nothing in it outlives the files phase.
func (h *Handler) tmpDir() string { return filepath.Join(h.cfg.DataDir, "tmp") }

// artifactDir holds the artifacts of one task (DATA/artifacts/KEY).
func (h *Handler) artifactDir(taskID string) string {
	return filepath.Join(h.cfg.DataDir, "artifacts", fileKey(taskID))
}

// copyIn is the files phase: it writes each file of the payload into a
// private temporary directory with its mode and copies it into the VM. The
// directory is removed whatever happens.
func (r *run) copyIn(ctx context.Context) error {
	if err := os.MkdirAll(r.h.tmpDir(), 0o700); err != nil {
		return fmt.Errorf("files: %w", err)
	}
	dir, err := os.MkdirTemp(r.h.tmpDir(), "files-")
	if err != nil {
		return fmt.Errorf("files: %w", err)
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
		if err := writeFile(host, f.Content, mode|0o400); err != nil {
			return fmt.Errorf("files[%d]: %w", i, err)
		}
		if err := r.h.cfg.Smolvm.CopyIn(ctx, r.vm, host, f.Path, mode); err != nil {
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
// caps, hashed and renamed into place. A missing or unreadable guest file is
// recorded and does not fail the task; a smolvm failure that says the VM is
// gone, or the task's end, fails the attempt.
func (r *run) copyOut(ctx context.Context) error {
	dir := r.h.artifactDir(r.taskID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
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

func (r *run) copyArtifact(ctx context.Context, dir string, i int, guest string, total *int64) (tasks.Artifact, error) {
	a := tasks.Artifact{Path: guest}
	final := filepath.Join(dir, artifactName(i, guest))
	tmp := filepath.Join(dir, ".tmp-"+strconv.Itoa(i)+"-"+randHex(6))
	defer os.Remove(tmp) // after the rename, a no-op
	// Whatever an earlier attempt left under this name is replaced or goes.
	drop := func(reason string) (tasks.Artifact, error) {
		a.Error = reason
		if err := os.Remove(final); err != nil && !errors.Is(err, os.ErrNotExist) {
			return a, fmt.Errorf("artifacts[%d]: %w", i, err)
		}
		return a, nil
	}
	if err := r.h.cfg.Smolvm.CopyOut(ctx, r.vm, guest, tmp); err != nil {
		if infraFailure(ctx, err) {
			return a, err
		}
		return drop(artifactReason(err))
	}
	// Readable whatever the guest's mode, by this worker and by a producer
	// on this host (see enqueue.FetchArtifact).
	if err := os.Chmod(tmp, 0o644); err != nil {
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
	switch {
	case !info.Mode().IsRegular():
		return drop("not a regular file")
	case a.Size > r.h.cfg.MaxArtifactBytes:
		return drop(fmt.Sprintf("over this worker's cap of %s per artifact: %s",
			tasks.FormatBytes(r.h.cfg.MaxArtifactBytes), tasks.FormatBytes(a.Size)))
	case *total+a.Size > r.h.cfg.MaxArtifactsBytes:
		return drop(fmt.Sprintf("over this worker's cap of %s for a task's artifacts together: %s after %s kept",
			tasks.FormatBytes(r.h.cfg.MaxArtifactsBytes), tasks.FormatBytes(a.Size), tasks.FormatBytes(*total)))
	}
	sum := sha256.New()
	if n, err := io.Copy(sum, f); err != nil || n != a.Size {
		return a, fmt.Errorf("artifacts[%d]: read %d of %d bytes: %v", i, n, a.Size, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return a, fmt.Errorf("artifacts[%d]: %w", i, err)
	}
	*total += a.Size
	a.Host, a.HostPath, a.SHA256 = r.h.cfg.Host, final, hex.EncodeToString(sum.Sum(nil))
	return a, nil
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
