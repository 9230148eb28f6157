package enqueue_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/internal/teststore"
	"github.com/bot-bottle/bottleq/internal/testworker"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// fetchBackend is a store a worker wrote artifacts to, and how a test
// reaches behind it: tamper rewrites an object's bytes in place, keeping
// the digest the store recorded; putRaw stores an object another program
// wrote, with no digest recorded (nil where there is no such object); stop
// makes the store unreachable (nil where it cannot be).
type fetchBackend struct {
	st     store.Store
	tamper func(t *testing.T, key string)
	putRaw func(t *testing.T, key string, content []byte)
	stop   func()
}

// fetchCase is one FetchArtifact of checkFetch.
type fetchCase struct {
	name    string
	a       tasks.Artifact
	wantIs  error
	wantIn  string // in the error; "" for success
	replace bool   // dst exists before the fetch
}

// checkFetch runs FetchArtifact's cases against b.
func checkFetch(t *testing.T, b fetchBackend) {
	ctx := context.Background()
	content := bytes.Repeat([]byte("HELLO, STORE\n"), 1000)
	good, err := testworker.PutArtifact(ctx, b.st, "acme", "task-1", 0, "/workspace/out/A.txt", content)
	if err != nil {
		t.Fatal(err)
	}
	tampered, err := testworker.PutArtifact(ctx, b.st, "acme", "task-1", 1, "/workspace/out/B.txt", content)
	if err != nil {
		t.Fatal(err)
	}
	b.tamper(t, tampered.Key)

	const before = "the file dst held before\n"
	cases := []fetchCase{
		{name: "good", a: good},
		{name: "good over an existing file", a: good, replace: true},
		{name: "digest mismatch", a: with(good, func(a *tasks.Artifact) { a.SHA256 = strings.Repeat("0", 64) }), wantIs: store.ErrDigestMismatch, wantIn: "artifact /workspace/out/A.txt: SHA-256 mismatch", replace: true},
		{name: "size mismatch", a: with(good, func(a *tasks.Artifact) { a.Size-- }), wantIs: store.ErrDigestMismatch, wantIn: "the result says 12999 bytes"},
		{name: "bytes changed in the store", a: tampered, wantIs: store.ErrDigestMismatch, wantIn: "artifact /workspace/out/B.txt", replace: true},
		{name: "missing key", a: with(good, func(a *tasks.Artifact) { a.Key = "artifacts/acme/gone/0" }), wantIs: store.ErrNotFound, wantIn: "artifact /workspace/out/A.txt: store: get artifacts/acme/gone/0: object not found"},
		{name: "artifact with an error", a: tasks.Artifact{Path: "/workspace/out/none.txt", Error: tasks.ArtifactMissing}, wantIs: enqueue.ErrArtifactNotKept, wantIn: "artifact /workspace/out/none.txt was not kept: missing"},
		{name: "no key", a: with(good, func(a *tasks.Artifact) {
			a.Key, a.Host, a.HostPath = "", "host-a", "/var/lib/bottleq/artifacts/x/0-A.txt"
		}),
			wantIs: enqueue.ErrArtifactNotKept, wantIn: "artifact /workspace/out/A.txt has no store key in the result (the worker kept it on host host-a at /var/lib/bottleq/artifacts/x/0-A.txt only)"},
		{name: "no digest in the result", a: with(good, func(a *tasks.Artifact) { a.SHA256 = "" }), wantIn: "no valid size and SHA-256"},
	}
	if b.putRaw != nil {
		// The store knows no digest to check: FetchArtifact's own check of
		// the result's is all there is.
		other := bytes.Clone(content)
		other[0] = 'J'
		raw := with(good, func(a *tasks.Artifact) { a.Key = "artifacts/acme/raw/0" })
		b.putRaw(t, raw.Key, other)
		cases = append(cases, fetchCase{name: "other bytes, no digest in the store", a: raw, wantIs: store.ErrDigestMismatch, wantIn: "artifacts/acme/raw/0 gave 13000 bytes with sha256", replace: true})
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			dst := filepath.Join(dir, "A.txt")
			if tt.replace {
				if err := os.WriteFile(dst, []byte(before), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := enqueue.FetchArtifact(ctx, b.st, tt.a, dst)
			if tt.wantIn == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, content) {
					t.Errorf("dst holds %d bytes, %v; want the %d stored", len(got), err, len(content))
				}
				if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != enqueue.ArtifactMode {
					t.Errorf("dst: %v, %v; want mode %v", fi.Mode(), err, enqueue.ArtifactMode)
				}
				assertOnly(t, dir, "A.txt")
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantIn) || (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) {
				t.Errorf("err = %v; want one matching %v containing %q", err, tt.wantIs, tt.wantIn)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("err %q is not one line", err)
			}
			if tt.replace {
				if got, _ := os.ReadFile(dst); string(got) != before {
					t.Errorf("a failed fetch changed dst: %q", got)
				}
				assertOnly(t, dir, "A.txt")
			} else {
				assertOnly(t, dir)
			}
		})
	}

	t.Run("cancelled", func(t *testing.T) {
		dir := t.TempDir()
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := enqueue.FetchArtifact(cctx, b.st, good, filepath.Join(dir, "A.txt")); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		assertOnly(t, dir)
	})
	if b.stop != nil {
		t.Run("store unreachable", func(t *testing.T) {
			b.stop()
			dir := t.TempDir()
			err := enqueue.FetchArtifact(ctx, b.st, good, filepath.Join(dir, "A.txt"))
			if !errors.Is(err, store.ErrUnavailable) || !strings.HasPrefix(err.Error(), "artifact /workspace/out/A.txt: ") {
				t.Errorf("err = %v, want store.ErrUnavailable naming the artifact", err)
			}
			assertOnly(t, dir)
		})
	}
}

