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
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// Pack sources and locks. An image's pack is looked for in this order:
//
//  1. this host's cache, DATA/cache/packs/IMAGEKEY.smolmachine, while it is
//     fresh (PackSourceCache);
//  2. the store, where the first host of the pool to pack the image put it
//     (PackSourceStore): downloaded into the cache;
//  3. smolvm's `pack create --image`, under the pool's lock on the image,
//     then uploaded to the store for the other hosts (PackSourcePacked).
//
// A pack's age is its store object's: the cache file's modification time
// is set to it. A digest-pinned image (name@sha256:…) is immutable, its
// pack kept for good under packs/pinned/IMAGEKEY.smolmachine. A tag may
// move: its packs are packs/tagged/IMAGEKEY/GENERATION.smolmachine, one
// generation (the time it was packed and a random suffix) per TTL, since
// store objects are never overwritten; the newest one younger than the TTL
// is used, and the retention sweep deletes those past it.

// PoolLock takes a lock shared by the workers of a pool, by name, without
// waiting: ok is false while another holder has it. A holder keeps it until
// it calls unlock, however long that is; a holder that dies loses it within
// a bounded time. [RedisPoolLock] is the one a worker uses.
type PoolLock func(ctx context.Context, name string) (unlock func(), ok bool, err error)

// hostLock is the PoolLock of a worker without one: always granted, since
// the pack cache already holds a host-wide lock on the image around it, so
// only the processes of one host keep each other from packing twice.
func hostLock(context.Context, string) (func(), bool, error) { return func() {}, true, nil }

// Waits of a host whose image another host is packing: it looks in the
// store again after packPoll, doubling up to packPollMax.
const (
	packPoll    = 100 * time.Millisecond
	packPollMax = 2 * time.Second
)

// packCache finds the pack of each image for a pool of hosts sharing a
// store: one `pack create` per image per pool, however many tasks race on
// however many hosts. In this process concurrent misses share one lookup
// (singleflight); the processes of one host take turns on a file lock; the
// hosts of a pool take turns on the PoolLock, and those waiting poll the
// store for the pack the holder uploads, taking the lock themselves if it
// is released without one.
type packCache struct {
	cache *cache
	ttl   time.Duration
	pack  func(ctx context.Context, image, out string) (smolvm.Pack, error)
	lock  PoolLock
	group singleflight.Group
}

// newPackCache returns a pack cache that packs with pack (normally
// (*smolvm.Client).PackImage). A ttl of zero is DefaultPackTTL; a negative
// one, such as PackTTLForever, keeps packs forever. A nil lock locks this
// host only.
func newPackCache(c *cache, ttl time.Duration, pack func(ctx context.Context, image, out string) (smolvm.Pack, error), lock PoolLock) *packCache {
	if ttl == 0 {
		ttl = DefaultPackTTL
	}
	if lock == nil {
		lock = hostLock
	}
	return &packCache{cache: c, ttl: ttl, pack: pack, lock: lock}
}

// rel is the cache file of an image key.
func packRel(key string) string { return "packs/" + key + ".smolmachine" }

// path is where image's pack is in this host's cache, when it is.
func (c *packCache) path(image string) string { return c.cache.path(packRel(imageKey(image))) }

// fresh reports whether this host's cache holds a pack of image young
// enough to use.
func (c *packCache) fresh(image string) bool {
	info, err := os.Stat(c.path(image))
	return err == nil && c.freshInfo(image, info)
}

func (c *packCache) freshInfo(image string, info fs.FileInfo) bool {
	return c.freshAt(image, info.ModTime())
}

// freshAt reports whether a pack of image made at t may still be used.
func (c *packCache) freshAt(image string, t time.Time) bool {
	return pinned(image) || c.ttl < 0 || time.Since(t) < c.ttl
}

// Get returns the pack of image, leased until the caller's VM is gone
// (Release it then), and where it came from: tasks.PackSourceCache,
// PackSourceStore or PackSourcePacked.
func (c *packCache) Get(ctx context.Context, image string) (smolvm.Pack, string, *lease, error) {
	key := imageKey(image)
	rel := packRel(key)
	fresh := func(info fs.FileInfo) bool { return c.freshInfo(image, info) }
	if l, err := c.cache.hold(rel, fresh); l != nil || err != nil {
		return packOf(l), tasks.PackSourceCache, l, err
	}
	var cut error
	for range 3 {
		v, err, _ := c.group.Do(key, func() (any, error) {
			// The first caller's ctx governs the shared call: if it ends,
			// the callers sharing it try again (sharedCut).
			return c.obtain(ctx, image)
		})
		if cut = sharedCut(ctx, err); cut != nil {
			continue
		}
		if err != nil {
			return smolvm.Pack{}, "", nil, err
		}
		if l, err := c.cache.hold(rel, fresh); l != nil || err != nil {
			return packOf(l), v.(string), l, err
		}
	}
	if cut != nil {
		return smolvm.Pack{}, "", nil, fmt.Errorf("the pack of %s: %w", image, cut)
	}
	return smolvm.Pack{}, "", nil, fmt.Errorf("the pack of %s was evicted as soon as it was made: -cache-max-bytes is too small for what tasks hold", image)
}

