package api

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bot-bottle/bottleq/internal/teststore"
	"github.com/bot-bottle/bottleq/internal/testworker"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// storeBackend is a store the stand-in keeps artifacts in, with a way to
// change an object's bytes behind the store's back (same length, the
// recorded digest kept) and, where it can be, to make it unreachable.
type storeBackend struct {
	st     store.Store
	tamper func(t *testing.T, key string)
	stop   func()
}

// checkStoreArtifacts runs the artifact endpoint's store cases against b.
func checkStoreArtifacts(t *testing.T, b storeBackend) {
	a := newAPI(t, nil, func(c *Config) {
		c.Artifacts = StoreArtifacts{Store: b.st, Local: LocalArtifacts{DataDir: t.TempDir()}}
	})
	a.serveStore(b.st)
	run := a.create(tokAcme, `{"image":"a","command":["x"],"artifacts":["/out/report.txt","/out/missing.txt","/out/c.txt","/out/d.txt"]}`)
	done := a.waitState(tokAcme, run.ID, StateCompleted)
	var res tasks.Result
	if err := json.Unmarshal(done.Result, &res); err != nil || len(res.Artifacts) != 4 {
		t.Fatalf("result %s", done.Result)
	}
	art := res.Artifacts[0]
	if art.Key != testworker.ArtifactKey("acme", run.ID, 0) || art.HostPath != "" {
		t.Fatalf("artifact 0 = %+v, want it in the store only", art)
	}
	want := fmt.Sprintf("artifact 0 of run %s: /out/report.txt\n", run.ID)
	sum := sha256.Sum256([]byte(want))

	r := a.do("GET", "/v1/runs/"+run.ID+"/artifacts/0", tokAcme, "")
	if r.status != 200 || string(r.body) != want {
		t.Fatalf("artifact 0: %d %q, want %q", r.status, r.body, want)
	}
	for k, v := range map[string]string{
		"X-Checksum-Sha256":   hex.EncodeToString(sum[:]),
		"Digest":              "sha-256=" + base64.StdEncoding.EncodeToString(sum[:]),
		"Content-Type":        "application/octet-stream",
		"Content-Disposition": "attachment; filename=report.txt",
		"Content-Length":      fmt.Sprint(len(want)),
	} {
		if got := r.header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}

	// Another tenant's run is no run of globex's: the same 404 as a
	// missing one, and nothing of the file.
	r = a.do("GET", "/v1/runs/"+run.ID+"/artifacts/0", tokGlobex, "")
	if e := r.apiError(t); r.status != 404 || e.Code != CodeNotFound || strings.Contains(string(r.body), "artifact 0 of run") {
		t.Errorf("globex reading acme's artifact: %d %s", r.status, r.body)
	}
	missing := a.do("GET", "/v1/runs/no-such-run/artifacts/0", tokGlobex, "")
	if e, m := r.apiError(t), missing.apiError(t); r.status != missing.status || e.Code != m.Code || e.Field != m.Field ||
		strings.ReplaceAll(e.Message, run.ID, "ID") != strings.ReplaceAll(m.Message, "no-such-run", "ID") {
		t.Errorf("another tenant's run answers %s, a missing one %s", r.body, missing.body)
	}

	// A result naming a key in another tenant's part of the store (a
	// worker's bug, or a forged result) is never served.
	other, err := testworker.PutArtifact(context.Background(), b.st, "globex", "g1", 0, "/out/secret.txt", []byte("globex's"))
	if err != nil {
		t.Fatal(err)
	}
	res.Artifacts[3] = other
	setResult(t, a, run.ID, res)
	r = a.do("GET", "/v1/runs/"+run.ID+"/artifacts/3", tokAcme, "")
	if e := r.apiError(t); r.status != 404 || e.Code != CodeUnavailable || !strings.Contains(e.Message, "not in tenant acme's part of the store") {
		t.Errorf("a key of globex's in acme's result: %d %s", r.status, r.body)
	}

	// Changed in the store since the worker recorded it: never whole.
	b.tamper(t, res.Artifacts[2].Key)
	if body, rerr := get(t, a, run.ID, 2); rerr == nil || len(body) >= int(res.Artifacts[2].Size) {
		t.Errorf("a changed object: %d bytes of %d, %v; want a cut body", len(body), res.Artifacts[2].Size, rerr)
	}
	// Its size differs from the result's: refused before any byte.
	res.Artifacts[2].Size++
	setResult(t, a, run.ID, res)
	if r := a.do("GET", "/v1/runs/"+run.ID+"/artifacts/2", tokAcme, ""); r.status != 500 || strings.Contains(string(r.body), "artifact 2 of run") {
		t.Errorf("an object of another size: %d %s", r.status, r.body)
	}

	// Gone from the store (its retention ran out): unavailable.
	if err := b.st.Delete(context.Background(), art.Key); err != nil {
		t.Fatal(err)
	}
	r = a.do("GET", "/v1/runs/"+run.ID+"/artifacts/0", tokAcme, "")
	if e := r.apiError(t); r.status != 404 || e.Code != CodeUnavailable || !strings.Contains(e.Message, "no longer in the store") {
		t.Errorf("a deleted object: %d %s", r.status, r.body)
	}

	if b.stop != nil {
		b.stop()
		r = a.do("GET", "/v1/runs/"+run.ID+"/artifacts/2", tokAcme, "")
		if e := r.apiError(t); r.status != 503 || e.Code != CodeUnavailable || r.header.Get("Retry-After") == "" || !strings.Contains(e.Message, "the store is unreachable") {
			t.Errorf("store unreachable: %d %s (Retry-After %q)", r.status, r.body, r.header.Get("Retry-After"))
		}
	}
}

