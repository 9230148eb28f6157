package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFileLinker: a file store takes a file in and hands an object out by
// hard link, create-only and digest-checked like Put and Get, so a cache
// beside it costs no second copy; across file systems it says
// errors.ErrUnsupported and the caller copies.
func TestFileLinker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	root := t.TempDir()
	s, err := openFile(filepath.Join(root, "store"))
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(root, "cache")
	if err := os.Mkdir(local, 0o700); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(local, "made")
	if err := os.WriteFile(src, []byte("a commit"), 0o644); err != nil {
		t.Fatal(err)
	}
	want, _ := sumOf(t, strings.NewReader("a commit"))

	if _, err := s.PutFile(ctx, "commits/a/k", src, PutOptions{SHA256: strings.Repeat("0", 64)}); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("PutFile with a wrong digest = %v, want ErrDigestMismatch", err)
	}
	obj, err := s.PutFile(ctx, "commits/a/k", src, PutOptions{SHA256: want})
	if err != nil || obj.SHA256 != want || obj.Size != 8 {
		t.Fatalf("PutFile = %+v, %v", obj, err)
	}
	a, _ := os.Stat(src)
	b, _ := os.Stat(s.path("commits/a/k"))
	if !os.SameFile(a, b) || b.Mode().Perm() != 0o600 {
		t.Errorf("the object is not the file itself, 0600: %v", b.Mode())
	}
	if got, err := s.Stat(ctx, "commits/a/k"); err != nil || got.SHA256 != want {
		t.Errorf("Stat after PutFile = %+v, %v", got, err)
	}
	other := filepath.Join(local, "other")
	os.WriteFile(other, []byte("another"), 0o600)
	if _, err := s.PutFile(ctx, "commits/a/k", other, PutOptions{}); !errors.Is(err, ErrExists) {
		t.Errorf("second PutFile = %v, want ErrExists", err)
	}
	if _, _, _, err := readAll(t, s, "commits/a/k"); err != nil {
		t.Errorf("the object after a refused PutFile: %v", err)
	}

	out := filepath.Join(local, "out")
	if obj, err := s.GetFile(ctx, "commits/a/k", out); err != nil || obj.SHA256 != want {
		t.Fatalf("GetFile = %+v, %v", obj, err)
	}
	if c, _ := os.Stat(out); !os.SameFile(b, c) {
		t.Error("GetFile copied instead of linking")
	}
	if _, err := s.GetFile(ctx, "commits/a/none", filepath.Join(local, "none")); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetFile of a missing key = %v, want ErrNotFound", err)
	}

	// Bytes changed on disk after the Put: no link is left behind.
	if _, err := s.Put(ctx, "commits/a/rot", strings.NewReader("good bytes"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.path("commits/a/rot"), []byte("bad! bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	rot := filepath.Join(local, "rot")
	if _, err := s.GetFile(ctx, "commits/a/rot", rot); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("GetFile of a corrupted object = %v, want ErrDigestMismatch", err)
	}
	if _, err := os.Lstat(rot); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a corrupted object left %s behind: %v", rot, err)
	}

	// Another file system: /dev/shm is a tmpfs where there is one.
	if shm, err := os.MkdirTemp("/dev/shm", "bottleq-link-"); err == nil {
		defer os.RemoveAll(shm)
		if _, err := s.GetFile(ctx, "commits/a/k", filepath.Join(shm, "x")); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("GetFile across file systems = %v, want errors.ErrUnsupported", err)
		}
		far := filepath.Join(shm, "far")
		os.WriteFile(far, []byte("far"), 0o600)
		if _, err := s.PutFile(ctx, "commits/a/far", far, PutOptions{}); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("PutFile across file systems = %v, want errors.ErrUnsupported", err)
		}
		if _, err := s.Stat(ctx, "commits/a/far"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a refused PutFile left an object: %v", err)
		}
	}
}
