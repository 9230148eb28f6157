package worker

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/store"
)

// cache is the worker's local copy of what it takes from the store, under
// DATA/cache: image packs (packs/IMAGEKEY.smolmachine) and commits
// (commits/TENANT/KEY.smolmachine, as their store keys). A file lands
// whole or not at all: it is written in DATA/cache/tmp, its SHA-256 checked
// as it is read from the store, and renamed into place. One download per
// file per host however many tasks race: a singleflight in this process,
// a file lock (DATA/cache/locks) across the processes sharing the data
// directory.
//
// The cache holds at most max bytes: after each file it adds, the least
// recently used files go first (each use sets a file's access time). A file
// a task holds (a lease: a shared flock on an open descriptor, so other
// worker processes on the host see it too) is never evicted; the cache
// may then stay over its cap until the task lets go. Eviction removes only
// the file it listed (its device, inode and ctime), never a newer one renamed
// onto the path since: a rename into the cache and an eviction both take
// the path's swap lock. A file that is a hard link into a file:// store
// costs the disk nothing of its own: it is not counted and not evicted.
//
// Finding the least recently used files means a walk over the whole cache,
// which holds a link to every commit of the retention period: with the
// default store, hundreds of thousands of files. So a file added does not
// walk it when this process's estimate of the cache's size (its last walk
// plus what it added since) is under the cap, and the last walk is under
// cacheRewalk old; the other worker processes of the host add files too,
// so the cap may be passed by what they added in that time.
type cache struct {
	dir   string
	st    store.Store
	max   int64
	log   zerolog.Logger
	group singleflight.Group
	// evicting keeps this process's evictions one at a time, so that two
	// do not both free the same excess, and guards estimate and walked.
	evicting sync.Mutex
	// estimate is the bytes the cache counted at its last walk (walked)
	// and what this process added since.
	estimate int64
	walked   time.Time
	// walks counts the walks, for tests.
	walks int
}

// cacheRewalk is how long a walk of the cache stands for its size, besides
// what this process adds.
const cacheRewalk = time.Minute

// Directories of the cache that hold no cached file.
const (
	cacheTmp   = "tmp"
	cacheLocks = "locks"
)

// lockStripes is how many lock files each lock namespace has: a name locks
// the stripe it hashes to, so lock files stay few.
const lockStripes = 4096

// Lock namespaces, each with stripes of its own, so that a holder in one
// never holds up a taker in another whose name hashes to the same stripe.
const (
	// downloadLocks guard a file's download, held while it runs
	// (DATA/cache/locks/XXX.lock).
	downloadLocks = ""
	// packLocks guard making or downloading an image's pack, held while
	// pack create runs, which may be minutes (DATA/cache/locks/packs).
	packLocks = "packs"
	// swapLocks guard a cache file's path, named by it: held only to
	// rename a file onto it, or for eviction to remove the file there
	// (DATA/cache/locks/swap).
	swapLocks = "swap"
)

func newCache(dir string, st store.Store, maxBytes int64, log zerolog.Logger) *cache {
	return &cache{dir: dir, st: st, max: maxBytes, log: log.With().Str("component", "cache").Logger()}
}

// path is the cache file of rel, a slash-separated relative path.
func (c *cache) path(rel string) string { return filepath.Join(c.dir, filepath.FromSlash(rel)) }

// tmpDir holds files being made or downloaded: on the cache's file system,
// so they rename into place.
func (c *cache) tmpDir() string { return filepath.Join(c.dir, cacheTmp) }

// tempPath returns a fresh name in tmpDir, which it creates:
// PREFIX-STAMP-RANDOM, STAMP the time now (tmpStamp).
func (c *cache) tempPath(prefix string) (string, error) {
	if err := os.MkdirAll(c.tmpDir(), privateDir); err != nil {
		return "", diskErr("cache", err)
	}
	return filepath.Join(c.tmpDir(), prefix+"-"+time.Now().UTC().Format(tmpStamp)+"-"+randHex(8)), nil
}

// tmpStamp is the layout of the time in a tempPath name. Sweep judges a
// temporary's age by it as well as by its mtime: a download hard-linked
// from a file store carries the object's mtime, maybe days old, and must
// not be taken for a crashed worker's leftover. (Touching the file would
// touch the store's object too, one inode; its ctime cannot be set back,
// so a test could not age one.)
const tmpStamp = "20060102T150405Z"

// madeAt is the time in a tempPath name, when name is one.
func madeAt(name string) (time.Time, bool) {
	parts := strings.SplitN(name, "-", 3)
	if len(parts) < 3 {
		return time.Time{}, false
	}
	t, err := time.Parse(tmpStamp, parts[1])
	return t, err == nil
}

