package worker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// packStore lays out packs under a directory and writes them atomically:
// smolvm writes OUT and OUT.smolmachine under a temporary name, then both
// are renamed into place, the .smolmachine last. A pack exists when its
// .smolmachine does, so a crash mid-pack never leaves one that looks done.
type packStore struct {
	dir string
}

// paths returns the final pack for a key.
func (s packStore) pack(key string) smolvm.Pack {
	out := filepath.Join(s.dir, key)
	return smolvm.Pack{Stub: out, Machine: out + ".smolmachine"}
}

// write runs pack (which must write the pack it is given) into a temporary
// pack in s.dir, then renames it to key. Leftover temporaries of a crash
// are removed when the pack fails or by sweep.
func (s packStore) write(ctx context.Context, key string, pack func(ctx context.Context, out string) (smolvm.Pack, error)) (smolvm.Pack, error) {
	if err := os.MkdirAll(s.dir, privateDir); err != nil {
		return smolvm.Pack{}, err
	}
	tmpOut := filepath.Join(s.dir, ".tmp-"+key+"-"+randHex(4))
	tmp, err := pack(ctx, tmpOut)
	if err == nil {
		err = private(tmp)
	}
	if err != nil {
		removePack(smolvm.Pack{Stub: tmpOut, Machine: tmpOut + ".smolmachine"})
		return smolvm.Pack{}, err
	}
	final := s.pack(key)
	if err := os.Rename(tmp.Stub, final.Stub); err != nil && !errors.Is(err, os.ErrNotExist) {
		removePack(tmp)
		return smolvm.Pack{}, err
	}
	if err := os.Rename(tmp.Machine, final.Machine); err != nil {
		removePack(tmp)
		return smolvm.Pack{}, fmt.Errorf("pack %s: %w", key, err)
	}
	return final, nil
}

// sweep removes temporaries older than age, left by a crashed worker.
func (s packStore) sweep(age time.Duration) {
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".tmp-") {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > age {
			os.RemoveAll(filepath.Join(s.dir, e.Name()))
		}
	}
}

// private makes a pack its user's alone before it is renamed into place:
// the .smolmachine 0600, the stub (an executable, when smolvm wrote one)
// 0700.
func private(p smolvm.Pack) error {
	if err := os.Chmod(p.Stub, 0o700); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.Chmod(p.Machine, privateFile)
}

