package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Linker is implemented by a Store whose objects are files on this host
// (file://). A caller holding a file on the same file system moves it in
// or out by a hard link, without copying its bytes: a file store and a
// local cache of it then cost the disk once. Across file systems, or where
// the file system has no hard links, both methods fail with an error
// matching errors.ErrUnsupported and the caller falls back to Put or Get.
type Linker interface {
	// PutFile stores the regular file at path under key, create-only, as
	// Put does (ErrExists, ErrDigestMismatch against opts.SHA256), by
	// linking it: path and the object are then one file, which nobody may
	// change afterwards. Its modification time becomes now, the object's
	// Modified.
	PutFile(ctx context.Context, key, path string, opts PutOptions) (Object, error)
	// GetFile links the object under key to dst, which must not exist,
	// once the object's bytes are checked against its SHA-256
	// (ErrDigestMismatch leaves no dst).
	GetFile(ctx context.Context, key, dst string) (Object, error)
}

var _ Linker = (*fileStore)(nil)

// HashFile returns the hex SHA-256 and size of the file at path, as a
// store records an object's (Object.SHA256), stopping early when ctx ends.
func HashFile(ctx context.Context, path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{ctx, f})
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// linkErr maps link(2)'s failures: a name taken, or no hard link possible
// here (another file system, or none supported).
func linkErr(err error) error {
	switch {
	case errors.Is(err, fs.ErrExist):
		return ErrExists
	case errors.Is(err, syscall.EXDEV), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.EMLINK):
		return fmt.Errorf("%w: no hard link possible: %v", errors.ErrUnsupported, unwrapPath(err))
	}
	return err
}

func (s *fileStore) PutFile(ctx context.Context, key, path string, opts PutOptions) (Object, error) {
	if err := ValidKey(key); err != nil {
		return Object{}, fmt.Errorf("store: put: %w", err)
	}
	if err := validDigest(opts.SHA256); err != nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, err)
	}
	dst := s.path(key)
	if _, err := os.Lstat(dst); err == nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, ErrExists)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		return Object{}, fmt.Errorf("store: put %s: %s is not a regular file", key, path)
	}
	sum, _, err := HashFile(ctx, path)
	if err != nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, err)
	}
	if opts.SHA256 != "" && sum != opts.SHA256 {
		return Object{}, fmt.Errorf("store: put %s: %w: got %s, want %s", key, ErrDigestMismatch, sum, opts.SHA256)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, err)
	}
	now := time.Now()
	err = f.Chmod(0o600)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		unix.Fsetxattr(int(f.Fd()), digestAttr, []byte(sum), 0) // as Put: optional
		err = os.Chtimes(path, now, now)
	}
	if err := errors.Join(err, f.Close()); err != nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, err)
	}
	// The file is whole and synced: linking it makes it visible whole.
	for try := 0; ; try++ {
		if err = os.MkdirAll(filepath.Dir(dst), 0o700); err == nil {
			err = os.Link(path, dst)
		}
		// A concurrent Delete may prune the new directory in between.
		if err == nil || !errors.Is(err, fs.ErrNotExist) || try == 4 {
			break
		}
	}
	if err != nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, linkErr(err))
	}
	syncDir(filepath.Dir(dst))
	return Object{Key: key, Size: fi.Size(), SHA256: sum, Modified: now}, nil
}

func (s *fileStore) GetFile(ctx context.Context, key, dst string) (Object, error) {
	if err := ValidKey(key); err != nil {
		return Object{}, fmt.Errorf("store: get: %w", err)
	}
	obj, err := s.Stat(ctx, key)
	if err != nil {
		return Object{}, err
	}
	if err := os.Link(s.path(key), dst); err != nil {
		return Object{}, fmt.Errorf("store: get %s: %w", key, linkErr(notFound(err)))
	}
	// The bytes are checked through the link: the object may have been
	// replaced between Stat and the link only by Delete and a new Put,
	// which describe catches as well.
	f, err := os.Open(dst)
	if err == nil {
		obj, err = s.describe(key, f)
		f.Close()
	}
	var sum string
	if err == nil {
		sum, _, err = HashFile(ctx, dst)
	}
	if err == nil && sum != obj.SHA256 {
		err = fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, sum, obj.SHA256)
	}
	if err != nil {
		os.Remove(dst)
		return Object{}, fmt.Errorf("store: get %s: %w", key, err)
	}
	return obj, nil
}
