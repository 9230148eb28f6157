package api

import (
	"bytes"
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

// streamSource is an ArtifactSource that streams (no Seek), as a
// store-backed source would: the file at the artifact's host path made
// long (long), then changed as mode says, whatever the result recorded.
type streamSource struct{ mode string }

// long repeats b past 100 KiB, to span several chunks.
func long(b []byte) []byte { return []byte(strings.Repeat(string(b), 1+(100<<10)/len(b))) }

func (s streamSource) Open(_ context.Context, _, _ string, a tasks.Artifact) (io.ReadCloser, error) {
	b, err := os.ReadFile(a.HostPath)
	if err != nil {
		return nil, err
	}
	b = long(b)
	switch s.mode {
	case "other bytes":
		b[len(b)-1] ^= 1
	case "short":
		b = b[:len(b)-1]
	case "long":
		b = append(b, '!')
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// TestStreamedArtifactVerified: an artifact from a source that cannot
// seek is checked as it streams, and one that does not match its result
// never arrives whole.
func TestStreamedArtifactVerified(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"matches", "other bytes", "short", "long"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			a := newAPI(t, nil, func(c *Config) { c.Artifacts = streamSource{mode} })
			a.serve(nil)
			run := a.create(tokAcme, `{"image":"a","command":["x"],"artifacts":["/out/big.bin"]}`)
			done := a.waitState(tokAcme, run.ID, StateCompleted)
			var res tasks.Result
			json.Unmarshal(done.Result, &res)
			base, _ := os.ReadFile(res.Artifacts[0].HostPath)
			want := long(base)
			sum := sha256.Sum256(want)
			// The result describes the long file, as a worker that stored
			// it would have written.
			res.Artifacts[0].Size, res.Artifacts[0].SHA256 = int64(len(want)), hex.EncodeToString(sum[:])
			b, _ := json.Marshal(res)
			if err := a.s.rdb.HSet(t.Context(), "asynq:{default}:t:"+run.ID, "result", b).Err(); err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest("GET", a.url+"/v1/runs/"+run.ID+"/artifacts/0", nil)
			req.Header.Set("Authorization", "Bearer "+tokAcme)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, rerr := io.ReadAll(resp.Body)
			if mode == "matches" {
				if rerr != nil || !bytes.Equal(got, want) || resp.Header.Get("X-Checksum-Sha256") != hex.EncodeToString(sum[:]) {
					t.Errorf("%d bytes, %v; want the %d bytes", len(got), rerr, len(want))
				}
				return
			}
			if rerr == nil || len(got) >= len(want) {
				t.Errorf("a bad source delivered %d of %d bytes without an error (%v)", len(got), len(want), rerr)
			}
		})
	}
}
