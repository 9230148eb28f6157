package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"golang.org/x/sys/unix"

	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// tinyDisk mounts a tmpfs of size bytes at a new directory and returns
// it, unmounted at cleanup. It skips the test where this process may not
// mount (it needs root, or CAP_SYS_ADMIN).
func tinyDisk(t *testing.T, size int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	err := unix.Mount("bottleq-test", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size))
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		t.Skipf("skipping the full-disk test: mounting a tmpfs to fill needs root or CAP_SYS_ADMIN, which this process lacks (%v); CI runs it as root", err)
	}
	if err != nil {
		t.Fatalf("mount tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// freeBytes is what the file system holding dir has left.
func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var s unix.Statfs_t
	if err := unix.Statfs(dir, &s); err != nil {
		t.Fatal(err)
	}
	return int64(s.Bavail) * s.Bsize
}

// fill writes a file in dir that leaves leave bytes free on its file
// system, and returns its path.
func fill(t *testing.T, dir string, leave int64) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	if err := os.WriteFile(p, make([]byte, freeBytes(t, dir)-leave), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// leftovers lists the files under the data directory dir but skip: a
// half-written file, or an empty one made to be written, would be one.
// Not listed: the cache's lock files, and an image's pack in the cache
// (2 KiB: made whole before the disk filled, and kept for the next task).
func leftovers(t *testing.T, dir, skip string) []string {
	t.Helper()
	var out []string
	kept := []string{filepath.Join(dir, "cache", cacheLocks) + "/", filepath.Join(dir, "cache", "packs") + "/"}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || p == skip || slices.ContainsFunc(kept, func(k string) bool { return strings.HasPrefix(p, k) }) {
			return nil
		}
		size := int64(-1)
		if info, err := d.Info(); err == nil {
			size = info.Size()
		}
		out = append(out, fmt.Sprintf("%s (%d bytes)", strings.TrimPrefix(p, dir+"/"), size))
		return nil
	})
	return out
}

// TestDiskFull: through the real client and simulator, a task whose data
// directory is a genuinely full file system (a tmpfs with 1 MiB left) at
// the moment 2–3 MiB must be written there fails with a one-line error
// matching ErrDiskFull, naming the directory, that asynq retries; it
// leaves no file with bytes in it behind; and once the space is back, the
// retry succeeds. What needs the space: the worker downloading a commit
// from the store into its cache (from: task:ID on another host) or an
// input file by reference, or spooling the agent's output for the store;
// smolvm writing a commit or an image's pack into the cache, or copying an
// artifact out of the VM (which must fail the task, not drop the artifact).
func TestDiskFull(t *testing.T) {
	t.Parallel()
	const (
		diskSize = 4 << 20
		leave    = 1 << 20
		big      = 2 << 20
	)
	st, err := store.NewFile(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	// The commit of task "made" on a host with room: 2 MiB of the guest's
	// files.
	maker, _, _ := simHandler(t, func(c *Config) { c.Store = st })
	mk := basic
	mk.Command = []string{"sh", "-c", "head -c " + strconv.Itoa(big) + " /dev/urandom > blob"}
	if err := maker.Run(context.Background(), Meta{ID: "made"}, payload(t, mk), nil); err != nil {
		t.Fatal(err)
	}
	input := bytes.Repeat([]byte("input line\n"), big/11)
	ref := putInput(t, st, "big-input", input)

	blob := "head -c " + strconv.Itoa(big) + " /dev/urandom > "
	for _, tt := range []struct {
		name string
		p    tasks.AgentRun
		env  []string // the simulator's
	}{
		// The worker writes.
		{"commit download", tasks.AgentRun{From: "task:made", Command: []string{"test", "-s", "blob"}, Workdir: "/work", Commit: tasks.Bool(false)}, nil},
		{"input file download", tasks.AgentRun{Image: "alpine:3", Command: []string{"test", "-s", "in"}, Workdir: "/work", Commit: tasks.Bool(false),
			Files: []tasks.File{{Path: "/work/in", Ref: &ref}}}, nil},
		{"output spool", tasks.AgentRun{Image: "alpine:3", Command: []string{"head", "-c", strconv.Itoa(3 << 20), "/dev/zero"}, Workdir: "/work", Commit: tasks.Bool(false)}, nil},
		// smolvm writes, into a directory the worker chose.
		{"commit", tasks.AgentRun{Image: "alpine:3", Command: []string{"sh", "-c", blob + "blob"}, Workdir: "/work"}, nil},
		{"image pack", tasks.AgentRun{Image: "test/big-pack:1", Command: []string{"true"}, Workdir: "/work", Commit: tasks.Bool(false)},
			[]string{"SMOLVM_SIM_PACK_BYTES=" + strconv.Itoa(big)}},
		{"artifact", tasks.AgentRun{Image: "alpine:3", Command: []string{"sh", "-c", "mkdir -p out && " + blob + "out/a"}, Workdir: "/work",
			Commit: tasks.Bool(false), Artifacts: []string{"/work/out/a"}}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			data := tinyDisk(t, diskSize)
			h, _, _ := simHandler(t, func(c *Config) { c.Store = st; c.DataDir = data; c.Host = "host-full"; c.MaxFilesBytes = 8 << 20 }, tt.env...)
			filler := fill(t, data, leave)

			var w results
			err := h.Run(context.Background(), Meta{ID: "full", MaxRetry: 3}, payload(t, tt.p), &w)
			if !errors.Is(err, ErrDiskFull) || errors.Is(err, asynq.SkipRetry) {
				t.Fatalf("on a full disk: err = %v; want ErrDiskFull, retried", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.Contains(msg, data) {
				t.Errorf("error %q: want one line naming the full directory %s", msg, data)
			}
			if res := w.result(t); res.State == tasks.StateDone || res.Error != msg {
				t.Errorf("result: state %q, error %q; want the attempt failed with %q", res.State, res.Error, msg)
			}
			if left := leftovers(t, data, filler); len(left) != 0 {
				t.Errorf("left on the full disk: %q", left)
			}

			// Space again: the retry asynq makes succeeds.
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			var again results
			if err := h.Run(context.Background(), Meta{ID: "full", Retried: 1, MaxRetry: 3}, payload(t, tt.p), &again); err != nil {
				t.Fatalf("the retry with room: %v", err)
			}
			res := again.result(t)
			if res.State != tasks.StateDone || res.ExitCode != 0 {
				t.Errorf("the retry: state %q, exit %d, error %q; want done, exit 0", res.State, res.ExitCode, res.Error)
			}
			for _, a := range res.Artifacts {
				if a.Error != "" || a.Size != big {
					t.Errorf("the retry's artifact %+v: want %d bytes, kept", a, big)
				}
			}
		})
	}
}