func removePack(p smolvm.Pack) {
	os.Remove(p.Stub)
	os.Remove(p.Machine)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// PackCache packs each image once per host. A hit reuses the pack on disk;
// concurrent misses in one process share one smolvm call (singleflight), and
// several processes sharing the directory wait on a file lock and find the
// pack the first one wrote.
//
// An image pinned by digest (name@sha256:…) is immutable and cached for
// good. A tag such as :latest may move, so its pack is rebuilt once it is
// older than its TTL, which means what [Config].PackTTL does.
type PackCache struct {
	store packStore
	ttl   time.Duration
	pack  func(ctx context.Context, image, out string) (smolvm.Pack, error)
	group singleflight.Group
}

// NewPackCache returns a cache in dir that packs with pack (normally
// (*smolvm.Client).PackImage). A ttl of zero is DefaultPackTTL; a negative
// one, such as PackTTLForever, keeps packs forever.
func NewPackCache(dir string, ttl time.Duration, pack func(ctx context.Context, image, out string) (smolvm.Pack, error)) *PackCache {
	if ttl == 0 {
		ttl = DefaultPackTTL
	}
	return &PackCache{store: packStore{dir: dir}, ttl: ttl, pack: pack}
}

// Get returns the pack of image, packing it if needed; hit reports whether
// it was already there.
func (c *PackCache) Get(ctx context.Context, image string) (p smolvm.Pack, hit bool, err error) {
	key := imageKey(image)
	if c.fresh(image, key) {
		return c.store.pack(key), true, nil
	}
	v, err, _ := c.group.Do(key, func() (any, error) {
		// The first caller's ctx governs the shared call: if it ends, the
		// callers sharing it fail too, and asynq retries their tasks.
		if err := os.MkdirAll(c.store.dir, privateDir); err != nil {
			return nil, err
		}
		unlock, err := lockFile(ctx, filepath.Join(c.store.dir, key+".lock"))
		if err != nil {
			return nil, err
		}
		defer unlock()
		if c.fresh(image, key) {
			return packResult{c.store.pack(key), true}, nil
		}
		p, err := c.store.write(ctx, key, func(ctx context.Context, out string) (smolvm.Pack, error) {
			return c.pack(ctx, image, out)
		})
		return packResult{p, false}, err
	})
	if err != nil {
		return smolvm.Pack{}, false, err
	}
	r := v.(packResult)
	return r.pack, r.hit, nil
}

type packResult struct {
	pack smolvm.Pack
	hit  bool
}

func (c *PackCache) fresh(image, key string) bool {
	info, err := os.Stat(c.store.pack(key).Machine)
	if err != nil {
		return false
	}
	return pinned(image) || c.ttl < 0 || time.Since(info.ModTime()) < c.ttl
}

// pinned reports whether an image reference names a digest.
func pinned(image string) bool { return strings.Contains(image, "@sha256:") }

func imageKey(image string) string {
	sum := sha256.Sum256([]byte(image))
	return "img-" + hex.EncodeToString(sum[:16])
}

// fromPolicy says which absolute "from" paths a task may boot: regular
// files that, once their symlinks are resolved, lie under one of dirs and
// not under data, the data directory agents' artifacts land in.
type fromPolicy struct {
	dirs []string // resolved, absolute
	data string   // the data directory, resolved as far as it exists
}

// newFromPolicy resolves the operator's directories and refuses one that
// is missing, not a directory, or is, holds or lies inside dataDir.
func newFromPolicy(dirs []string, dataDir string) (fromPolicy, error) {
	data, err := resolveExisting(dataDir)
	if err != nil {
		return fromPolicy{}, &ConfigError{Field: "DataDir", Err: err}
	}
	fp := fromPolicy{data: data}
	for _, d := range dirs {
		if d == "" {
			return fromPolicy{}, configErr("FromDirs", "an empty directory name")
		}
		abs, err := filepath.Abs(d)
		if err != nil {
			return fromPolicy{}, &ConfigError{Field: "FromDirs", Err: err}
		}
		real, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return fromPolicy{}, configErr("FromDirs", "%s: %w", d, unwrapPath(err))
		}
		if info, err := os.Stat(real); err != nil || !info.IsDir() {
			return fromPolicy{}, configErr("FromDirs", "%s is not a directory", d)
		}
		switch {
		case within(real, data):
			return fromPolicy{}, configErr("FromDirs", "%s holds the data directory %s, where agents' artifacts land", d, dataDir)
		case within(data, real):
			return fromPolicy{}, configErr("FromDirs", "%s lies in the data directory %s, where agents' artifacts land", d, dataDir)
		}
		fp.dirs = append(fp.dirs, real)
	}
	return fp, nil
}

// resolve returns the file an absolute "from" path boots, with its
// symlinks resolved, or one refusal whatever the reason: a missing file
// and a forbidden one read the same, so a task cannot probe the host.
func (fp fromPolicy) resolve(from string) (string, error) {
	refused := &tasks.ValidationError{Field: "from", Reason: from + " is not a pack this worker may boot: an absolute path must name a readable file under a directory its operator allows"}
	if len(fp.dirs) == 0 {
		return "", refused
	}
	real, err := filepath.EvalSymlinks(from)
	if err != nil || within(fp.data, real) || !slices.ContainsFunc(fp.dirs, func(d string) bool { return within(d, real) }) {
		return "", refused
	}
	f, err := os.Open(real)
	if err != nil {
		return "", refused
	}
	defer f.Close()
	if info, err := f.Stat(); err != nil || !info.Mode().IsRegular() {
		return "", refused
	}
	return real, nil
}

// within reports whether path is dir or lies under it; both are clean and
// absolute.
func within(dir, path string) bool {
	if dir == path {
		return true
	}
	if !strings.HasSuffix(dir, string(filepath.Separator)) {
		dir += string(filepath.Separator)
	}
	return strings.HasPrefix(path, dir)
}

// resolveExisting resolves the symlinks of the longest part of an absolute
// path that exists and appends the rest, so that a data directory not
// created yet compares as it will be.
func resolveExisting(path string) (string, error) {
	real, err := filepath.EvalSymlinks(path)
	if err == nil {
		return real, nil
	}
	parent := filepath.Dir(path)
	if !errors.Is(err, os.ErrNotExist) || parent == path {
		return "", err
	}
	real, err = resolveExisting(parent)
	if err != nil {
		return "", err
	}
	return filepath.Join(real, filepath.Base(path)), nil
}

// unwrapPath drops the *fs.PathError's path, which the caller names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
