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
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fileStore keeps each object as a file under root, at the key's path. A Put
// writes a temporary file (".bottleq-tmp-*") in the object's directory,
// syncs it, records its SHA-256 in an extended attribute, and hard-links it
// to the final name: link(2) fails if the name exists, so the first Put to
// link wins and nothing is ever half-written under a key. Files are 0600,
// directories 0700.
type fileStore struct {
	root string
}

// digestAttr is the extended attribute holding a file's hex SHA-256. Where
// the file system has no user attributes the digest is computed on Stat and
// Get instead.
const digestAttr = "user.bottleq.sha256"

// NewFile returns the file store in dir, an absolute directory, without
// touching the disk: the first Put creates dir, and reading a store whose
// dir does not exist yet finds nothing. [Open] checks the directory first.
func NewFile(dir string) (Store, error) {
	if !filepath.IsAbs(dir) {
		return nil, configErr("dir", "%q is not an absolute path", dir)
	}
	return &fileStore{root: filepath.Clean(dir)}, nil
}

func openFile(dir string) (*fileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, configErr("dir", "cannot create %s: %v", dir, unwrapPath(err))
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, configErr("dir", "%v", unwrapPath(err))
	}
	if !fi.IsDir() {
		return nil, configErr("dir", "%s is not a directory", dir)
	}
	f, err := os.CreateTemp(dir, tmpPrefix+"check-*")
	if err != nil {
		return nil, configErr("dir", "cannot write in %s: %v", dir, unwrapPath(err))
	}
	f.Close()
	os.Remove(f.Name())
	return &fileStore{root: dir}, nil
}

// unwrapPath drops the *PathError wrapper whose message repeats the path.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (s *fileStore) path(key string) string {
	return filepath.Join(s.root, filepath.FromSlash(key))
}

func (s *fileStore) Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (Object, error) {
	if err := ValidKey(key); err != nil {
		return Object{}, fmt.Errorf("store: put: %w", err)
	}
	if err := validDigest(opts.SHA256); err != nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, err)
	}
	dst := s.path(key)
	// Fail early on a taken key rather than after writing every byte; the
	// link below decides races.
	if _, err := os.Lstat(dst); err == nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, ErrExists)
	}
	tmp, err := s.createTemp(filepath.Dir(dst))
	if err != nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	dr := newDigestReader(ctxReader{ctx, r}, opts.SHA256)
	defer dr.Close()
	if _, err := io.Copy(tmp, dr); err != nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, err)
	}
	sum := dr.sum()
	if err := tmp.Sync(); err != nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, err)
	}
	// A file system without user attributes still works: Stat and Get
	// compute the digest instead.
	unix.Fsetxattr(int(tmp.Fd()), digestAttr, []byte(sum), 0)
	if err := tmp.Close(); err != nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, err)
	}
	if err := os.Link(tmp.Name(), dst); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return Object{}, fmt.Errorf("store: put %s: %w", key, ErrExists)
		}
		return Object{}, fmt.Errorf("store: put %s: %w", key, err)
	}
	syncDir(filepath.Dir(dst))
	fi, err := os.Stat(dst)
	if err != nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, err)
	}
	return Object{Key: key, Size: fi.Size(), SHA256: sum, Modified: fi.ModTime()}, nil
}

