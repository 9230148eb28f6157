package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bot-bottle/bottleq/internal/teststore"
)

// backend is a Store under test, with a view of where its bytes lie on
// disk so a test can age or corrupt an object underneath it.
type backend struct {
	Store
	// file returns the file holding key's bytes.
	file func(key string) string
	// root is the directory holding every file of the store, temporary
	// ones included.
	root string
	// srv is the S3 server, nil for the file store.
	srv *teststore.Server
	// prefix is the s3:// URL's key prefix.
	prefix string
}

// eachBackend runs fn against a fresh file store and a fresh s3 store on a
// real versitygw (the s3 run skips, outside CI, where versitygw cannot be
// installed).
func eachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Helper()
	t.Run("file", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		s, err := openFile(dir)
		if err != nil {
			t.Fatal(err)
		}
		fn(t, backend{Store: s, root: dir, file: func(k string) string { return filepath.Join(dir, filepath.FromSlash(k)) }})
	})
	t.Run("s3", func(t *testing.T) {
		t.Parallel()
		srv := teststore.Start(t)
		const prefix = "pool/"
		s, err := open(context.Background(), srv.URL(prefix), creds(srv))
		if err != nil {
			t.Fatal(err)
		}
		root := filepath.Join(srv.Dir, srv.Bucket)
		fn(t, backend{Store: s, root: root, srv: srv, prefix: prefix,
			file: func(k string) string { return filepath.Join(root, prefix, filepath.FromSlash(k)) }})
	})
}

// creds hands the server's keys to the AWS config chain directly, and keeps
// the chain from reading this machine's AWS files, so tests can run in
// parallel without setting the environment.
func creds(srv *teststore.Server) []awsLoadOption {
	return credsOf(srv.AccessKey, srv.SecretKey)
}

func credsOf(access, secret string) []awsLoadOption {
	return []awsLoadOption{
		config.WithCredentialsProvider(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: access, SecretAccessKey: secret, Source: "test"}, nil
		})),
		config.WithSharedConfigFiles([]string{}),
		config.WithSharedCredentialsFiles([]string{}),
	}
}

// gen is n deterministic pseudo-random bytes from seed, made as they are
// read, never held in memory.
func gen(seed uint64, n int64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	return io.LimitReader(rand.NewChaCha8(s), n)
}

func sumOf(t testing.TB, r io.Reader) (string, int64) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// onlyReader hides every method but Read (an os.File's Seek, say).
type onlyReader struct{ io.Reader }

// failingReader returns n bytes of r, then err: a producer that died.
type failingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