func packOf(l *lease) smolvm.Pack {
	if l == nil {
		return smolvm.Pack{}
	}
	return smolvm.Pack{Machine: l.Path}
}

// obtain brings a fresh pack of image into the cache and says from where.
func (c *packCache) obtain(ctx context.Context, image string) (string, error) {
	key := imageKey(image)
	rel := packRel(key)
	unlock, err := c.cache.lock(ctx, packLocks, "pack "+key)
	if err != nil {
		return "", err
	}
	defer unlock()
	wait := packPoll
	for {
		if info, err := os.Stat(c.cache.path(rel)); err == nil && c.freshInfo(image, info) {
			return tasks.PackSourceCache, nil // another process of this host brought it
		}
		if src, err := c.fromStore(ctx, image); src != "" || err != nil {
			return src, err
		}
		unlockPool, ok, err := c.lock(ctx, "packs/"+key)
		if err != nil {
			return "", fmt.Errorf("locking the pack of %s for the pool: %w", image, err)
		}
		if ok {
			return c.packLocked(ctx, image, unlockPool)
		}
		// Another host packs it: look again once it may have uploaded.
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, packPollMax)
	}
}

// packLocked packs image under the pool's lock, which it releases, uploads
// the pack and moves it into the cache.
func (c *packCache) packLocked(ctx context.Context, image string, unlock func()) (string, error) {
	defer unlock()
	// The holder before may have uploaded between the look and the lock.
	if src, err := c.fromStore(ctx, image); src != "" || err != nil {
		return src, err
	}
	out, err := c.cache.tempPath("pack")
	if err != nil {
		return "", err
	}
	p, err := c.pack(ctx, image, out)
	os.Remove(out) // the stub: a VM is created from the .smolmachine alone
	if err != nil {
		os.Remove(out + ".smolmachine")
		return "", smolvmDiskErr("packing "+image, filepath.Dir(out), err)
	}
	key := c.storeKey(image)
	if _, err := c.cache.put(ctx, key, p.Machine, ""); err != nil && !(pinned(image) && errors.Is(err, store.ErrExists)) {
		os.Remove(p.Machine)
		return "", fmt.Errorf("uploading the pack of %s to the store: %w", image, err)
	}
	if err := c.cache.adopt(ctx, p.Machine, packRel(imageKey(image))); err != nil {
		os.Remove(p.Machine)
		return "", err
	}
	return tasks.PackSourcePacked, nil
}

// fromStore downloads the newest fresh pack of image from the store into
// the cache, when there is one, and returns PackSourceStore; "" when there
// is none.
func (c *packCache) fromStore(ctx context.Context, image string) (string, error) {
	key, ok, err := c.inStore(ctx, image)
	if err != nil {
		return "", fmt.Errorf("looking for the pack of %s in the store: %w", image, err)
	}
	if !ok {
		return "", nil
	}
	if _, err := c.cache.download(ctx, key, packRel(imageKey(image))); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return "", nil // expired since it was listed
		}
		return "", fmt.Errorf("downloading the pack of %s: %w", image, err)
	}
	return tasks.PackSourceStore, nil
}

// Key prefixes of packs in the store.
const (
	pinnedPacks = "packs/pinned/"
	taggedPacks = "packs/tagged/"
)

// storeKey is a new key for a pack of image: the one key of a pinned image,
// a new generation of a tagged one.
func (c *packCache) storeKey(image string) string {
	if pinned(image) {
		return pinnedPacks + imageKey(image) + ".smolmachine"
	}
	return taggedPacks + imageKey(image) + "/" + time.Now().UTC().Format("20060102T150405Z") + "-" + randHex(3) + ".smolmachine"
}

// inStore returns the key of image's newest pack in the store and whether
// it is fresh enough to use.
func (c *packCache) inStore(ctx context.Context, image string) (string, bool, error) {
	st := c.cache.st
	if pinned(image) {
		key := pinnedPacks + imageKey(image) + ".smolmachine"
		_, err := st.Stat(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			return "", false, nil
		}
		return key, err == nil, err
	}
	var newest store.Object
	err := st.List(ctx, taggedPacks+imageKey(image)+"/", func(o store.Object) error {
		if strings.HasSuffix(o.Key, ".smolmachine") && (newest.Key == "" || o.Modified.After(newest.Modified)) {
			newest = o
		}
		return nil
	})
	if err != nil || newest.Key == "" {
		return "", false, err
	}
	return newest.Key, c.freshAt(image, newest.Modified), nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
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
