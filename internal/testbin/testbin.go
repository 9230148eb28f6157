// Package testbin builds the project's commands for tests that run them as
// real processes, the way func-e's tests build their fake envoy: once per
// test binary, in TestMain, passed around by path and never put on PATH.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// Dir holds built binaries. It is removed by Close.
type Dir struct{ path string }

// New makes an empty directory for binaries.
func New() (*Dir, error) {
	p, err := os.MkdirTemp("", "bottleq-bin-")
	if err != nil {
		return nil, err
	}
	return &Dir{path: p}, nil
}

// Build compiles the main package pkg (an import path such as
// "github.com/bot-bottle/bottleq/cmd/smolvm-sim") into the directory as
// name, and returns its path. It builds as the Dockerfile does, static
// (CGO_ENABLED=0): linked against libc, the simulator (archive/tar pulls in
// os/user, and with it cgo) takes about a millisecond longer to start, on
// every one of the thousands of smolvm calls the tests make.
func (d *Dir) Build(pkg, name string) (string, error) {
	out := filepath.Join(d.path, name)
	cmd := exec.Command(goBin(), "build", "-o", out, pkg)
	cmd.Env = StaticEnv(os.Environ())
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return out, nil
}

// StaticEnv is env for a `go build` of a static binary: CGO_ENABLED=0, and
// -race (which needs cgo) taken out of GOFLAGS, where `GOFLAGS=-race go
// test` put it for the tests themselves.
func StaticEnv(env []string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "GOFLAGS="); ok {
			kv = "GOFLAGS=" + strings.Join(slices.DeleteFunc(strings.Fields(v), func(f string) bool {
				return f == "-race" || f == "--race" || f == "-race=true" || f == "--race=true"
			}), " ")
		}
		out = append(out, kv)
	}
	return append(out, "CGO_ENABLED=0")
}

// Path returns the directory.
func (d *Dir) Path() string { return d.path }

// Close removes the directory and its binaries.
func (d *Dir) Close() error { return os.RemoveAll(d.path) }

// goBin is the go command that runs the tests: `go test` puts its GOROOT
// in the environment.
func goBin() string {
	if root := os.Getenv("GOROOT"); root != "" {
		if p := filepath.Join(root, "bin", "go"); fileExists(p) {
			return p
		}
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Main builds the binaries a test package needs, runs its tests and cleans
// up; use it as the body of TestMain. build receives the directory and
// stores the paths it needs.
func Main(run func() int, build func(*Dir) error) int {
	d, err := New()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbin:", err)
		return 1
	}
	defer d.Close()
	if err := build(d); err != nil {
		fmt.Fprintln(os.Stderr, "testbin:", err)
		return 1
	}
	return run()
}
