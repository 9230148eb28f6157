package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// storeKeys lists the keys under prefix in st, sorted.
func storeKeys(t *testing.T, st store.Store, prefix string) []string {
	t.Helper()
	var keys []string
	if err := st.List(context.Background(), prefix, func(o store.Object) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

// agePacks makes every pack of the file store in dir, and every pack in
// the cache of data, look made d ago (in a file store, the cache's copy
// is a hard link to the store's).
func agePacks(t *testing.T, d time.Duration, dirs ...string) {
	t.Helper()
	then := time.Now().Add(-d)
	for _, dir := range dirs {
		filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if err == nil && !e.IsDir() && strings.HasSuffix(p, ".smolmachine") {
				if err := os.Chtimes(p, then, then); err != nil {
					t.Fatal(err)
				}
			}
			return nil
		})
	}
}

// TestPackTTL: Config.PackTTL zero is DefaultPackTTL, a negative one keeps a
// tagged image's pack forever, and a digest-pinned image's pack is kept
// forever whatever the TTL. A pack past its TTL is packed again under a new
// key: the store's objects are never overwritten.
func TestPackTTL(t *testing.T) {
	t.Parallel()
	const pinnedImage = "alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tt := range []struct {
		name  string
		ttl   time.Duration
		image string
		age   time.Duration
		hit   bool
	}{
		{"zero, pack younger than the default", 0, "alpine:3", DefaultPackTTL - time.Hour, true},
		{"zero, pack older than the default", 0, "alpine:3", DefaultPackTTL + time.Hour, false},
		{"an hour, pack younger", time.Hour, "alpine:3", 30 * time.Minute, true},
		{"an hour, pack older", time.Hour, "alpine:3", 2 * time.Hour, false},
		{"forever", PackTTLForever, "alpine:3", 1000 * time.Hour, true},
		{"any negative", -time.Hour, "alpine:3", 1000 * time.Hour, true},
		{"digest-pinned", time.Hour, pinnedImage, 1000 * time.Hour, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake()
			h, _ := newHandler(t, f, func(c *Config) { c.PackTTL = tt.ttl })
			ctx := context.Background()
			_, src, l, err := h.packs.Get(ctx, tt.image)
			l.Release()
			if err != nil || src != tasks.PackSourcePacked {
				t.Fatalf("first Get = %q, %v; want packed", src, err)
			}
			agePacks(t, tt.age, filepath.Join(h.cfg.DataDir, "store"), filepath.Join(h.cfg.DataDir, "cache"))
			want := map[bool]string{true: tasks.PackSourceCache, false: tasks.PackSourcePacked}[tt.hit]
			if _, src, l, err = h.packs.Get(ctx, tt.image); err != nil || src != want {
				t.Errorf("Get of a pack %v old = %q, %v; want %q", tt.age, src, err, want)
			}
			l.Release()
			if n := f.count("pack-image"); n != map[bool]int{true: 1, false: 2}[tt.hit] {
				t.Errorf("image packed %d times", n)
			}
			if keys := storeKeys(t, h.cfg.Store, "packs/"); len(keys) != f.count("pack-image") {
				t.Errorf("store holds %q: want one key per pack", keys)
			}
		})
	}
}

// TestPacksShared: hosts sharing a store pack an image once. The first
// host packs it and uploads it; a second host downloads it and does not
// pack; the second host's next task finds it in its own cache. Once the
// pack is past its TTL, the host that needs it packs it again under a new
// key, and Retain deletes the old one an hour past the TTL.
func TestPacksShared(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "store")
	shared, err := store.NewFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	f1, f2 := newFake(), newFake()
	withStore := func(c *Config) { c.Store, c.PackTTL = shared, time.Hour }
	h1, _ := newHandler(t, f1, withStore)
	h2, _ := newHandler(t, f2, withStore)
	run := func(h *Handler, id string) tasks.Result {
		t.Helper()
		var w results
		p := tasks.AgentRun{Image: "alpine:3", Command: []string{"true"}, Commit: tasks.Bool(false)}
		if err := h.Run(context.Background(), Meta{ID: id}, payload(t, p), &w); err != nil {
			t.Fatal(err)
		}
		return w.result(t)
	}
	for _, step := range []struct {
		h    *Handler
		want string
	}{{h1, tasks.PackSourcePacked}, {h2, tasks.PackSourceStore}, {h2, tasks.PackSourceCache}, {h1, tasks.PackSourceCache}} {
		if res := run(step.h, "t"); res.PackSource != step.want || res.PackCached != (step.want != tasks.PackSourcePacked) {
			t.Errorf("pack source %q (cached %v), want %q", res.PackSource, res.PackCached, step.want)
		}
	}
	if n1, n2 := f1.count("pack-image"), f2.count("pack-image"); n1 != 1 || n2 != 0 {
		t.Errorf("packed %d times on host 1 and %d on host 2, want once on host 1", n1, n2)
	}
	first := storeKeys(t, shared, "packs/")
	if len(first) != 1 || !strings.HasPrefix(first[0], "packs/tagged/"+imageKey("alpine:3")+"/") {
		t.Fatalf("store packs %q, want one tagged generation", first)
	}

	// 90 minutes on: past the TTL. Host 2 packs a new generation; host 1
	// downloads it.
	agePacks(t, 90*time.Minute, dir)
	if res := run(h2, "t2"); res.PackSource != tasks.PackSourcePacked {
		t.Errorf("host 2 after the TTL: %q, want packed", res.PackSource)
	}
	if res := run(h1, "t2"); res.PackSource != tasks.PackSourceStore {
		t.Errorf("host 1 after host 2 packed again: %q, want store", res.PackSource)
	}
	both := storeKeys(t, shared, "packs/")
	if len(both) != 2 || !slices.Contains(both, first[0]) {
		t.Fatalf("store packs %q, want the old generation and a new one", both)
	}
	if err := h1.Retain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left := storeKeys(t, shared, "packs/"); !slices.Equal(left, both) {
		t.Errorf("Retain within the margin left %q, want %q", left, both)
	}
	old := time.Now().Add(-DefaultPackTTL)
	if err := os.Chtimes(filepath.Join(dir, filepath.FromSlash(first[0])), old, old); err != nil {
		t.Fatal(err)
	}
	if err := h1.Retain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left := storeKeys(t, shared, "packs/"); len(left) != 1 || left[0] == first[0] {
		t.Errorf("Retain past TTL and margin left %q, want the new generation only", left)
	}
}