// setResult replaces run id's result in Redis, as a worker writes it.
func setResult(t *testing.T, a *testAPI, id string, res tasks.Result) {
	t.Helper()
	b, _ := json.Marshal(res)
	if err := a.s.rdb.HSet(t.Context(), "asynq:{default}:t:"+id, "result", b).Err(); err != nil {
		t.Fatal(err)
	}
}

// get reads artifact n of run id to its end, as acme.
func get(t *testing.T, a *testAPI, id string, n int) ([]byte, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/v1/runs/%s/artifacts/%d", a.url, id, n), nil)
	req.Header.Set("Authorization", "Bearer "+tokAcme)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// overwriteFirst rewrites p's first byte in place, keeping its extended
// attributes, where both stores record the digest.
func overwriteFirst(t *testing.T, p string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("!"), 0); err != nil {
		t.Fatal(err)
	}
}

// TestArtifactsFromFileStore: GET /v1/runs/{id}/artifacts/{n} streams an
// artifact from a file:// store with its SHA-256 in headers; another
// tenant's run, a key of another tenant's, a changed or deleted object are
// refused.
func TestArtifactsFromFileStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := store.Open(context.Background(), "file://"+dir)
	if err != nil {
		t.Fatal(err)
	}
	checkStoreArtifacts(t, storeBackend{st: st, tamper: func(t *testing.T, key string) {
		overwriteFirst(t, filepath.Join(dir, filepath.FromSlash(key)))
	}})
}

// TestArtifactsFromS3Store is TestArtifactsFromFileStore on a real S3
// server (versitygw on loopback), which is then stopped: 503. It sets the
// environment for the AWS credential chain, so it does not run in
// parallel.
func TestArtifactsFromS3Store(t *testing.T) {
	srv := teststore.Start(t)
	srv.Setenv(t)
	st, err := store.Open(context.Background(), srv.URL("pool"))
	if err != nil {
		t.Fatal(err)
	}
	checkStoreArtifacts(t, storeBackend{st: st, stop: srv.Stop, tamper: func(t *testing.T, key string) {
		overwriteFirst(t, filepath.Join(srv.Dir, srv.Bucket, "pool", filepath.FromSlash(key)))
	}})
}

// TestStoreArtifactsFallback: a result that names no store key (a worker
// without a store) is read from the data directory through Local, and so
// is one with a key and a host path when there is no store; without Local,
// or without a store for a key alone, it is unavailable.
func TestStoreArtifactsFallback(t *testing.T) {
	t.Parallel()
	// The default source reads the stand-in's data directory: the store
	// source hands it what has no key.
	a := newAPI(t, nil, func(c *Config) { c.Artifacts = StoreArtifacts{Local: c.Artifacts} })
	a.serve(nil)
	run := a.create(tokAcme, `{"image":"a","command":["x"],"artifacts":["/out/report.txt"]}`)
	done := a.waitState(tokAcme, run.ID, StateCompleted)
	var res tasks.Result
	if err := json.Unmarshal(done.Result, &res); err != nil || len(res.Artifacts) != 1 || res.Artifacts[0].Key != "" {
		t.Fatalf("result %s", done.Result)
	}
	if r := a.do("GET", "/v1/runs/"+run.ID+"/artifacts/0", tokAcme, ""); r.status != 200 || !strings.HasPrefix(string(r.body), "artifact 0 of run") {
		t.Errorf("from the data directory: %d %s", r.status, r.body)
	}
	keyed := res.Artifacts[0]
	keyed.Key = testworker.ArtifactKey("acme", run.ID, 0)
	rc, err := StoreArtifacts{Local: LocalArtifacts{DataDir: a.dataDir}}.Open(context.Background(), "acme", run.ID, keyed)
	if err != nil {
		t.Fatalf("a key and a host path, no store: %v", err)
	}
	if b, _ := io.ReadAll(rc); !strings.HasPrefix(string(b), "artifact 0 of run") {
		t.Errorf("read %q", b)
	}
	rc.Close()
	for name, src := range map[string]StoreArtifacts{
		"no Local": {},
		"no store": {Local: LocalArtifacts{DataDir: a.dataDir}},
	} {
		art := res.Artifacts[0]
		if name == "no store" {
			art.Key, art.HostPath = testworker.ArtifactKey("acme", run.ID, 0), ""
		}
		if rc, err := src.Open(context.Background(), "acme", run.ID, art); !errors.Is(err, ErrArtifactUnavailable) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("%s: %v, want it unavailable", name, err)
		}
	}
}
