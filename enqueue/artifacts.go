package enqueue

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
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// ErrArtifactNotKept: the result lists the artifact without a file to fetch
// (the guest file was missing or over a cap, or a worker without a store
// kept it only on its own disk). The error names the artifact and why.
var ErrArtifactNotKept = errors.New("artifact not in the store")

// ArtifactMode is the permission of the files [FetchArtifact] writes:
// private to the user, as the worker keeps them, since an agent's output
// may hold anything its secrets let it read.
const ArtifactMode os.FileMode = 0o600

// FetchArtifact downloads the artifact a — an entry of a task's
// Result.Artifacts — from st, the store the workers write to (opened with
// store.Open on the URL of their -store), into the file dst. It checks the
// bytes against the size and SHA-256 the result recorded, and writes dst
// atomically: a temporary file in dst's directory, synced, then renamed
// over dst (mode [ArtifactMode]). On any failure nothing is left behind
// and an existing dst is untouched.
//
// Every error is one line starting "artifact PATH". An artifact the worker
// did not keep (Error set) or that names no store key is an error
// matching [ErrArtifactNotKept]. Store errors keep their
// identity for errors.Is: store.ErrNotFound (deleted, or past the
// workers' -retention), store.ErrUnavailable, and store.ErrDigestMismatch,
// which bytes that do not match the result also match.
func FetchArtifact(ctx context.Context, st store.Store, a tasks.Artifact, dst string) error {
	if a.Error != "" {
		return &notKeptError{fmt.Sprintf("artifact %s was not kept: %s", a.Path, strings.Join(strings.Fields(a.Error), " "))}
	}
	if a.Key == "" {
		where := "the worker kept it on its own disk only"
		if a.Host != "" && a.HostPath != "" {
			where = fmt.Sprintf("the worker kept it on host %s at %s only", a.Host, a.HostPath)
		}
		return &notKeptError{fmt.Sprintf("artifact %s has no store key in the result (%s)", a.Path, where)}
	}
	if st == nil {
		return fmt.Errorf("artifact %s: no store to fetch it from", a.Path)
	}
	if b, err := hex.DecodeString(a.SHA256); err != nil || len(b) != sha256.Size || a.Size < 0 {
		return fmt.Errorf("artifact %s: the result records no valid size and SHA-256 to check it against", a.Path)
	}
	rc, obj, err := st.Get(ctx, a.Key)
	if err != nil {
		return fmt.Errorf("artifact %s: %w", a.Path, err)
	}
	defer rc.Close()
	if obj.Size != a.Size || (obj.SHA256 != "" && obj.SHA256 != a.SHA256) {
		return fmt.Errorf("artifact %s: %w: the store holds %d bytes (sha256 %s) under %s; the result says %d bytes, sha256 %s",
			a.Path, store.ErrDigestMismatch, obj.Size, orUnknown(obj.SHA256), a.Key, a.Size, a.SHA256)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".bottleq-fetch-*")
	if err != nil {
		return fmt.Errorf("artifact %s: %w", a.Path, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	sum := sha256.New()
	// One byte past the size the result records tells a longer object.
	n, err := io.Copy(io.MultiWriter(tmp, sum), io.LimitReader(rc, a.Size+1))
	if err != nil {
		return fmt.Errorf("artifact %s: %w", a.Path, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); n != a.Size || got != a.SHA256 {
		return fmt.Errorf("artifact %s: %w: %s gave %d bytes with sha256 %s; the result says %d bytes, sha256 %s",
			a.Path, store.ErrDigestMismatch, a.Key, n, got, a.Size, a.SHA256)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("artifact %s: %w", a.Path, err)
	}
	if err = tmp.Chmod(ArtifactMode); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		return fmt.Errorf("artifact %s: %w", a.Path, err)
	}
	renamed = true
	return nil
}

// notKeptError is an artifact FetchArtifact has nothing to fetch of; it
// matches ErrArtifactNotKept.
type notKeptError struct{ msg string }

func (e *notKeptError) Error() string        { return e.msg }
func (e *notKeptError) Is(target error) bool { return target == ErrArtifactNotKept }

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// maxNameBytes keeps a file name, with a "N-" prefix added, within the
// 255 bytes of common file systems.
const maxNameBytes = 200

// ArtifactFileNames gives each kept artifact of a result (Error empty) a
// file name to save it under in one directory, and "" to the others: the
// base name of its guest path, or "artifact-N" when that is no usable
// name ("", ".", "..", a name with a control character or over 200
// bytes); a name already given to an earlier artifact becomes "N-NAME",
// N the artifact's index, with a further "-K" until it is unique. Guest
// paths in a result are not trusted: no name holds a slash, so joined to
// the directory it never leads out of it.
func ArtifactFileNames(arts []tasks.Artifact) []string {
	names := make([]string, len(arts))
	taken := map[string]bool{}
	for i, a := range arts {
		if a.Error != "" {
			continue
		}
		base := path.Base(strings.TrimRight(a.Path, "/"))
		if !usableName(base) {
			base = fmt.Sprintf("artifact-%d", i)
		}
		name := base
		for k := 1; taken[name]; k++ {
			name = fmt.Sprintf("%d-%s", i, base)
			if k > 1 {
				name = fmt.Sprintf("%d-%d-%s", i, k, base)
			}
		}
		taken[name] = true
		names[i] = name
	}
	return names
}

// usableName reports whether s can name a file in a directory as it is.
func usableName(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) <= maxNameBytes && utf8.ValidString(s) &&
		!strings.ContainsAny(s, "/\\") && strings.IndexFunc(s, unicode.IsControl) < 0
}