// lock takes the host-wide lock of name in namespace ns, waiting as long
// as ctx allows. Names of a namespace that share a stripe share a lock.
func (c *cache) lock(ctx context.Context, ns, name string) (func(), error) {
	dir := filepath.Join(c.dir, cacheLocks, ns)
	if err := os.MkdirAll(dir, privateDir); err != nil {
		return nil, diskErr("cache", err)
	}
	return lockFile(ctx, filepath.Join(dir, fmt.Sprintf("%03x.lock", stripe(name))))
}

// stripe is the lock stripe of name.
func stripe(name string) int {
	sum := sha256.Sum256([]byte(name))
	return (int(sum[0])<<8 | int(sum[1])) % lockStripes
}

// lease holds a cached file against eviction until Release. A nil lease
// releases nothing.
type lease struct {
	// Path is the cached file.
	Path string
	f    *os.File
	once sync.Once
}

// Release lets the cache evict the file again.
func (l *lease) Release() {
	if l == nil {
		return
	}
	l.once.Do(func() { l.f.Close() }) // closing drops the flock
}

// hold leases the cached file rel when it is there and ok (nil: any)
// accepts it, and marks it used; it returns nil when there is none.
func (c *cache) hold(rel string, ok func(fs.FileInfo) bool) (*lease, error) {
	p := c.path(rel)
	for range 3 {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
		if err := flock(f, syscall.LOCK_SH); err != nil {
			f.Close()
			return nil, fmt.Errorf("cache: %s: %w", p, err)
		}
		// Evicted or replaced between the open and the lock: look again.
		held, err1 := f.Stat()
		cur, err2 := os.Stat(p)
		if err1 != nil || err2 != nil || !os.SameFile(held, cur) {
			f.Close()
			continue
		}
		if ok != nil && !ok(held) {
			f.Close()
			return nil, nil
		}
		os.Chtimes(p, time.Now(), time.Time{}) // used now; the mtime stays
		return &lease{Path: p, f: f}, nil
	}
	return nil, nil
}

// flock takes how (LOCK_SH, LOCK_EX, with LOCK_NB or not) on f, again
// when a signal interrupts the wait.
func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			return err
		}
	}
}

// sharedCut is err, a shared call's, when it says a context ended while
// ctx, this caller's, has not: the call ran under another caller's context,
// whose task ended (cancelled, or past its deadline). Its end is not this
// task's, so the error comes back without context.Canceled or
// DeadlineExceeded in its chain, for the caller to try again, and for
// asynq not to take this task for cancelled. Nil otherwise.
func sharedCut(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil || !(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return nil
	}
	return fmt.Errorf("the work this task shared with another ended with the other task: %v", err)
}

