package api

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// storeRetryAfter is the Retry-After of a 503 for an unreachable store.
const storeRetryAfter = 5 * time.Second

// Errors an ArtifactSource returns, to match with errors.Is.
var (
	// ErrArtifactUnavailable: the artifact was kept, but not where this
	// source can read it (another host's data directory, say).
	ErrArtifactUnavailable = errors.New("artifact not readable here")
	// ErrArtifactMismatch: what the source holds is not what the result
	// recorded (size or SHA-256).
	ErrArtifactMismatch = errors.New("artifact does not match its result")
)

// ArtifactSource opens the artifacts a run's result lists, for
// GET /v1/runs/{id}/artifacts/{n}. [StoreArtifacts] reads them from the
// workers' store, where a result names them by key; [LocalArtifacts] from
// a worker's data directory, where older results (of workers without a
// store) name them by host path.
type ArtifactSource interface {
	// Open returns the content of artifact a of run runID, which belongs
	// to tenant, checked against a.Size and a.SHA256 (or checked by the
	// source as it is read, failing the read). An artifact it cannot
	// reach is an error matching ErrArtifactUnavailable. When the reader
	// is an io.ReadSeeker too, the handler serves byte ranges.
	Open(ctx context.Context, tenant, runID string, a tasks.Artifact) (io.ReadCloser, error)
}

// StoreArtifacts reads artifacts from the workers' store: the object under
// the artifact's key, which must lie in the run's tenant's part of the
// store (artifacts/TENANT/...). An artifact the result names by host path
// alone, or any with a host path when there is no Store, is read with
// Local.
type StoreArtifacts struct {
	// Store is the store the workers write to (their -store). Nil: an
	// artifact with a key is unavailable.
	Store store.Store
	// Local reads artifacts that have no key. Nil: they are unavailable.
	Local ArtifactSource
}

// Open gets the artifact's object, after checking that its size and
// digest are the result's; the reader checks the bytes as they are read.
// An object that is gone (past the workers' -retention) is unavailable; an
// unreachable store is an error matching store.ErrUnavailable.
func (s StoreArtifacts) Open(ctx context.Context, tenant, runID string, a tasks.Artifact) (io.ReadCloser, error) {
	switch {
	case (a.Key == "" || s.Store == nil) && a.HostPath != "" && s.Local != nil:
		return s.Local.Open(ctx, tenant, runID, a)
	case a.Key == "":
		return nil, fmt.Errorf("%w: the result names no store key: host %s holds it", ErrArtifactUnavailable, a.Host)
	case s.Store == nil:
		return nil, fmt.Errorf("%w: it is in the workers' store, and this API has none (-store)", ErrArtifactUnavailable)
	case !strings.HasPrefix(a.Key, "artifacts/"+tenant+"/"):
		return nil, fmt.Errorf("%w: its store key is not in tenant %s's part of the store", ErrArtifactUnavailable, tenant)
	}
	rc, obj, err := s.Store.Get(ctx, a.Key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("%w: it is no longer in the store (the workers' -retention deletes artifacts)", ErrArtifactUnavailable)
	case err != nil:
		return nil, err
	}
	if obj.Size != a.Size || (obj.SHA256 != "" && obj.SHA256 != a.SHA256) {
		rc.Close()
		return nil, fmt.Errorf("%w: the store holds %d bytes under %s, with another SHA-256 or size than the result's %d", ErrArtifactMismatch, obj.Size, a.Key, a.Size)
	}
	return rc, nil
}

// LocalArtifacts reads artifacts from a worker's data directory on this
// host, where the worker keeps them (DATA/artifacts/TENANT/...): the API
// runs on the worker's host, as the worker's user, or shares its disk.
type LocalArtifacts struct {
	// DataDir is the worker's -data-dir.
	DataDir string
}