// readAll reads the object under key to its end, returning its digest.
func readAll(t testing.TB, s Store, key string) (string, int64, Object, error) {
	t.Helper()
	rc, obj, err := s.Get(context.Background(), key)
	if err != nil {
		return "", 0, obj, err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	return hex.EncodeToString(h.Sum(nil)), n, obj, err
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		const mib = 1 << 20
		cases := []struct {
			name     string
			size     int64
			seekable bool // pass an *os.File
			digest   bool // pass PutOptions.SHA256
		}{
			{"empty", 0, false, false},
			{"one byte", 1, false, false},
			{"small stream", 100 << 10, false, false},
			{"small stream with digest", 100 << 10, false, true},
			{"spooled stream", 9 * mib, false, false},
			{"file over the multipart threshold", 17 * mib, true, false},
			{"stream with digest over the threshold", 17 * mib, false, true},
		}
		for i, tc := range cases {
			key := fmt.Sprintf("rt/%02d/%s", i, strings.ReplaceAll(tc.name, " ", "-"))
			want, _ := sumOf(t, gen(uint64(i), tc.size))
			var r io.Reader = onlyReader{gen(uint64(i), tc.size)}
			if tc.seekable {
				f, err := os.CreateTemp(t.TempDir(), "src")
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(f, gen(uint64(i), tc.size))
				f.Seek(0, io.SeekStart)
				defer f.Close()
				r = f
			}
			var opts PutOptions
			if tc.digest {
				opts.SHA256 = want
			}
			obj, err := b.Put(ctx, key, r, opts)
			if err != nil {
				t.Fatalf("%s: Put: %v", tc.name, err)
			}
			if obj.Key != key || obj.Size != tc.size || obj.SHA256 != want || obj.Modified.IsZero() {
				t.Errorf("%s: Put = %+v, want key %s, size %d, sha256 %s", tc.name, obj, key, tc.size, want)
			}
			got, n, gobj, err := readAll(t, b, key)
			if err != nil || got != want || n != tc.size {
				t.Errorf("%s: Get read %d bytes with sha256 %s, err %v; want %d bytes with %s", tc.name, n, got, err, tc.size, want)
			}
			st, err := b.Stat(ctx, key)
			if err != nil || st != gobj || st.SHA256 != want || st.Size != tc.size {
				t.Errorf("%s: Stat = %+v, %v; Get said %+v", tc.name, st, err, gobj)
			}
			if b.srv == nil {
				fi, err := os.Stat(b.file(key))
				if err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("%s: stored file mode %v, %v; want 0600", tc.name, fi.Mode(), err)
				}
				di, err := os.Stat(filepath.Dir(b.file(key)))
				if err != nil || di.Mode().Perm() != 0o700 {
					t.Errorf("%s: directory mode %v, %v; want 0700", tc.name, di.Mode(), err)
				}
			}
		}

		// An *os.File that cannot seek (a pipe) is read as a stream.
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		go func() { io.Copy(pw, gen(50, 200<<10)); pw.Close() }()
		want, _ := sumOf(t, gen(50, 200<<10))
		if obj, err := b.Put(ctx, "pipe", pr, PutOptions{}); err != nil || obj.SHA256 != want {
			t.Errorf("Put from a pipe = %+v, %v; want sha256 %s", obj, err, want)
		}
		pr.Close()

		var listed []string
		err = b.List(ctx, "rt/0", func(o Object) error {
			if o.Size < 0 || o.Modified.IsZero() {
				t.Errorf("List gave %+v", o)
			}
			listed = append(listed, o.Key)
			return nil
		})
		sort.Strings(listed)
		if err != nil || len(listed) != len(cases) || listed[0] != "rt/00/empty" {
			t.Errorf("List(rt/0) = %v, %v; want the %d keys", listed, err, len(cases))
		}
		stop := errors.New("stop")
		if err := b.List(ctx, "", func(Object) error { return stop }); !errors.Is(err, stop) {
			t.Errorf("List did not return fn's error: %v", err)
		}

		// A taken key stays as it was.
		if _, err := b.Put(ctx, "rt/00/empty", strings.NewReader("other"), PutOptions{}); !errors.Is(err, ErrExists) {
			t.Errorf("Put over a key = %v, want ErrExists", err)
		}
		if err := b.Delete(ctx, "rt/01/one-byte"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Stat(ctx, "rt/01/one-byte"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat after Delete = %v, want ErrNotFound", err)
		}
		if _, _, err := b.Get(ctx, "rt/01/one-byte"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get after Delete = %v, want ErrNotFound", err)
		}
		if err := b.Delete(ctx, "rt/01/one-byte"); err != nil {
			t.Errorf("Delete of a missing key = %v, want nil", err)
		}
		// The key is free again.
		if _, err := b.Put(ctx, "rt/01/one-byte", strings.NewReader("x"), PutOptions{}); err != nil {
			t.Errorf("Put after Delete: %v", err)
		}
		for _, k := range []string{"", "a/../b", "/abs", "dir/"} {
			if _, err := b.Put(ctx, k, strings.NewReader("x"), PutOptions{}); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("Put(%q) = %v, want ErrInvalidKey", k, err)
			}
		}
		if _, err := b.Put(ctx, "bad-digest-option", strings.NewReader("x"), PutOptions{SHA256: "ABC"}); err == nil {
			t.Error("Put accepted a malformed PutOptions.SHA256")
		}
	})
}