// createTemp makes a temporary file in dir, creating dir first. A
// concurrent Delete may remove an empty dir between the two steps, so it
// tries again.
func (s *fileStore) createTemp(dir string) (*os.File, error) {
	var err error
	for try := 0; try < 5; try++ {
		if err = os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		var f *os.File
		if f, err = os.CreateTemp(dir, tmpPrefix+"tmp-*"); err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, err
}

// syncDir makes a new directory entry durable; a failure only weakens
// durability after a crash, so it is ignored.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

func (s *fileStore) Get(ctx context.Context, key string) (io.ReadCloser, Object, error) {
	if err := ValidKey(key); err != nil {
		return nil, Object{}, fmt.Errorf("store: get: %w", err)
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		return nil, Object{}, fmt.Errorf("store: get %s: %w", key, notFound(err))
	}
	obj, err := s.describe(key, f)
	if err != nil {
		f.Close()
		return nil, Object{}, fmt.Errorf("store: get %s: %w", key, err)
	}
	return getReader{newDigestReader(ctxReader{ctx, f}, obj.SHA256), f}, obj, nil
}

func (s *fileStore) Stat(ctx context.Context, key string) (Object, error) {
	if err := ValidKey(key); err != nil {
		return Object{}, fmt.Errorf("store: stat: %w", err)
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		return Object{}, fmt.Errorf("store: stat %s: %w", key, notFound(err))
	}
	defer f.Close()
	obj, err := s.describe(key, f)
	if err != nil {
		return Object{}, fmt.Errorf("store: stat %s: %w", key, err)
	}
	return obj, nil
}

// describe fills an Object from an open file: a directory is no object.
// The digest comes from the file's attribute or, lacking one, from reading
// the file (which is then rewound).
func (s *fileStore) describe(key string, f *os.File) (Object, error) {
	fi, err := f.Stat()
	if err != nil {
		return Object{}, err
	}
	if !fi.Mode().IsRegular() {
		return Object{}, ErrNotFound
	}
	obj := Object{Key: key, Size: fi.Size(), Modified: fi.ModTime()}
	buf := make([]byte, 64)
	if n, err := unix.Fgetxattr(int(f.Fd()), digestAttr, buf); err == nil && n == 64 {
		obj.SHA256 = string(buf)
		return obj, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return Object{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Object{}, err
	}
	obj.SHA256 = hex.EncodeToString(h.Sum(nil))
	return obj, nil
}

// notFound turns "no such file" (or a path through a file) into ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return ErrNotFound
	}
	return err
}

func (s *fileStore) Delete(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return fmt.Errorf("store: delete: %w", err)
	}
	p := s.path(key)
	if fi, err := os.Lstat(p); err != nil || fi.IsDir() {
		return nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: delete %s: %w", key, err)
	}
	s.pruneDirs(filepath.Dir(p))
	return nil
}

// pruneDirs removes dir and its parents up to the root while they are
// empty, so expired keys leave no directories behind.
func (s *fileStore) pruneDirs(dir string) {
	for dir != s.root && strings.HasPrefix(dir, s.root+string(filepath.Separator)) {
		if os.Remove(dir) != nil {
			return
		}
		dir = filepath.Dir(dir)
	}
}

func (s *fileStore) List(ctx context.Context, prefix string, fn func(Object) error) error {
	if err := validPrefix(prefix); err != nil {
		return fmt.Errorf("store: list: %w", err)
	}
	err := s.walk(ctx, prefix, func(key string, fi fs.FileInfo, tmp bool) error {
		if tmp {
			return nil
		}
		return fn(Object{Key: key, Size: fi.Size(), Modified: fi.ModTime()})
	})
	if err != nil {
		return fmt.Errorf("store: list %s: %w", prefix, err)
	}
	return nil
}

func (s *fileStore) Expire(ctx context.Context, prefix string, olderThan time.Time) (int, error) {
	if err := validPrefix(prefix); err != nil {
		return 0, fmt.Errorf("store: expire: %w", err)
	}
	n := 0
	err := s.walk(ctx, prefix, func(key string, fi fs.FileInfo, tmp bool) error {
		if !fi.ModTime().Before(olderThan) {
			return nil
		}
		p := s.path(key)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if !tmp {
			n++
		}
		s.pruneDirs(filepath.Dir(p))
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("store: expire %s: %w", prefix, err)
	}
	return n, nil
}

// walk calls fn for each regular file under prefix: objects with their key,
// and temporary files (tmp true, "key" being their path) in the directories
// the prefix covers. It starts at the deepest directory the prefix names.
func (s *fileStore) walk(ctx context.Context, prefix string, fn func(key string, fi fs.FileInfo, tmp bool) error) error {
	start := s.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = s.path(prefix[:i])
	}
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed under us, or the prefix names no directory
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.root, p)
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			if p == start || strings.HasPrefix(key+"/", prefix) || strings.HasPrefix(prefix, key+"/") {
				return nil
			}
			return fs.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		tmp := strings.HasPrefix(d.Name(), tmpPrefix)
		if !tmp && !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(key, fi, tmp)
	})
	return err
}