// fetch leases the cached copy of the store's key at rel, downloading it
// first when it is not there; downloaded reports whether this call's
// download (or the one it shared) brought it.
func (c *cache) fetch(ctx context.Context, key, rel string) (l *lease, downloaded bool, err error) {
	if l, err := c.hold(rel, nil); l != nil || err != nil {
		return l, false, err
	}
	var cut error
	for range 3 {
		v, err, _ := c.group.Do(rel, func() (any, error) {
			// The first caller's ctx governs the shared download: if it
			// ends, the callers sharing it try again (sharedCut).
			unlock, err := c.lock(ctx, downloadLocks, rel)
			if err != nil {
				return false, err
			}
			defer unlock()
			if _, err := os.Stat(c.path(rel)); err == nil {
				return false, nil // another process of this host got it
			}
			_, err = c.download(ctx, key, rel)
			return true, err
		})
		if cut = sharedCut(ctx, err); cut != nil {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		if l, err := c.hold(rel, nil); l != nil || err != nil {
			return l, v.(bool), err
		}
	}
	if cut != nil {
		return nil, false, fmt.Errorf("cache: %s: %w", rel, cut)
	}
	return nil, false, fmt.Errorf("cache: %s was evicted as soon as it was fetched: -cache-max-bytes (%d) is too small for what tasks hold", rel, c.max)
}

// download copies the store's key to rel, replacing what is there, and
// returns the object. The file's modification time is the object's
// Modified. A file:// store's object is hard-linked instead, where it
// can be. The caller holds rel's lock. Bytes whose SHA-256 is not the
// object's leave nothing behind and fail with store.ErrDigestMismatch.
func (c *cache) download(ctx context.Context, key, rel string) (store.Object, error) {
	dst := c.path(rel)
	if err := os.MkdirAll(filepath.Dir(dst), privateDir); err != nil {
		return store.Object{}, diskErr("cache", err)
	}
	tmp, err := c.tempPath("get")
	if err != nil {
		return store.Object{}, err
	}
	obj, err := c.linkOrCopy(ctx, key, tmp)
	if err != nil {
		os.Remove(tmp)
		return store.Object{}, err
	}
	if err := c.place(ctx, tmp, dst); err != nil {
		os.Remove(tmp)
		return store.Object{}, err
	}
	c.grew(dst)
	return obj, nil
}

// place renames tmp onto dst, a cache file, under dst's swap lock: an
// eviction that listed the file there before removes only that file.
func (c *cache) place(ctx context.Context, tmp, dst string) error {
	unlock, err := c.lock(ctx, swapLocks, c.rel(dst))
	if err != nil {
		return err
	}
	defer unlock()
	if err := os.Rename(tmp, dst); err != nil {
		return diskErr("cache", err)
	}
	return nil
}

// rel is p, a path in the cache, relative to the cache: what a lock on it
// is named by, the same in every process whatever path it has to DATA.
func (c *cache) rel(p string) string {
	if r, err := filepath.Rel(c.dir, p); err == nil {
		return filepath.ToSlash(r)
	}
	return p
}

// linkOrCopy puts the bytes of key at tmp.
func (c *cache) linkOrCopy(ctx context.Context, key, tmp string) (store.Object, error) {
	if l, ok := c.st.(store.Linker); ok {
		obj, err := l.GetFile(ctx, key, tmp)
		if !errors.Is(err, errors.ErrUnsupported) {
			return obj, err
		}
	}
	rc, obj, err := c.st.Get(ctx, key)
	if err != nil {
		return obj, err
	}
	defer rc.Close()
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, privateFile)
	if err != nil {
		return obj, diskErr("cache", err)
	}
	_, err = io.Copy(f, rc) // the store's reader fails the last read on a wrong digest
	if err == nil {
		err = f.Sync()
	}
	if err := errors.Join(err, f.Close()); err != nil {
		return obj, diskErr("cache: downloading "+key, err)
	}
	if err := os.Chtimes(tmp, time.Now(), obj.Modified); err != nil {
		return obj, diskErr("cache", err)
	}
	return obj, nil
}

