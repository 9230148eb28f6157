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
	"os"
	"strings"
	"testing"

	"github.com/bot-bottle/bottleq/tasks"
)

// TestArtifacts: an artifact streams with its SHA-256 in headers, byte
// ranges too; one that was not kept, is not there, is not this tenant's
// data directory's, or does not match its result is refused.
func TestArtifacts(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, nil)
	a.serve(nil)
	run := a.create(tokAcme, `{"image":"a","command":["x"],"artifacts":["/out/report.txt","/out/missing.txt","/out/c.txt"]}`)
	done := a.waitState(tokAcme, run.ID, StateCompleted)
	var res tasks.Result
	if err := json.Unmarshal(done.Result, &res); err != nil || len(res.Artifacts) != 3 {
		t.Fatalf("result %s", done.Result)
	}
	want, err := os.ReadFile(res.Artifacts[0].HostPath)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(want)

	r := a.do("GET", "/v1/runs/"+run.ID+"/artifacts/0", tokAcme, "")
	h := r.header
	if r.status != 200 || string(r.body) != string(want) {
		t.Fatalf("artifact 0: %d %q, want %q", r.status, r.body, want)
	}
	for k, v := range map[string]string{
		"X-Checksum-Sha256":   hex.EncodeToString(sum[:]),
		"Digest":              "sha-256=" + base64.StdEncoding.EncodeToString(sum[:]),
		"Repr-Digest":         "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":",
		"Content-Type":        "application/octet-stream",
		"Content-Disposition": "attachment; filename=report.txt",
		"Content-Length":      fmt.Sprint(len(want)),
	} {
		if h.Get(k) != v {
			t.Errorf("%s: %q, want %q", k, h.Get(k), v)
		}
	}
	if r := a.do("GET", "/v1/runs/"+run.ID+"/artifacts/0", tokAcme, "", "Range: bytes=2-5"); r.status != 206 || string(r.body) != string(want[2:6]) {
		t.Errorf("a range: %d %q", r.status, r.body)
	}

	for _, tt := range []struct {
		name, n       string
		status        int
		code, message string
	}{
		{"not kept", "1", 404, CodeNotFound, "artifact 1 (/out/missing.txt) was not kept: missing"},
		{"past the end", "3", 404, CodeNotFound, "has 3 artifacts: no artifact 3"},
		{"not a number", "x", 400, CodeInvalid, "n: must be an artifact's index"},
		{"negative", "-1", 400, CodeInvalid, "n: must be an artifact's index"},
	} {
		r := a.do("GET", "/v1/runs/"+run.ID+"/artifacts/"+tt.n, tokAcme, "")
		if e := r.apiError(t); r.status != tt.status || e.Code != tt.code || !strings.Contains(e.Message, tt.message) {
			t.Errorf("%s: %d %+v", tt.name, r.status, e)
		}
	}

	// Changed on disk since the worker recorded it: never served.
	if err := os.WriteFile(res.Artifacts[2].HostPath, []byte("tampered"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := a.do("GET", "/v1/runs/"+run.ID+"/artifacts/2", tokAcme, ""); r.status != 500 || strings.Contains(string(r.body), "tampered") {
		t.Errorf("a changed artifact: %d %s", r.status, r.body)
	}
	// Gone from this host (another host holds it): unavailable.
	os.Remove(res.Artifacts[2].HostPath)
	r = a.do("GET", "/v1/runs/"+run.ID+"/artifacts/2", tokAcme, "")
	if e := r.apiError(t); r.status != 404 || e.Code != CodeUnavailable || !strings.Contains(e.Message, "host stand-in holds it") {
		t.Errorf("an artifact not here: %d %s", r.status, r.body)
	}
}

// TestLocalArtifactsConfined: LocalArtifacts opens only files in the
// tenant's part of the data directory, whatever a result says.
func TestLocalArtifactsConfined(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l := LocalArtifacts{DataDir: dir}
	other := dir + "/artifacts/globex/r1/0-a.txt"
	os.MkdirAll(dir+"/artifacts/globex/r1", 0o700)
	os.WriteFile(other, []byte("globex's"), 0o600)
	sum := sha256.Sum256([]byte("globex's"))
	a := tasks.Artifact{Path: "/a.txt", Size: 8, SHA256: hex.EncodeToString(sum[:])}
	for _, p := range []string{other, "/etc/passwd", dir + "/artifacts/acme/../globex/r1/0-a.txt", "relative/0-a.txt", dir + "/artifacts/acme"} {
		a.HostPath = p
		if rc, err := l.Open(context.Background(), "acme", "r1", a); !errors.Is(err, ErrArtifactUnavailable) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("acme opening %s: %v", p, err)
		}
	}
	a.HostPath = other
	rc, err := l.Open(context.Background(), "globex", "r1", a)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if b, _ := io.ReadAll(rc); string(b) != "globex's" {
		t.Errorf("read %q", b)
	}
}

// TestArtifactNotReady: a run that has not copied its artifacts out yet
// answers 409.
func TestArtifactNotReady(t *testing.T) {
	t.Parallel()
	a := newAPI(t, nil, nil)
	run := a.create(tokAcme, `{"image":"a","command":["x"],"artifacts":["/out/a"]}`)
	r := a.do("GET", "/v1/runs/"+run.ID+"/artifacts/0", tokAcme, "")
	if e := r.apiError(t); r.status != 409 || e.Code != CodeNotReady {
		t.Errorf("%d %s", r.status, r.body)
	}
}
