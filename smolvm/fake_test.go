package smolvm

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// fakeRun stands in for the process runner in unit tests: it records each
// argv and answers from a script of outcomes, repeating the last one.
type fakeRun struct {
	mu      sync.Mutex
	calls   [][]string
	answers []proc
	errs    []error
}

func (f *fakeRun) run(_ context.Context, argv []string, _ outputs) (proc, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, slices.Clone(argv))
	i := min(len(f.calls), len(f.answers)) - 1
	var p proc
	var err error
	if i >= 0 {
		p = f.answers[i]
		if i < len(f.errs) {
			err = f.errs[i]
		}
	}
	return p, err
}

func (f *fakeRun) argvs() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func ok(stdout string) proc { return proc{stdout: []byte(stdout)} }

func fail(code int, stderr string) proc { return proc{exitCode: code, stderr: []byte(stderr)} }

// fakeClient returns a client of release v whose processes are f.
func fakeClient(t *testing.T, v Version, f *fakeRun) *Client {
	t.Helper()
	return &Client{bin: "/bin/true", version: v, log: zerolog.Nop(), run: f.run}
}