// put stores the local file path under key, create-only: by hard link
// into a file:// store where it can, else uploaded with its SHA-256 (sum,
// when the caller knows it). The file is left where it is, its
// modification time the object's Modified.
func (c *cache) put(ctx context.Context, key, path, sum string) (store.Object, error) {
	if l, ok := c.st.(store.Linker); ok {
		obj, err := l.PutFile(ctx, key, path, store.PutOptions{SHA256: sum})
		if !errors.Is(err, errors.ErrUnsupported) {
			return obj, err
		}
	}
	if sum == "" {
		var err error
		if sum, _, err = store.HashFile(ctx, path); err != nil {
			return store.Object{}, err
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return store.Object{}, err
	}
	defer f.Close()
	obj, err := c.st.Put(ctx, key, f, store.PutOptions{SHA256: sum})
	if err != nil {
		return obj, err
	}
	os.Chtimes(path, time.Now(), obj.Modified)
	return obj, nil
}

// adopt moves a file made on this host (in tmpDir) into the cache at rel,
// replacing what is there.
func (c *cache) adopt(ctx context.Context, tmp, rel string) error {
	dst := c.path(rel)
	if err := os.MkdirAll(filepath.Dir(dst), privateDir); err != nil {
		return diskErr("cache", err)
	}
	if err := os.Chmod(tmp, privateFile); err != nil {
		return diskErr("cache", err)
	}
	if err := c.place(ctx, tmp, dst); err != nil {
		return err
	}
	c.grew(dst)
	return nil
}

// cached is a file of the cache, as evict sees it.
type cached struct {
	path  string
	size  int64
	atime time.Time
	info  fs.FileInfo // its identity (device and inode), for os.SameFile
	ctime time.Time   // its inode's change time: a reused inode has a newer one
}

// usage lists the cache's files that cost it disk (those not linked into a
// file:// store too) and their total size.
func (c *cache) usage() ([]cached, int64) {
	var files []cached
	var total int64
	filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // vanished, or unreadable: not ours to count
		}
		if d.IsDir() {
			if p != c.dir && filepath.Dir(p) == c.dir && (d.Name() == cacheTmp || d.Name() == cacheLocks) {
				return fs.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil || !info.Mode().IsRegular() || strings.HasPrefix(d.Name(), ".tmp-") {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if ok && st.Nlink > 1 {
			return nil // the store's file too: evicting it frees nothing
		}
		at := info.ModTime()
		if ok {
			at = time.Unix(st.Atim.Unix())
		}
		files = append(files, cached{path: p, size: info.Size(), atime: at, info: info, ctime: changedAt(info)})
		total += info.Size()
		return nil
	})
	return files, total
}

// grew is called once this process added the file keep to the cache: it
// evicts (see evict) when the cache may be over its cap, or when its last
// walk is over cacheRewalk old. A file that is a link into a file:// store
// costs the cache nothing.
func (c *cache) grew(keep string) {
	var n int64
	if info, err := os.Stat(keep); err == nil {
		if st, ok := info.Sys().(*syscall.Stat_t); !ok || st.Nlink <= 1 {
			n = info.Size()
		}
	}
	c.evicting.Lock()
	c.estimate += n
	due := c.estimate > c.max || time.Since(c.walked) > cacheRewalk
	c.evicting.Unlock()
	if due {
		c.evict(keep)
	}
}

// evict removes the least recently used files when the cache holds more
// than max bytes, down to a tenth under it (evictLow), so that the files
// that come next fit before the next walk; it spares keep (the file just
// added) and every file a lease holds.
func (c *cache) evict(keep string) {
	c.evicting.Lock()
	defer c.evicting.Unlock()
	files, total := c.usage()
	c.walks++
	c.walked = time.Now()
	defer func() { c.estimate = total }()
	if total <= c.max {
		return
	}
	low := c.max - c.max/evictLow
	slices.SortFunc(files, func(a, b cached) int { return a.atime.Compare(b.atime) })
	for _, f := range files {
		if total <= low {
			return
		}
		if f.path == keep || !c.remove(f) {
			continue
		}
		total -= f.size
		c.log.Debug().Str("file", f.path).Int64("bytes", f.size).Msg("evicted from the cache")
	}
	if total > c.max {
		c.log.Warn().Int64("bytes", total).Int64("max_bytes", c.max).Msg("cache over its cap: what is left is in use")
	}
}

// evictLow: eviction frees down to max - max/evictLow.
const evictLow = 10

// remove deletes the file usage listed, and reports whether it did: not
// when a lease holds it, nor when another file has taken its path since.
// It holds the path's swap lock, which writers hold only for a rename, so
// none can slip a file in between its look and the removal.
func (c *cache) remove(listed cached) bool {
	unlock, err := c.lock(context.Background(), swapLocks, c.rel(listed.path))
	if err != nil {
		return false
	}
	defer unlock()
	f, err := os.Open(listed.path)
	if err != nil {
		return false
	}
	defer f.Close()
	if flock(f, syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return false // held
	}
	// The same device and inode is not enough: once the listed file went
	// (another process evicted it), a new one renamed here may have its
	// inode. A rename, a new file and a use (hold sets the times) all
	// change the inode's ctime.
	held, err := f.Stat()
	if err != nil || !os.SameFile(held, listed.info) || !changedAt(held).Equal(listed.ctime) {
		return false // replaced, or used, since it was listed
	}
	return os.Remove(listed.path) == nil
}

// changedAt is the inode change time of info, or its mtime where the
// system gives none.
func changedAt(info fs.FileInfo) time.Time {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Ctim.Unix())
	}
	return info.ModTime()
}

// sweep removes what a crashed worker left in tmpDir, older than age, and
// evicts down to the cap.
func (c *cache) sweep(age time.Duration) {
	sweepTmp(c.tmpDir(), age)
	c.evict("")
}

// ErrDiskFull marks an error of a disk that is full: the task fails and is
// retried, and no half-written file is left.
var ErrDiskFull = errors.New("the disk is full")

// diskFull reports whether err says a file system is full: ENOSPC, a
// quota (EDQUOT), or smolvm's report of either (smolvm.ErrNoSpace).
func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, smolvm.ErrNoSpace)
}

// diskErr wraps err with what was being done; a full disk also matches
// ErrDiskFull.
func diskErr(what string, err error) error {
	if diskFull(err) {
		return fmt.Errorf("%s: %w (%w)", what, ErrDiskFull, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// smolvmDiskErr is err, from smolvm writing into the host directory dir,
// marked ErrDiskFull and naming dir when it says the disk is full (smolvm's
// own message may not name it); any other error comes back unchanged.
func smolvmDiskErr(what, dir string, err error) error {
	if err == nil || !diskFull(err) {
		return err
	}
	return diskErr(what+": smolvm writing into "+dir, err)
}
