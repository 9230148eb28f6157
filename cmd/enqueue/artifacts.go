package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// storeHelp and artifactsDirHelp are the help of --store and
// --artifacts-dir, for enqueue and enqueue wait alike.
const (
	storeHelp = "the workers' store `URL`, as their -store: file:///ABS/DIR or s3://BUCKET/PREFIX?endpoint=URL&region=R&path_style=true, " +
		"with S3 credentials from the standard AWS environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE): the output the live output missed is read from there, and --artifacts-dir downloads from there " +
		"(default $BOTTLEQ_STORE, else the worker's default store when it is on this machine: file://DATA/store, DATA being $BOTTLEQ_DATA_DIR or the worker's default data directory)"
	artifactsDirHelp = "once the task completes, download each artifact from the workers' store (--store) into `DIR`, made if missing, " +
		"named after the base of its guest path (N-NAME, N its index, when two share a name) and checked against its SHA-256; a file there of the same name is replaced. " +
		"Exits 1 if one could not be downloaded"
)

// artifactsTarget is where --artifacts-dir downloads artifacts from, and
// to.
type artifactsTarget struct {
	dir      string // --artifacts-dir; empty: download nothing
	storeURL string
	from     string // what named the store: --store, BOTTLEQ_STORE, or "" for the default
}

// resolveArtifacts checks --artifacts-dir and --store (or BOTTLEQ_STORE,
// or the worker's default store) without touching the store.
func resolveArtifacts(dir, storeURL string, getenv func(string) string) (artifactsTarget, error) {
	if dir == "" && storeURL == "" {
		storeURL = getenv("BOTTLEQ_STORE")
	}
	if dir == "" && storeURL == "" {
		return artifactsTarget{}, nil
	}
	if fi, err := os.Stat(dir); dir != "" && err == nil && !fi.IsDir() {
		return artifactsTarget{}, usagef("--artifacts-dir: %s is not a directory", dir)
	}
	t := artifactsTarget{dir: dir, storeURL: storeURL, from: "--store"}
	if t.storeURL == "" {
		t.storeURL, t.from = getenv("BOTTLEQ_STORE"), "BOTTLEQ_STORE"
	}
	if t.storeURL == "" {
		data, err := filepath.Abs(workerDataDir(getenv))
		if err != nil {
			return artifactsTarget{}, usagef("BOTTLEQ_DATA_DIR: %v", err)
		}
		t.storeURL, t.from = "file://"+filepath.Join(data, "store"), ""
	}
	if _, err := store.ParseURL(t.storeURL); err != nil {
		var ce *store.ConfigError
		if errors.As(err, &ce) {
			return artifactsTarget{}, usagef("%s: %s: %s", t.fromName(), ce.Field, ce.Reason)
		}
		return artifactsTarget{}, usagef("%s: %v", t.fromName(), err)
	}
	return t, nil
}

// fromName names what chose the store, for errors.
func (t artifactsTarget) fromName() string {
	if t.from == "" {
		return "the default store " + t.storeURL
	}
	return t.from
}

// open makes the download directory and opens the store, checking that it
// works, before anything is enqueued. A file:// store's directory must
// exist: a typing mistake would otherwise make an empty store.
func (t artifactsTarget) open(ctx context.Context) (store.Store, error) {
	loc, err := store.ParseURL(t.storeURL) // checked by resolveArtifacts
	if err != nil {
		return nil, err
	}
	if loc.Dir != "" {
		if fi, err := os.Stat(loc.Dir); err != nil || !fi.IsDir() {
			if t.from == "" {
				return nil, fmt.Errorf("--artifacts-dir: no store to download from: --store and BOTTLEQ_STORE are not set, and the worker's default store %s is not on this machine; give --store, the workers' -store URL", loc.Dir)
			}
			return nil, fmt.Errorf("%s: the store directory %s does not exist", t.from, loc.Dir)
		}
	}
	st, err := store.Open(ctx, t.storeURL)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.fromName(), err)
	}
	if t.dir == "" {
		return st, nil
	}
	if err := os.MkdirAll(t.dir, 0o755); err != nil {
		return nil, fmt.Errorf("--artifacts-dir: %w", err)
	}
	return st, nil
}

// workerDataDir is the worker's -data-dir when it runs with this
// environment: $BOTTLEQ_DATA_DIR, else its default (cmd/worker's
// defaultDataDir).
func workerDataDir(getenv func(string) string) string {
	if d := getenv("BOTTLEQ_DATA_DIR"); d != "" {
		return d
	}
	if d := getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "bottleq")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "share", "bottleq")
	}
	return filepath.Join(os.TempDir(), "bottleq")
}

// artifactsOut downloads a finished task's artifacts into a directory.
type artifactsOut struct {
	st  store.Store
	dir string
}

// showArtifacts prints one line per artifact of r on stderr: where it was
// downloaded to (with out), or where the worker keeps it; or why it was not
// kept. Each download that fails is an "enqueue: " line, and the count of
// them is returned.
func showArtifacts(ctx context.Context, out *artifactsOut, r tasks.Result, stderr io.Writer) (failed int) {
	var names []string
	if out != nil {
		names = enqueue.ArtifactFileNames(r.Artifacts)
	}
	for i, a := range r.Artifacts {
		switch {
		case a.Error != "":
			fmt.Fprintf(stderr, "bottleq: artifact %s: %s\n", a.Path, oneLine(a.Error))
		case out != nil:
			dst := filepath.Join(out.dir, names[i])
			if err := enqueue.FetchArtifact(ctx, out.st, a, dst); err != nil {
				fmt.Fprintf(stderr, "enqueue: %s\n", oneLine(err.Error()))
				failed++
				continue
			}
			fmt.Fprintf(stderr, "bottleq: artifact %s: %s (%d bytes, sha256 %s)\n", a.Path, dst, a.Size, a.SHA256)
		case a.HostPath != "":
			fmt.Fprintf(stderr, "bottleq: artifact %s: %s (%d bytes, sha256 %s)\n", a.Path, a.HostPath, a.Size, a.SHA256)
		default:
			fmt.Fprintf(stderr, "bottleq: artifact %s: in the store as %s (%d bytes, sha256 %s; --artifacts-dir downloads it)\n", a.Path, a.Key, a.Size, a.SHA256)
		}
	}
	return failed
}
