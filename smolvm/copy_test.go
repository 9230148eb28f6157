package smolvm

import (
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bot-bottle/bottleq/internal/validate"
)

// TestCopyArgv pins the pure argv builders of CopyIn and CopyOut in both
// dialects and on both sides of 1.9.3, the first release known to take `machine cp --mode`.
func TestCopyArgv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{"in 0.8.0", copyInArgv(v080, "vm1", "/h/a", "/g/a", 0o644), []string{"machine", "cp", "/h/a", "vm1:/g/a"}},
		{"in 1.0.1 ignores mode", copyInArgv(v101, "vm1", "/h/a", "/g/a", 0o755), []string{"machine", "cp", "/h/a", "vm1:/g/a"}},
		{"in 1.0.2", copyInArgv(v102, "vm1", "/h/a", "/g/a", 0o600), []string{"machine", "cp", "/h/a", "vm1:/g/a"}},
		{"in 1.9.2", copyInArgv(Version{1, 9, 2}, "vm1", "/h/a", "/g/a", 0o600), []string{"machine", "cp", "/h/a", "vm1:/g/a"}},
		{"in 1.9.3 mode before SRC DST", copyInArgv(v1_9_3, "vm1", "/h/a", "/g/a", 0o600), []string{"machine", "cp", "--mode", "0600", "/h/a", "vm1:/g/a"}},
		{"in 1.9.3 default mode", copyInArgv(v193, "vm1", "/h/a", "/g/a", 0o644), []string{"machine", "cp", "--mode", "0644", "/h/a", "vm1:/g/a"}},
		{"in 1.9.3 mode zero", copyInArgv(v193, "vm1", "/h/a", "/g/a", 0), []string{"machine", "cp", "--mode", "0000", "/h/a", "vm1:/g/a"}},
		{"out", copyOutArgv("vm1", "/g/out.txt", "/h/out"), []string{"machine", "cp", "vm1:/g/out.txt", "/h/out"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if !slices.Equal(tt.got, tt.want) {
				t.Errorf("argv:\n got %q\nwant %q", tt.got, tt.want)
			}
		})
	}
}