// TestPackLockWaiters: while one host packs an image under the pool's lock
// (a real RedisPoolLock), another host that needs it waits and packs
// nothing; it downloads the pack once it is in the store, or, when the
// first host's pack fails and the lock is released without a pack, takes
// the lock and packs it itself.
func TestPackLockWaiters(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		firstErr  error
		wantFirst bool
		want      string
	}{
		{"first host uploads", nil, true, tasks.PackSourceStore},
		{"first host fails", errors.New("registry down"), false, tasks.PackSourcePacked},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
			defer rdb.Close()
			shared, _ := store.NewFile(filepath.Join(t.TempDir(), "store"))
			withPool := func(c *Config) { c.Store, c.PackLock = shared, RedisPoolLock(rdb) }
			f1, f2 := newFake(), newFake()
			started, release := make(chan struct{}), make(chan struct{})
			f1.packImage = func(ctx context.Context, image, out string) (smolvm.Pack, error) {
				close(started)
				<-release
				if tt.firstErr != nil {
					return smolvm.Pack{}, tt.firstErr
				}
				return writePack(out)
			}
			h1, _ := newHandler(t, f1, withPool)
			h2, _ := newHandler(t, f2, withPool)
			ctx := context.Background()
			first := make(chan error, 1)
			go func() {
				_, _, l, err := h1.packs.Get(ctx, "alpine:3")
				l.Release()
				first <- err
			}()
			<-started
			second := make(chan string, 1)
			go func() {
				_, src, l, err := h2.packs.Get(ctx, "alpine:3")
				l.Release()
				if err != nil {
					t.Error(err)
				}
				second <- src
			}()
			time.Sleep(3 * packPoll) // the second host looks, finds the lock held, waits
			if n := f2.count("pack-image"); n != 0 {
				t.Fatalf("the second host packed while the first held the lock")
			}
			close(release)
			if err := <-first; (err == nil) != tt.wantFirst {
				t.Fatalf("first host: %v", err)
			}
			if src := <-second; src != tt.want {
				t.Errorf("second host's pack source %q, want %q", src, tt.want)
			}
			if n := f1.count("pack-image") + f2.count("pack-image"); n != map[bool]int{true: 1, false: 2}[tt.wantFirst] {
				t.Errorf("%d packs in the pool", n)
			}
			if keys := storeKeys(t, shared, "packs/"); len(keys) != 1 {
				t.Errorf("store packs %q, want one", keys)
			}
		})
	}
}

// TestPackSparesDownloads: while this host packs an image (pack create may
// run for minutes), a download whose name falls in the stripe the pack's
// lock name does goes ahead: packs lock stripes of their own.
func TestPackSparesDownloads(t *testing.T) {
	t.Parallel()
	const image = "alpine:3"
	f := newFake()
	started, release := make(chan struct{}), make(chan struct{})
	f.packImage = func(ctx context.Context, image, out string) (smolvm.Pack, error) {
		close(started)
		<-release
		return writePack(out)
	}
	h, _ := newHandler(t, f, nil)
	var key string
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("commits/t/k%d.smolmachine", i); stripe(k) == stripe("pack "+imageKey(image)) {
			key = k
		}
	}
	if _, err := h.cfg.Store.Put(context.Background(), key, strings.NewReader("a commit"), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	packed := make(chan error, 1)
	go func() {
		_, _, l, err := h.packs.Get(context.Background(), image)
		l.Release()
		packed <- err
	}()
	<-started
	// Sharing the pack's lock, the fetch would wait until this ends.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, _, err := h.cache.fetch(ctx, key, key)
	close(release)
	if err != nil {
		t.Fatalf("fetch while a pack is made: %v", err)
	}
	l.Release()
	if err := <-packed; err != nil {
		t.Fatal(err)
	}
}
