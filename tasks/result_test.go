package tasks_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/bot-bottle/bottleq/tasks"
)

// TestResultWireFormat decodes results as builds wrote them (the worker
// writes compact JSON; the files are indented to be read) and checks that
// encoding them again gives the same bytes, egress record included.
// result-done.json and result-running.json predate tenants and must still
// decode; result-done-tenant.json pins the tenant field,
// result-cancelled.json the result of a task a user cancelled, and
// result-done-warm.json the warm pool's fields.
func TestResultWireFormat(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("testdata", "result-*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/result-*.json: %v", err)
	}
	for _, name := range files {
		t.Run(filepath.Base(name), func(t *testing.T) {
			t.Parallel()
			raw, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			var want bytes.Buffer
			if err := json.Compact(&want, raw); err != nil {
				t.Fatal(err)
			}
			dec := json.NewDecoder(bytes.NewReader(want.Bytes()))
			dec.DisallowUnknownFields()
			var r tasks.Result
			if err := dec.Decode(&r); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if r.Egress == nil {
				t.Fatalf("decoded result has no egress record")
			}
			got, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Errorf("re-encoded result differs:\n got %s\nwant %s", got, want.Bytes())
			}
		})
	}
}
