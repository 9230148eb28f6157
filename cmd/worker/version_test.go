package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/bot-bottle/bottleq/internal/cliflag"
)

// TestVersion: -version prints "worker VERSION (GO)" and exits 0 without
// starting anything.
func TestVersion(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	code := Run(context.Background(), []string{"-version"}, func(string) string { return "" }, &out)
	if want := cliflag.VersionLine("worker") + "\n"; code != 0 || out.String() != want {
		t.Errorf("exit %d, printed %q; want 0 and %q", code, out.String(), want)
	}
	if !strings.HasPrefix(out.String(), "worker ") {
		t.Errorf("the line does not start with the command's name: %q", out.String())
	}
}