func TestPutCreateOnlyRace(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		for _, size := range []int64{64 << 10, 17 << 20} { // one PutObject; a multipart upload
			t.Run(fmt.Sprint(size), func(t *testing.T) {
				key := fmt.Sprintf("race/%d", size)
				const n = 10
				var (
					wg    sync.WaitGroup
					start = make(chan struct{})
					errs  = make([]error, n)
					sums  = make([]string, n)
				)
				for i := range n {
					sums[i], _ = sumOf(t, gen(uint64(100+i), size))
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						_, errs[i] = b.Put(context.Background(), key, gen(uint64(100+i), size), PutOptions{SHA256: sums[i]})
					}()
				}
				close(start)
				wg.Wait()
				winner := -1
				for i, err := range errs {
					switch {
					case err == nil && winner >= 0:
						t.Fatalf("Puts %d and %d both succeeded", winner, i)
					case err == nil:
						winner = i
					case !errors.Is(err, ErrExists):
						t.Errorf("Put %d: %v, want ErrExists", i, err)
					}
				}
				if winner < 0 {
					t.Fatalf("no Put succeeded: %v", errs)
				}
				got, _, obj, err := readAll(t, b, key)
				if err != nil || got != sums[winner] || obj.SHA256 != sums[winner] {
					t.Errorf("Get gives sha256 %s (metadata %s), %v; the winner wrote %s", got, obj.SHA256, err, sums[winner])
				}
			})
		}
	})
}

func TestLargeStream(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		const size = 64 << 20
		want, _ := sumOf(t, gen(7, size))
		t0 := time.Now()
		obj, err := b.Put(ctx, "large/64MiB", gen(7, size), PutOptions{SHA256: want})
		if err != nil {
			t.Fatal(err)
		}
		up := time.Since(t0)
		if obj.Size != size || obj.SHA256 != want {
			t.Fatalf("Put = %+v, want %d bytes with sha256 %s", obj, size, want)
		}
		t0 = time.Now()
		got, n, _, err := readAll(t, b, "large/64MiB")
		if err != nil || got != want || n != size {
			t.Fatalf("Get read %d bytes with sha256 %s, %v; want %s", n, got, err, want)
		}
		t.Logf("64 MiB: put %v, get %v", up.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
		if b.srv != nil {
			// A multipart upload's ETag ends in -PARTS: the stream was sent
			// in parts, not buffered into one PutObject.
			h, err := b.srv.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.srv.Bucket), Key: aws.String(b.prefix + "large/64MiB")})
			if err != nil {
				t.Fatal(err)
			}
			if etag := aws.ToString(h.ETag); !strings.Contains(etag, "-") {
				t.Errorf("ETag %s is not a multipart upload's", etag)
			}
		}
	})
}

