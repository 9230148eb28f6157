package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// cacheFile adds a file of n bytes to c at rel, made on this host.
func cacheFile(t *testing.T, c *cache, rel string, n int) string {
	t.Helper()
	tmp, err := c.tempPath("test")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, make([]byte, n), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.adopt(context.Background(), tmp, rel); err != nil {
		t.Fatal(err)
	}
	return c.path(rel)
}

// usedAgo sets a cached file's access time, the cache's record of its
// last use.
func usedAgo(t *testing.T, path string, d time.Duration) {
	t.Helper()
	if err := os.Chtimes(path, time.Now().Add(-d), time.Time{}); err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestCacheEviction: over its cap, the cache evicts the least recently used
// files first, never one a lease holds (even the least recently used), nor
// one that is a hard link into the file store, which costs it nothing.
func TestCacheEviction(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	st, err := store.NewFile(filepath.Join(data, "store"))
	if err != nil {
		t.Fatal(err)
	}
	c := newCache(filepath.Join(data, "cache"), st, 1<<40, zerolog.Nop())
	a := cacheFile(t, c, "packs/a.smolmachine", 100)
	b := cacheFile(t, c, "packs/b.smolmachine", 100)
	d := cacheFile(t, c, "commits/t/d.smolmachine", 100)
	l, err := c.hold("packs/a.smolmachine", nil)
	if err != nil || l == nil || l.Path != a {
		t.Fatalf("hold = %v, %v", l, err)
	}
	// Used least recently: a (held), then b, then d.
	usedAgo(t, a, 3*time.Hour)
	usedAgo(t, b, 2*time.Hour)
	usedAgo(t, d, time.Hour)

	c.max = 250
	c.evict("")
	if !exists(a) || exists(b) || !exists(d) {
		t.Errorf("after evicting to 250 bytes: a %v, b %v, d %v; want a (held) and d kept, b evicted", exists(a), exists(b), exists(d))
	}

	// Released, a goes in its turn: the least recently used first.
	l.Release()
	usedAgo(t, a, time.Hour)
	usedAgo(t, d, 2*time.Hour)
	c.max = 150
	c.evict("")
	if !exists(a) || exists(d) {
		t.Errorf("after evicting to 150 bytes: a %v, d %v; want d, the least recently used, evicted", exists(a), exists(d))
	}
	// Holding a file marks it used.
	usedAgo(t, a, 5*time.Hour)
	l, _ = c.hold("packs/a.smolmachine", nil)
	l.Release()
	if files, _ := c.usage(); len(files) != 1 || time.Since(files[0].atime) > time.Minute {
		t.Errorf("usage after a hold: %+v, want a used now", files)
	}

	// A file that is also the store's object is neither counted nor
	// evicted.
	if _, err := c.put(context.Background(), "commits/t/e.smolmachine", a, ""); err != nil {
		t.Fatal(err)
	}
	if files, total := c.usage(); len(files) != 0 || total != 0 {
		t.Errorf("usage with a's bytes in the store too: %+v, %d; want nothing", files, total)
	}
	c.max = 0
	c.evict("")
	if !exists(a) {
		t.Error("evicted a file the store shares")
	}
}

// TestCacheFetchOnce: tasks racing for one commit share one download, and
// the file lands whole, with nothing left in the cache's tmp.
func TestCacheFetchOnce(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	st, err := store.NewFile(filepath.Join(data, "store"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := st.Put(ctx, "commits/t/k.smolmachine", strings.NewReader("a commit"), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	c := newCache(filepath.Join(data, "cache"), st, 1<<30, zerolog.Nop())
	const n = 20
	got := make(chan bool, n)
	for range n {
		go func() {
			l, downloaded, err := c.fetch(ctx, "commits/t/k.smolmachine", "commits/t/k.smolmachine")
			if err != nil {
				t.Error(err)
			}
			defer l.Release()
			if b, err := os.ReadFile(l.Path); err != nil || string(b) != "a commit" {
				t.Errorf("fetched %q, %v", b, err)
			}
			got <- downloaded
		}()
	}
	downloads := 0
	for range n {
		if <-got {
			downloads++
		}
	}
	// Sharers of the one download all say so; later ones hit the cache.
	if downloads == 0 {
		t.Error("no fetch reports the download")
	}
	if ents, _ := os.ReadDir(c.tmpDir()); len(ents) != 0 {
		t.Errorf("left in tmp: %v", ents)
	}
}

// TestFetchDigestMismatch: a commit whose bytes in the store no longer
// match its SHA-256 fails the task that starts from it with a retried
// error, and leaves nothing in the host's cache, on a file:// and an
// s3:// store.
func TestFetchDigestMismatch(t *testing.T) {
	s3 := s3Store(t)
	for _, tt := range []struct {
		name string
		st   func(t *testing.T) (store.Store, func(key string) string)
	}{
		{"file", func(t *testing.T) (store.Store, func(string) string) {
			dir := filepath.Join(t.TempDir(), "store")
			st, _ := store.NewFile(dir)
			return st, func(k string) string { return filepath.Join(dir, filepath.FromSlash(k)) }
		}},
		{"s3", func(t *testing.T) (store.Store, func(string) string) {
			return s3.Store, s3.file
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st, file := tt.st(t)
			f1, f2 := newFake(), newFake()
			h1, _ := newHandler(t, f1, func(c *Config) { c.Store = st })
			h2, _ := newHandler(t, f2, func(c *Config) { c.Store = st; c.Host = "host-b" })
			var w results
			if err := h1.Run(context.Background(), Meta{ID: "a"}, payload(t, basic), &w); err != nil {
				t.Fatal(err)
			}
			key := w.result(t).CommitKey
			fh, err := os.OpenFile(file(key), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			fh.WriteAt([]byte("rot"), 2)
			fh.Close()

			from := tasks.AgentRun{From: "task:a", Command: []string{"true"}, Commit: tasks.Bool(false)}
			err = h2.Run(context.Background(), Meta{ID: "b"}, payload(t, from), nil)
			if !errors.Is(err, store.ErrDigestMismatch) || errors.Is(err, asynq.SkipRetry) {
				t.Fatalf("from a corrupted commit: err = %v, want ErrDigestMismatch, retried", err)
			}
			if f2.count("create") != 0 {
				t.Error("a VM was created from a corrupted commit")
			}
			if exists(h2.cache.path(key)) {
				t.Error("the corrupted commit is in the cache")
			}
			if ents, _ := os.ReadDir(h2.cache.tmpDir()); len(ents) != 0 {
				t.Errorf("left in the cache's tmp: %v", ents)
			}
		})
	}
}

// TestStoreDownMidRun: a store that stops answering before the commit is
// uploaded fails the attempt with a retried error naming the store, and
// leaves no half-made commit behind.
func TestStoreDownMidRun(t *testing.T) {
	st := s3Store(t)
	f := newFake()
	f.packVM = func(context.Context, string, string) (smolvm.Pack, error) {
		st.down()
		return smolvm.Pack{}, nil
	}
	h, _ := newHandler(t, f, func(c *Config) { c.Store = st })
	var w results
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := h.Run(ctx, Meta{ID: "down"}, payload(t, basic), &w)
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, asynq.SkipRetry) {
		t.Fatalf("err = %v, want the store unavailable, retried", err)
	}
	if res := w.result(t); res.Phase != tasks.PhaseCommit || res.CommitKey != "" {
		t.Errorf("result phase %q, commit key %q; want a failed commit", res.Phase, res.CommitKey)
	}
	if ents, _ := os.ReadDir(h.cache.tmpDir()); len(ents) != 0 {
		t.Errorf("left in the cache's tmp: %v", ents)
	}
	if exists(h.cache.path(commitKey(tasks.DefaultTenant, "down"))) {
		t.Error("a commit the store never took is in the cache")
	}
}

// blockFirstGet is a store whose first Get waits until its context ends;
// it hides the file store's Linker, so the cache copies through Get.
type blockFirstGet struct {
	store.Store
	gets    atomic.Int32
	entered chan struct{}
}

func (b *blockFirstGet) Get(ctx context.Context, key string) (io.ReadCloser, store.Object, error) {
	if b.gets.Add(1) == 1 {
		close(b.entered)
		<-ctx.Done()
		return nil, store.Object{}, ctx.Err()
	}
	return b.Store.Get(ctx, key)
}

// TestCacheFetchSharedCut: two tasks share one download, and the task
// whose context runs it is cancelled. The other is not: it fetches the
// file itself, and never gets the first one's context.Canceled, which
// asynq would take for its own cancel.
func TestCacheFetchSharedCut(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	fs, err := store.NewFile(filepath.Join(data, "store"))
	if err != nil {
		t.Fatal(err)
	}
	const key = "commits/t/k.smolmachine"
	if _, err := fs.Put(context.Background(), key, strings.NewReader("a commit"), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	st := &blockFirstGet{Store: fs, entered: make(chan struct{})}
	c := newCache(filepath.Join(data, "cache"), st, 1<<30, zerolog.Nop())
	ctxA, cancelA := context.WithCancel(context.Background())
	errA := make(chan error, 1)
	go func() {
		_, _, err := c.fetch(ctxA, key, key)
		errA <- err
	}()
	<-st.entered // A's download runs, under A's context
	type got struct {
		l   *lease
		err error
	}
	resB := make(chan got, 1)
	go func() {
		l, _, err := c.fetch(context.Background(), key, key)
		resB <- got{l, err}
	}()
	time.Sleep(100 * time.Millisecond) // B joins A's download meanwhile
	cancelA()
	if err := <-errA; !errors.Is(err, context.Canceled) {
		t.Errorf("A's fetch = %v, want its own cancel", err)
	}
	b := <-resB
	if b.err != nil {
		t.Fatalf("B's fetch = %v, want the file", b.err)
	}
	defer b.l.Release()
	if data, err := os.ReadFile(b.l.Path); err != nil || string(data) != "a commit" {
		t.Errorf("B fetched %q, %v", data, err)
	}
}

// onEvicted is a log writer that runs then once, at evict's first
// "evicted" message: after one removal, before the next.
type onEvicted struct {
	then func()
	done bool
}

func (w *onEvicted) Write(p []byte) (int, error) {
	if !w.done && bytes.Contains(p, []byte("evicted from the cache")) {
		w.done = true
		w.then()
	}
	return len(p), nil
}

// TestEvictSparesReplaced: eviction removes the files it listed, never a
// newer file renamed onto a listed path since (another process's download
// of the same key, say).
func TestEvictSparesReplaced(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	st, err := store.NewFile(filepath.Join(data, "store"))
	if err != nil {
		t.Fatal(err)
	}
	w := &onEvicted{}
	c := newCache(filepath.Join(data, "cache"), st, 1<<40, zerolog.New(w).Level(zerolog.DebugLevel))
	a := cacheFile(t, c, "commits/t/a.smolmachine", 100)
	b := cacheFile(t, c, "commits/t/b.smolmachine", 100)
	usedAgo(t, a, 2*time.Hour)
	usedAgo(t, b, time.Hour)
	// Once evict has listed a and b and removed a, a newer b lands.
	w.then = func() {
		tmp, err := c.tempPath("get")
		if err == nil {
			err = os.WriteFile(tmp, []byte("newer b"), 0o600)
		}
		if err == nil {
			err = os.Rename(tmp, b)
		}
		if err != nil {
			t.Error(err)
		}
	}
	c.max = 50
	c.evict("")
	if !w.done {
		t.Fatal("evict logged no eviction")
	}
	if exists(a) {
		t.Error("a, the least recently used, was not evicted")
	}
	if got, err := os.ReadFile(b); err != nil || string(got) != "newer b" {
		t.Errorf("b after evict: %q, %v; want the newer b kept", got, err)
	}
}

// TestCacheWalksWhenDue: adding a file walks the cache (a stat of every
// file in it) only when this process's estimate of its size passes the
// cap, or the last walk is over cacheRewalk old, which is when files that
// other processes added are noticed; eviction still keeps the cap.
func TestCacheWalksWhenDue(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	c := newCache(filepath.Join(data, "cache"), nil, 1000, zerolog.Nop())
	first := cacheFile(t, c, "packs/first.smolmachine", 100) // no walk yet: due
	if c.walks != 1 {
		t.Fatalf("walks after the first file = %d, want 1", c.walks)
	}
	usedAgo(t, first, 3*time.Hour)
	for i := range 7 {
		p := cacheFile(t, c, fmt.Sprintf("packs/p%d.smolmachine", i), 100)
		usedAgo(t, p, 2*time.Hour)
	}
	if c.walks != 1 {
		t.Fatalf("walks after 800 bytes under a 1000-byte cap = %d, want still 1", c.walks)
	}
	// Another process adds 150 bytes; this one does not know.
	other := filepath.Join(c.dir, "packs", "other.smolmachine")
	if err := os.WriteFile(other, make([]byte, 150), 0o600); err != nil {
		t.Fatal(err)
	}
	usedAgo(t, other, time.Hour)
	cacheFile(t, c, "packs/p7.smolmachine", 100) // estimate 900: no walk
	if c.walks != 1 || !exists(first) {
		t.Fatalf("walks = %d, first kept %v; want 1, true (the estimate is under the cap)", c.walks, exists(first))
	}
	// The walk of a minute ago no longer stands: the next file walks, sees
	// 1150 bytes and evicts the least recently used.
	c.evicting.Lock()
	c.walked = c.walked.Add(-2 * cacheRewalk)
	c.evicting.Unlock()
	cacheFile(t, c, "packs/p8.smolmachine", 10)
	if c.walks != 2 || exists(first) || !exists(other) {
		t.Fatalf("walks = %d, first kept %v, other kept %v; want 2, false, true", c.walks, exists(first), exists(other))
	}
	// Over the cap by this process's own count: a walk at once.
	cacheFile(t, c, "packs/big.smolmachine", 200)
	if c.walks != 3 {
		t.Fatalf("walks after passing the cap = %d, want 3", c.walks)
	}
	_, total := c.usage()
	if total > c.max-c.max/evictLow {
		t.Errorf("cache holds %d bytes after evicting, over a tenth under its cap of %d", total, c.max)
	}
	// That tenth is room: a full cache takes the next files without a walk.
	cacheFile(t, c, "packs/small.smolmachine", int(c.max-total)/2)
	if c.walks != 3 {
		t.Errorf("walks after a file that fits in the room eviction left = %d, want 3", c.walks)
	}
}

// TestEvictSparesUsed: a file used between eviction's listing and its turn
// is not removed; nor is one whose inode is not the one listed (the listed
// file went, and a new one reusing its inode number took the path): both
// changed the inode's ctime.
func TestEvictSparesUsed(t *testing.T) {
	t.Parallel()
	c := newCache(filepath.Join(t.TempDir(), "cache"), nil, 1<<40, zerolog.Nop())
	a := cacheFile(t, c, "packs/a.smolmachine", 100)
	usedAgo(t, a, time.Hour)
	files, _ := c.usage()
	if len(files) != 1 || files[0].path != a {
		t.Fatalf("usage = %+v, want a", files)
	}
	time.Sleep(10 * time.Millisecond) // a ctime the file system can tell apart
	l, err := c.hold("packs/a.smolmachine", nil)
	if err != nil || l == nil {
		t.Fatalf("hold = %v, %v", l, err)
	}
	l.Release()
	if c.remove(files[0]) || !exists(a) {
		t.Error("evict removed a file used after it was listed")
	}
	files, _ = c.usage()
	if !c.remove(files[0]) || exists(a) {
		t.Error("evict kept a file unused since it was listed")
	}
}

// TestSwapLockAnyPath: two worker processes that reach the data directory
// by different paths (a symlink, or containers mounting it at different
// places) take the same swap lock for the same cache file.
func TestSwapLockAnyPath(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	other := filepath.Join(t.TempDir(), "data")
	if err := os.Symlink(data, other); err != nil {
		t.Fatal(err)
	}
	c1 := newCache(filepath.Join(data, "cache"), nil, 1<<40, zerolog.Nop())
	c2 := newCache(filepath.Join(other, "cache"), nil, 1<<40, zerolog.Nop())
	unlock, err := c1.lock(context.Background(), swapLocks, c1.rel(c1.path("packs/a.smolmachine")))
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	tmp, err := c2.tempPath("get")
	if err == nil {
		err = os.WriteFile(tmp, []byte("a"), 0o600)
	}
	if err == nil {
		err = os.MkdirAll(filepath.Dir(c2.path("packs/a.smolmachine")), 0o700)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := c2.place(ctx, tmp, c2.path("packs/a.smolmachine")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("place through the other path while the lock is held: %v, want it to wait for the lock", err)
	}
}

// BenchmarkCacheAdd adds a file to a cache that holds 20,000 others, under
// its cap: the cost of a commit or download landing on a host that has
// kept a week of them.
//
//	go test -run '^$' -bench CacheAdd ./worker
func BenchmarkCacheAdd(b *testing.B) {
	data := b.TempDir()
	c := newCache(filepath.Join(data, "cache"), nil, 1<<40, zerolog.Nop())
	for i := range 20000 {
		dir := filepath.Join(c.dir, "commits", "t", fmt.Sprintf("%02x", i%256))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d.smolmachine", i)), []byte("x"), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	c.evict("") // the start-up walk
	i := 0
	for b.Loop() {
		tmp, err := c.tempPath("bench")
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(tmp, []byte("y"), 0o600); err != nil {
			b.Fatal(err)
		}
		i++
		if err := c.adopt(context.Background(), tmp, fmt.Sprintf("packs/b%d.smolmachine", i)); err != nil {
			b.Fatal(err)
		}
	}
}
