package repocheck

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// maxFileBytes is the largest file the repository may track.
const maxFileBytes = 1 << 20

// errNoCheckout: the directory is not inside a git work tree.
var errNoCheckout = errors.New("not a git checkout")

// entry is one file of the git index.
type entry struct {
	path string
	mode string // "100644", "100755", "120000" (symlink), "160000" (submodule)
	oid  string
}

// check lists what is wrong with the files git tracks under dir, one line
// per problem, each starting with the file's path relative to dir. It
// reads the index (what the next commit holds), not the work tree.
func check(dir string) ([]string, error) {
	if out, err := git(dir, "rev-parse", "--is-inside-work-tree"); err != nil {
		if strings.Contains(out, "not a git repository") {
			return nil, fmt.Errorf("%w: %s", errNoCheckout, dir)
		}
		return nil, err
	}
	out, err := git(dir, "ls-files", "--stage", "-z")
	if err != nil {
		return nil, err
	}
	var files []entry
	for _, rec := range strings.Split(out, "\x00") {
		meta, path, ok := strings.Cut(rec, "\t")
		f := strings.Fields(meta)
		if !ok || len(f) != 3 {
			continue
		}
		e := entry{path: path, mode: f[0], oid: f[1]}
		// A path in conflict is listed once per stage; one is enough.
		if (e.mode == "100644" || e.mode == "100755") && !slices.ContainsFunc(files, func(o entry) bool { return o.path == path }) {
			files = append(files, e)
		}
	}
	var problems []string
	err = blobs(dir, files, func(e entry, size int64, head []byte) {
		switch {
		case isBinary(head):
			problems = append(problems, e.path+": a binary (compiled executable); build outputs belong in bin/, which git ignores")
		case e.mode == "100755" && !bytes.HasPrefix(head, []byte("#!")):
			problems = append(problems, e.path+": has the executable bit but is not a #! script")
		}
		if size > maxFileBytes {
			problems = append(problems, fmt.Sprintf("%s: %d bytes, over the %d-byte (1 MiB) limit", e.path, size, maxFileBytes))
		}
	})
	return problems, err
}

// blobs streams the index's blob of each file through `git cat-file
// --batch` and calls fn with its size and first bytes; the rest is read and
// dropped, so a big file costs no memory.
func blobs(dir string, files []entry, fn func(e entry, size int64, head []byte)) error {
	var in strings.Builder
	for _, e := range files {
		in.WriteString(e.oid + "\n")
	}
	cmd := exec.Command("git", "-C", dir, "cat-file", "--batch")
	cmd.Stdin = strings.NewReader(in.String())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	r := bufio.NewReader(stdout)
	readErr := func() error {
		for _, e := range files {
			hdr, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("git cat-file: %s: %w", e.path, err)
			}
			f := strings.Fields(hdr) // OID TYPE SIZE, or OID missing
			if len(f) != 3 {
				return fmt.Errorf("git cat-file: %s: %q", e.path, strings.TrimSpace(hdr))
			}
			size, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				return fmt.Errorf("git cat-file: %s: %q", e.path, strings.TrimSpace(hdr))
			}
			head := make([]byte, min(size, 8))
			if _, err := io.ReadFull(r, head); err != nil {
				return err
			}
			if _, err := io.CopyN(io.Discard, r, size-int64(len(head))+1); err != nil { // +1: the '\n' after each blob
				return err
			}
			fn(e, size, head)
		}
		return nil
	}()
	_, _ = io.Copy(io.Discard, r)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git cat-file: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return readErr
}

// isBinary reports whether a file starts like a compiled executable: ELF
// (Linux, the BSDs) or Mach-O (macOS, either byte order, fat or not).
func isBinary(head []byte) bool {
	for _, magic := range [][]byte{
		{0x7f, 'E', 'L', 'F'},
		{0xfe, 0xed, 0xfa, 0xce}, {0xce, 0xfa, 0xed, 0xfe},
		{0xfe, 0xed, 0xfa, 0xcf}, {0xcf, 0xfa, 0xed, 0xfe},
		{0xca, 0xfe, 0xba, 0xbe},
	} {
		if bytes.HasPrefix(head, magic) {
			return true
		}
	}
	return false
}

// git runs git in dir and returns its combined output.
func git(dir string, args ...string) (string, error) {
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// TestTrackedFiles is the check itself, on this repository.
func TestTrackedFiles(t *testing.T) {
	skip := t.Skip
	if os.Getenv("CI") != "" {
		skip = t.Fatal // CI runs on a clean checkout with git
	}
	if _, err := exec.LookPath("git"); err != nil {
		skip("git not found, so tracked files cannot be listed:", err)
	}
	problems, err := check(filepath.Join("..", ".."))
	if errors.Is(err, errNoCheckout) {
		skip("not in a git checkout, so tracked files cannot be listed")
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// TestCheckFindsBinariesAndBigFiles runs the check on a scratch repository
// holding one file of each kind.
// It sets environment variables, so it does not run in parallel.
func TestCheckFindsBinariesAndBigFiles(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not found:", err)
	}
	dir := t.TempDir()
	t.Setenv("GIT_CONFIG_GLOBAL", os.DevNull) // no user config changes what git add records
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	elf := append([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1}, make([]byte, 64)...)
	macho := []byte{0xcf, 0xfa, 0xed, 0xfe, 7, 0, 0, 1}
	files := []struct {
		path    string
		content []byte
		exec    bool
	}{
		{"README.md", []byte("# ok\n"), false},
		{"scripts/run", []byte("#!/bin/sh\necho ok\n"), true},
		{"docs/exact.bin", bytes.Repeat([]byte("x"), maxFileBytes), false},
		{"dashboard", elf, true},
		{"cmd/x/no exec bit", elf, false},
		{"tool-darwin", macho, true},
		{"notes.txt", []byte("not a script\n"), true},
		{"data/big.json", bytes.Repeat([]byte("y"), maxFileBytes+1), false},
		{"empty-exec", nil, true},
	}
	mustGit(t, dir, "init", "-q")
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.content, 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"add"}
		if f.exec {
			args = append(args, "--chmod=+x")
		}
		mustGit(t, dir, append(args, "--", f.path)...)
	}
	// An untracked binary is not the repository's business.
	if err := os.WriteFile(filepath.Join(dir, "untracked"), elf, 0o755); err != nil {
		t.Fatal(err)
	}

	got, err := check(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"cmd/x/no exec bit: a binary (compiled executable); build outputs belong in bin/, which git ignores",
		"dashboard: a binary (compiled executable); build outputs belong in bin/, which git ignores",
		"data/big.json: 1048577 bytes, over the 1048576-byte (1 MiB) limit",
		"empty-exec: has the executable bit but is not a #! script",
		"notes.txt: has the executable bit but is not a #! script",
		"tool-darwin: a binary (compiled executable); build outputs belong in bin/, which git ignores",
	}
	if !slices.Equal(got, want) {
		t.Errorf("check found:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestCheckOutsideACheckout: a directory git does not know is reported as
// such, which is what makes TestTrackedFiles skip rather than fail.
func TestCheckOutsideACheckout(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not found:", err)
	}
	dir := t.TempDir()
	t.Setenv("GIT_CEILING_DIRECTORIES", filepath.Dir(dir)) // do not find a repository above the temp dir
	if _, err := check(dir); !errors.Is(err, errNoCheckout) {
		t.Errorf("check(%s) = %v, want errNoCheckout", dir, err)
	}
}

func mustGit(t *testing.T, dir string, args ...string) {
	t.Helper()
	if out, err := git(dir, args...); err != nil {
		t.Fatal(err, out)
	}
}