// TestPutFailsCleanly: a Put whose reader fails part-way, or whose bytes do
// not match the digest given, leaves nothing visible and nothing behind.
func TestPutFailsCleanly(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		died := errors.New("producer died")
		const mib = 1 << 20
		wrong := strings.Repeat("0", 64)
		cases := []struct {
			name  string
			r     io.Reader
			opts  PutOptions
			wantE error
		}{
			{"small stream dies", &failingReader{gen(1, mib), 512 << 10, died}, PutOptions{}, died},
			{"spooled stream dies", &failingReader{gen(1, 20*mib), 12 * mib, died}, PutOptions{}, died},
			{"multipart stream dies", &failingReader{gen(1, 40*mib), 30 * mib, died}, PutOptions{SHA256: wrong}, died},
			{"small stream, wrong digest", gen(2, mib), PutOptions{SHA256: wrong}, ErrDigestMismatch},
			{"multipart stream, wrong digest", gen(2, 20*mib), PutOptions{SHA256: wrong}, ErrDigestMismatch},
		}
		for i, tc := range cases {
			key := fmt.Sprintf("fail/%d", i)
			if _, err := b.Put(ctx, key, tc.r, tc.opts); !errors.Is(err, tc.wantE) {
				t.Errorf("%s: Put = %v, want %v", tc.name, err, tc.wantE)
			}
			if strings.Contains(fmt.Sprint(tc.wantE), "\n") {
				t.Errorf("%s: error is not one line", tc.name)
			}
			if _, err := b.Stat(ctx, key); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: Stat after the failed Put = %v, want ErrNotFound", tc.name, err)
			}
		}
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := b.Put(cancelled, "fail/cancelled", gen(3, 20*mib), PutOptions{}); !errors.Is(err, context.Canceled) {
			t.Errorf("Put with a cancelled context = %v, want context.Canceled", err)
		}
		if err := b.List(ctx, "", func(o Object) error { return fmt.Errorf("List shows %s", o.Key) }); err != nil {
			t.Error(err)
		}
		assertNothingLeft(t, b)
	})
}

// assertNothingLeft checks that no file (temporary or not) and no
// multipart upload remains in the store.
func assertNothingLeft(t *testing.T, b backend) {
	t.Helper()
	filepath.WalkDir(b.root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("left behind: %s", p)
		}
		return nil
	})
	if b.srv != nil {
		out, err := b.srv.Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(b.srv.Bucket)})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range out.Uploads {
			t.Errorf("multipart upload left behind: %s", aws.ToString(u.Key))
		}
	}
}

// TestGetDetectsCorruption: bytes changed on the server's disk after the
// upload make the read that reaches the end fail with ErrDigestMismatch.
func TestGetDetectsCorruption(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		if _, err := b.Put(ctx, "c/obj", gen(4, 300<<10), PutOptions{}); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(b.file("c/obj"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("rot"), 1000)
		f.Close()
		if _, _, _, err := readAll(t, b, "c/obj"); !errors.Is(err, ErrDigestMismatch) {
			t.Errorf("reading a corrupted object = %v, want ErrDigestMismatch", err)
		}
	})
}

func TestExpire(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		for _, k := range []string{"commits/a/old1", "commits/a/old2", "commits/a/new", "commits/b/old", "artifacts/a/old"} {
			if _, err := b.Put(ctx, k, strings.NewReader(k), PutOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		// Age objects on the server's disk: both stores take Modified from
		// the file's mtime.
		week := time.Now().Add(-7 * 24 * time.Hour)
		for _, k := range []string{"commits/a/old1", "commits/a/old2", "commits/b/old", "artifacts/a/old"} {
			if err := os.Chtimes(b.file(k), week, week); err != nil {
				t.Fatal(err)
			}
		}
		cutoff := time.Now().Add(-24 * time.Hour)
		n, err := b.Expire(ctx, "commits/a/", cutoff)
		if err != nil || n != 2 {
			t.Fatalf("Expire(commits/a/) = %d, %v; want 2", n, err)
		}
		var left []string
		b.List(ctx, "", func(o Object) error { left = append(left, o.Key); return nil })
		sort.Strings(left)
		if want := "artifacts/a/old commits/a/new commits/b/old"; strings.Join(left, " ") != want {
			t.Errorf("after Expire: %v, want %s", left, want)
		}
		if n, err := b.Expire(ctx, "commits/", cutoff); err != nil || n != 1 {
			t.Errorf("Expire(commits/) = %d, %v; want 1", n, err)
		}
		if n, err := b.Expire(ctx, "", time.Now().Add(time.Hour)); err != nil || n != 2 {
			t.Errorf("Expire of everything = %d, %v; want 2", n, err)
		}
		assertNothingLeft(t, b)
	})
}
