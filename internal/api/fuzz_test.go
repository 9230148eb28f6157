package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzCreateBody sends arbitrary bodies to POST /v1/runs: the server never
// panics, and always answers JSON, a run (201) or an error object with a
// code and a one-line message (4xx).
func FuzzCreateBody(f *testing.F) {
	for _, seed := range []string{
		hello,
		`{"image":"a","command":["x"],"queue":"fast","max_retry":3,"task_timeout":"2h"}`,
		`{"from":"task:abc","command":["x"],"files":[{"path":"/f","content":"aGk=","mode":"0755"}]}`,
		`{"tenant":"globex","image":"a","command":["x"]}`,
		`{"image":"a","command":["x"],"env":{"A":"b"},"timeout":90,"artifacts":["/o"]}`,
		`{"from":"/x.smolmachine","command":["x"]}`,
		`null`, `[]`, `{}`, `{"queue":null}`, `{"max_retry":1e400}`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	a := newAPI(f, nil, func(c *Config) { c.MaxOpenRuns = -1 })
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/v1/runs", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tokAcme)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		a.s.ServeHTTP(w, req)
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%d with Content-Type %q: %q", w.Code, ct, w.Body)
		}
		switch {
		case w.Code == http.StatusCreated:
			var run Run
			if err := json.Unmarshal(w.Body.Bytes(), &run); err != nil || run.ID == "" || run.Tenant != "acme" {
				t.Fatalf("201 without a run of acme: %q", w.Body)
			}
		case w.Code >= 400 && w.Code < 500:
			var e struct{ Error *Error }
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == nil || e.Error.Code == "" || e.Error.Message == "" || bytes.ContainsRune([]byte(e.Error.Message), '\n') {
				t.Fatalf("%d without a one-line error object: %q", w.Code, w.Body)
			}
		default:
			t.Fatalf("status %d: %q", w.Code, w.Body)
		}
	})
}