// TestCopyCalls: the methods run the builders' argv, and before 1.9.3 a mode
// other than 0644 costs a chmod exec after the copy.
func TestCopyCalls(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		v    Version
		call func(context.Context, *Client) error
		want [][]string
	}{
		{"in 1.9.3 any mode", v193, func(ctx context.Context, c *Client) error {
			return c.CopyIn(ctx, "vm1", "/h/run.sh", "/workspace/run.sh", 0o755)
		}, [][]string{{"machine", "cp", "--mode", "0755", "/h/run.sh", "vm1:/workspace/run.sh"}}},
		{"in 1.0.1 default mode", v101, func(ctx context.Context, c *Client) error {
			return c.CopyIn(ctx, "vm1", "/h/a.txt", "/workspace/a.txt", 0o644)
		}, [][]string{{"machine", "cp", "/h/a.txt", "vm1:/workspace/a.txt"}}},
		{"in 1.0.1 other mode chmods", v101, func(ctx context.Context, c *Client) error {
			return c.CopyIn(ctx, "vm1", "/h/run.sh", "/workspace/run.sh", 0o700)
		}, [][]string{
			{"machine", "cp", "/h/run.sh", "vm1:/workspace/run.sh"},
			{"machine", "exec", "--name", "vm1", "-w", "/workspace", "--timeout", "60s", "--", "chmod", "0700", "./run.sh"},
		}},
		{"out 1.0.1", v101, func(ctx context.Context, c *Client) error {
			return c.CopyOut(ctx, "vm1", "/workspace/out/A.txt", "/data/artifacts/k/.tmp-0")
		}, [][]string{{"machine", "cp", "vm1:/workspace/out/A.txt", "/data/artifacts/k/.tmp-0"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeRun{answers: []proc{ok("")}}
			if err := tt.call(context.Background(), fakeClient(t, tt.v, f)); err != nil {
				t.Fatalf("call: %v", err)
			}
			if got := f.argvs(); !slices.EqualFunc(got, tt.want, slices.Equal) {
				t.Errorf("argv:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestCopyChmodFailure: a chmod that exits non-zero fails CopyIn.
func TestCopyChmodFailure(t *testing.T) {
	t.Parallel()
	f := &fakeRun{answers: []proc{ok(""), fail(1, "chmod: not found\n")}}
	err := fakeClient(t, v101, f).CopyIn(context.Background(), "vm1", "/h/a", "/g/a", 0o755)
	var e *Error
	if !errors.As(err, &e) || e.ExitCode != 1 || !strings.Contains(e.Message, "chmod 0755") {
		t.Fatalf("err = %v, want an *Error naming the chmod", err)
	}
}

// TestCopyRefusesBadInput: every bad path or mode is an ArgError naming
// its field, and no process starts.
func TestCopyRefusesBadInput(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, vm, host, guest string
		mode                  fs.FileMode
		field                 string
	}{
		{"bad name", "-vm", "/h/a", "/g/a", 0o644, "name"},
		{"relative host", "vm1", "h/a", "/g/a", 0o644, "host_path"},
		{"colon in host", "vm1", "/h/a:b", "/g/a", 0o644, "host_path"},
		{"NUL in host", "vm1", "/h/a\x00", "/g/a", 0o644, "host_path"},
		{"empty host", "vm1", "", "/g/a", 0o644, "host_path"},
		{"relative guest", "vm1", "/h/a", "g/a", 0o644, "guest_path"},
		{"colon in guest", "vm1", "/h/a", "/g/a:b", 0o644, "guest_path"},
		{"dotdot in guest", "vm1", "/h/a", "/g/../a", 0o644, "guest_path"},
		{"unclean guest", "vm1", "/h/a", "/g//a", 0o644, "guest_path"},
		{"trailing slash", "vm1", "/h/a", "/g/", 0o644, "guest_path"},
		{"guest root", "vm1", "/h/a", "/", 0o644, "guest_path"},
		{"NUL in guest", "vm1", "/h/a", "/g/\x00", 0o644, "guest_path"},
		{"empty guest", "vm1", "/h/a", "", 0o644, "guest_path"},
		{"long guest", "vm1", "/h/a", "/" + strings.Repeat("a", validate.MaxGuestPathLen), 0o644, "guest_path"},
		{"setuid mode", "vm1", "/h/a", "/g/a", 0o644 | fs.ModeSetuid, "mode"},
		{"dir mode", "vm1", "/h/a", "/g/a", fs.ModeDir | 0o755, "mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeRun{answers: []proc{ok("")}}
			c := fakeClient(t, v193, f)
			errIn := c.CopyIn(context.Background(), tt.vm, tt.host, tt.guest, tt.mode)
			var ae *ArgError
			if !errors.As(errIn, &ae) || ae.Field != tt.field || !errors.Is(errIn, ErrInvalid) {
				t.Errorf("CopyIn: err = %v, want an ArgError for %s", errIn, tt.field)
			}
			if tt.field != "mode" {
				errOut := c.CopyOut(context.Background(), tt.vm, tt.guest, tt.host)
				if !errors.As(errOut, &ae) || ae.Field != tt.field {
					t.Errorf("CopyOut: err = %v, want an ArgError for %s", errOut, tt.field)
				}
			}
			if n := len(f.argvs()); n != 0 {
				t.Errorf("ran smolvm %d times on bad input", n)
			}
		})
	}
}

func TestValidateGuestPath(t *testing.T) {
	t.Parallel()
	for p, ok := range map[string]bool{
		"/workspace/in/a.txt": true, "/a": true, "/a b/c d": true, "/.hidden": true, "/a/..b": true,
		"": false, "/": false, "a": false, "./a": false, "/a/": false, "/a/./b": false, "/a/../b": false,
		"/..": false, "/a:b": false, "//a": false, "/a\x00": false,
	} {
		if err := ValidateGuestPath(p); (err == nil) != ok {
			t.Errorf("ValidateGuestPath(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}

// TestSimCopy copies files in and out of a simulated machine in both
// dialects: content and mode arrive, a missing guest file is ErrNoSuchFile,
// and a machine that is not running or does not exist is an error of its
// own kind.
func TestSimCopy(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"1.0.1", "1.9.3"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			c, state := simClient(t, v)
			startedMachine(t, c)
			dir := t.TempDir()
			data := make([]byte, 100<<10)
			rand.Read(data)
			in := filepath.Join(dir, "in.bin")
			if err := os.WriteFile(in, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := c.CopyIn(ctx, "vm1", in, "/workspace/deep/dir/in.bin", 0o750); err != nil {
				t.Fatal(err)
			}
			guest := filepath.Join(state, "roots", "vm1", "workspace", "deep", "dir", "in.bin")
			info, err := os.Stat(guest)
			if err != nil || info.Mode().Perm() != 0o750 {
				t.Fatalf("guest file: %v, %v; want mode 0750", info, err)
			}
			res, err := c.Exec(ctx, "vm1", []string{"sh", "-c", "cp deep/dir/in.bin out.bin"}, ExecOptions{Workdir: "/workspace"})
			if err != nil || res.ExitCode != 0 {
				t.Fatalf("exec: %+v %v", res, err)
			}
			out := filepath.Join(dir, "out.bin")
			if err := c.CopyOut(ctx, "vm1", "/workspace/out.bin", out); err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(out); err != nil || !slices.Equal(got, data) {
				t.Fatalf("copied out %d bytes, %v; want the %d bytes copied in", len(got), err, len(data))
			}
			err = c.CopyOut(ctx, "vm1", "/workspace/none.txt", filepath.Join(dir, "none"))
			var e *Error
			if !errors.Is(err, ErrNoSuchFile) || !errors.As(err, &e) || e.ExitCode != 1 {
				t.Errorf("missing guest file: %v, want ErrNoSuchFile", err)
			}
			if _, err := os.Stat(filepath.Join(dir, "none")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a failed download left a host file: %v", err)
			}
			if err := c.CopyIn(ctx, "ghost", in, "/a", 0o644); !errors.Is(err, ErrNotFound) {
				t.Errorf("copy into an unknown machine: %v, want ErrNotFound", err)
			}
			if err := c.Stop(ctx, "vm1"); err != nil {
				t.Fatal(err)
			}
			if err := c.CopyOut(ctx, "vm1", "/workspace/out.bin", out); !errors.Is(err, ErrNotRunning) {
				t.Errorf("copy out of a stopped machine: %v, want ErrNotRunning", err)
			}
			if err := c.Delete(ctx, "vm1"); err != nil {
				t.Fatal(err)
			}
		})
	}
}