// Open opens a.HostPath if it lies in the tenant's part of the data
// directory, and checks its size and SHA-256 before it returns it.
func (l LocalArtifacts) Open(_ context.Context, tenant, _ string, a tasks.Artifact) (io.ReadCloser, error) {
	root := filepath.Join(l.DataDir, "artifacts", tenant) + string(filepath.Separator)
	p := a.HostPath
	if p == "" || !filepath.IsAbs(p) || filepath.Clean(p) != p || !strings.HasPrefix(p, root) {
		return nil, fmt.Errorf("%w: its path is not in this API's data directory for tenant %s", ErrArtifactUnavailable, tenant)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%w: host %s holds it, and this API cannot read it (%v)", ErrArtifactUnavailable, a.Host, errors.Unwrap(err))
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%w: not a regular file", ErrArtifactMismatch)
	}
	if err == nil && st.Size() != a.Size {
		err = fmt.Errorf("%w: %d bytes here, %d in the result", ErrArtifactMismatch, st.Size(), a.Size)
	}
	if err == nil {
		h := sha256.New()
		if _, err = io.Copy(h, f); err == nil && hex.EncodeToString(h.Sum(nil)) != a.SHA256 {
			err = fmt.Errorf("%w: its SHA-256 differs", ErrArtifactMismatch)
		}
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (s *Server) artifact(w http.ResponseWriter, r *http.Request, g Grant) {
	ri, e := s.lookup(r.Context(), g, r.PathValue("id"))
	if e != nil {
		writeError(w, e)
		return
	}
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n < 0 || n >= tasks.MaxArtifacts {
		writeError(w, invalid("n", fmt.Sprintf("n: must be an artifact's index, 0 to %d", tasks.MaxArtifacts-1)))
		return
	}
	if n >= len(ri.res.Artifacts) {
		if !ri.final() {
			writeError(w, errorf(http.StatusConflict, CodeNotReady, "n", fmt.Sprintf("run %s has not copied artifact %d out yet (it is %s)", ri.ID, n, ri.State)))
		} else {
			writeError(w, errorf(http.StatusNotFound, CodeNotFound, "n", fmt.Sprintf("run %s has %d artifacts: no artifact %d", ri.ID, len(ri.res.Artifacts), n)))
		}
		return
	}
	a := ri.res.Artifacts[n]
	if a.Error != "" || (a.Key == "" && a.HostPath == "") {
		reason := a.Error
		if reason == "" {
			reason = "no store key or host path in the result"
		}
		writeError(w, errorf(http.StatusNotFound, CodeNotFound, "n", fmt.Sprintf("artifact %d (%s) was not kept: %s", n, a.Path, reason)))
		return
	}
	if s.cfg.Artifacts == nil {
		writeError(w, errorf(http.StatusNotFound, CodeUnavailable, "n", fmt.Sprintf("artifact %d is on host %s; this API serves no artifacts", n, a.Host)))
		return
	}
	rc, err := s.cfg.Artifacts.Open(r.Context(), ri.Tenant, ri.ID, a)
	switch {
	case errors.Is(err, ErrArtifactUnavailable):
		writeError(w, errorf(http.StatusNotFound, CodeUnavailable, "n", fmt.Sprintf("artifact %d (%s): %v", n, a.Path, err)))
		return
	case errors.Is(err, store.ErrUnavailable):
		s.cfg.Log.Warn().Err(err).Str("run_id", ri.ID).Int("artifact", n).Msg("artifact store unreachable")
		e := errorf(http.StatusServiceUnavailable, CodeUnavailable, "", fmt.Sprintf("artifact %d (%s): the store is unreachable; try again later", n, a.Path))
		e.RetryAfter = storeRetryAfter
		writeError(w, e)
		return
	case err != nil:
		s.cfg.Log.Error().Err(err).Str("run_id", ri.ID).Int("artifact", n).Msg("artifact not served")
		writeError(w, errorf(http.StatusInternalServerError, CodeInternal, "n", fmt.Sprintf("artifact %d (%s) cannot be served: %v", n, a.Path, err)))
		return
	}
	defer rc.Close()
	sum, _ := hex.DecodeString(a.SHA256)
	b64 := base64.StdEncoding.EncodeToString(sum)
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(a.Path)}))
	h.Set("X-Checksum-Sha256", a.SHA256)
	h.Set("Digest", "sha-256="+b64)
	h.Set("Repr-Digest", "sha-256=:"+b64+":")
	h.Set("ETag", `"sha256-`+a.SHA256+`"`)
	if rs, ok := rc.(io.ReadSeeker); ok {
		http.ServeContent(w, r, "", time.Time{}, rs)
		return
	}
	h.Set("Content-Length", strconv.FormatInt(a.Size, 10))
	if err := copyVerified(w, rc, a.Size, a.SHA256); err != nil {
		s.cfg.Log.Error().Err(err).Str("run_id", ri.ID).Int("artifact", n).Msg("artifact stream cut")
		// The last bytes are held back, so the client sees a short body,
		// never a whole one that is wrong.
		panic(http.ErrAbortHandler)
	}
}

// copyVerified copies r to w, checking that it holds size bytes whose
// SHA-256 is sum, and holds the last chunk back until it has: a source
// that goes wrong never delivers a complete body.
func copyVerified(w io.Writer, r io.Reader, size int64, sum string) error {
	h := sha256.New()
	cur, next := make([]byte, 32<<10), make([]byte, 32<<10)
	var held []byte
	var n int64
	for {
		k, err := r.Read(next)
		if k > 0 {
			n += int64(k)
			if n > size {
				return fmt.Errorf("%w: more than %d bytes", ErrArtifactMismatch, size)
			}
			h.Write(next[:k])
			if len(held) > 0 {
				if _, werr := w.Write(held); werr != nil {
					return werr
				}
			}
			held = next[:k]
			cur, next = next, cur
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if n != size || hex.EncodeToString(h.Sum(nil)) != sum {
		return fmt.Errorf("%w: %d bytes with another SHA-256", ErrArtifactMismatch, n)
	}
	_, err := w.Write(held)
	return err
}