// with returns a changed by change.
func with(a tasks.Artifact, change func(*tasks.Artifact)) tasks.Artifact {
	change(&a)
	return a
}

// assertOnly fails unless dir holds exactly names.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, names) {
		t.Errorf("%s holds %q, want %q", dir, got, names)
	}
}

// overwrite rewrites the file p in place, same length, keeping its
// extended attributes (where both stores keep the digest).
func overwrite(t *testing.T, p string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("J"), 0); err != nil {
		t.Fatal(err)
	}
}

// TestFetchArtifactFile fetches artifacts from a file:// store, as a
// producer on the workers' host does.
func TestFetchArtifactFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := store.Open(context.Background(), "file://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	checkFetch(t, fetchBackend{st: st, tamper: func(t *testing.T, key string) { overwrite(t, filepath.Join(dir, filepath.FromSlash(key))) }})
}

// TestFetchArtifactS3 fetches artifacts from a real S3 server (versitygw
// on loopback), with credentials from the environment as a producer has
// them; then stops the server. It sets the environment, so it does not
// run in parallel.
func TestFetchArtifactS3(t *testing.T) {
	srv := teststore.Start(t)
	srv.Setenv(t)
	const prefix = "pool"
	st, err := store.Open(context.Background(), srv.URL(prefix))
	if err != nil {
		t.Fatal(err)
	}
	checkFetch(t, fetchBackend{st: st, stop: srv.Stop, tamper: func(t *testing.T, key string) {
		overwrite(t, filepath.Join(srv.Dir, srv.Bucket, prefix, filepath.FromSlash(key)))
	}, putRaw: func(t *testing.T, key string, content []byte) {
		_, err := srv.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(srv.Bucket), Key: aws.String(prefix + "/" + key), Body: bytes.NewReader(content)})
		if err != nil {
			t.Fatal(err)
		}
	}})
}

func TestArtifactFileNames(t *testing.T) {
	t.Parallel()
	kept := func(p string) tasks.Artifact { return tasks.Artifact{Path: p, Key: "k"} }
	arts := []tasks.Artifact{
		kept("/workspace/out/report.txt"),
		kept("/other/report.txt"),
		{Path: "/workspace/out/none.txt", Error: tasks.ArtifactMissing},
		kept("../x"),
		kept("/etc/passwd"),
		kept(".."),
		kept("/"),
		kept(""),
		kept("/w/a\nb"),
		kept("/w/" + strings.Repeat("n", 201)),
		kept("/w/1-report.txt"),
		kept("/third/report.txt"),
		kept("/w/x\\y"),
		kept("/w/dir/"),
	}
	want := []string{"report.txt", "1-report.txt", "", "x", "passwd", "artifact-5", "artifact-6", "artifact-7", "artifact-8", "artifact-9",
		"10-1-report.txt", "11-report.txt", "artifact-12", "dir"}
	got := enqueue.ArtifactFileNames(arts)
	if !slices.Equal(got, want) {
		t.Errorf("names:\n got %q\nwant %q", got, want)
	}
	// Beyond a second clash of the same base the index gets a count too.
	if got := enqueue.ArtifactFileNames([]tasks.Artifact{kept("/a/r"), kept("/b/0-r"), kept("/c/r")}); !slices.Equal(got, []string{"r", "0-r", "2-r"}) {
		t.Errorf("names = %q", got)
	}
	if got := enqueue.ArtifactFileNames([]tasks.Artifact{kept("/a/r"), kept("/b/1-r"), kept("/c/r"), kept("/d/r")}); !slices.Equal(got, []string{"r", "1-r", "2-r", "3-r"}) {
		t.Errorf("names = %q", got)
	}
	if got := enqueue.ArtifactFileNames([]tasks.Artifact{kept("/a/r"), kept("/b/1-r"), kept("/c/1-r")}); !slices.Equal(got, []string{"r", "1-r", "2-1-r"}) {
		t.Errorf("names = %q", got)
	}
}

// A producer on any machine saves a finished task's artifacts from the
// workers' store. Here a file:// store in a temporary directory stands in
// for the workers' (an s3:// URL reaches one over the network, with
// credentials from the standard AWS environment), and the artifact is put
// there as a worker would.
func ExampleFetchArtifact() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(ctx, "file://"+filepath.Join(dir, "store")) // the workers' -store URL
	if err != nil {
		log.Fatal(err)
	}
	a, err := testworker.PutArtifact(ctx, st, "acme", "pr-1234-fix", 0, "/workspace/out/report.txt", []byte("all green\n"))
	if err != nil {
		log.Fatal(err)
	}
	result := tasks.Result{Artifacts: []tasks.Artifact{a, {Path: "/workspace/out/none.txt", Error: tasks.ArtifactMissing}}} // out.Result, from Wait

	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		log.Fatal(err)
	}
	for i, name := range enqueue.ArtifactFileNames(result.Artifacts) {
		err := enqueue.FetchArtifact(ctx, st, result.Artifacts[i], filepath.Join(out, name))
		switch {
		case errors.Is(err, enqueue.ErrArtifactNotKept):
			fmt.Println(err)
		case err != nil:
			log.Fatal(err) // store.ErrNotFound past the workers' -retention
		default:
			b, _ := os.ReadFile(filepath.Join(out, name))
			fmt.Printf("%s: %q\n", name, b)
		}
	}
	// Output:
	// report.txt: "all green\n"
	// artifact /workspace/out/none.txt was not kept: missing
}
