// Package store keeps bottleq's bulk data — commits, artifacts, image packs —
// in an object store shared by every worker host, behind one small
// interface with two implementations chosen by URL:
//
//   - file:///ABS/DIR — a directory on this host, the zero-setup default;
//   - s3://BUCKET/PREFIX?endpoint=URL&region=R&path_style=true — any
//     S3-compatible server (AWS S3, MinIO, Ceph, versitygw).
//
// Every object is written once: Put is create-only (ErrExists if the key is
// taken), streams its reader, and never makes a partial object visible — a
// file is written under a temporary name and linked into place, an S3
// upload completes with If-None-Match: * or not at all. Each object carries
// its SHA-256 as metadata, stored before its bytes become visible, and Get
// checks it as the bytes are read.
//
// Credentials for s3:// come from the standard AWS chain (environment,
// shared config files, instance roles); a URL holding credentials is
// refused. Its errors never quote a secret. This package does not log; the
// SDK's transfer manager it uploads with does print one line with the
// standard logger when the server refuses to complete a multipart upload
// (as it does to the loser of a race for a key), naming no secret.
// It knows nothing of tasks, tenants or retention periods: callers choose
// keys and call Expire.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Store is an object store holding immutable objects under string keys.
// Keys are slash-separated paths such as "commits/acme/T1.smolmachine"
// (see ValidKey). Implementations are safe for concurrent use.
type Store interface {
	// Put stores the bytes of r under key, create-only: if the key exists it
	// returns an error matching ErrExists and leaves the object as it was.
	// Among concurrent Puts of one key exactly one succeeds. A Put that
	// fails — its reader errs, its context ends, the process dies — leaves
	// no object visible. With opts.SHA256 set, bytes that do not match it
	// fail with ErrDigestMismatch and store nothing.
	Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (Object, error)
	// Get opens the object under key (ErrNotFound if there is none). The
	// reader checks the object's SHA-256 as it is read: where the stored
	// digest and the bytes differ, the read that reaches the end returns an
	// error matching ErrDigestMismatch instead of io.EOF. The caller closes
	// the reader.
	Get(ctx context.Context, key string) (io.ReadCloser, Object, error)
	// Stat describes the object under key (ErrNotFound if there is none).
	Stat(ctx context.Context, key string) (Object, error)
	// Delete removes the object under key; deleting a missing key is not an
	// error.
	Delete(ctx context.Context, key string) error
	// List calls fn for each object whose key starts with prefix, in no
	// particular order, with Key, Size and Modified set (not SHA256: call
	// Stat for it). An error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(Object) error) error
	// Expire deletes the objects under prefix last modified before
	// olderThan and returns how many it deleted. It also discards uploads
	// under prefix that were abandoned (by a killed process) before
	// olderThan: temporary files, or incomplete S3 multipart uploads.
	Expire(ctx context.Context, prefix string, olderThan time.Time) (int, error)
}

// Object describes a stored object.
type Object struct {
	// Key is the object's key, without the URL's prefix.
	Key string
	// Size is the object's length in bytes.
	Size int64
	// SHA256 is the lowercase hex SHA-256 of the object's bytes. List
	// leaves it empty; so do Stat and Get for an S3 object not written by
	// this package.
	SHA256 string
	// Modified is when the object was stored.
	Modified time.Time
}

// PutOptions tunes a Put. The zero value is ready to use.
type PutOptions struct {
	// SHA256 is the lowercase hex SHA-256 the bytes must have, when the
	// caller knows it; empty means Put computes it. With it set, an S3 Put
	// streams its reader once; without it, a reader that is not an
	// io.Seeker and is larger than one part (8 MiB) is spooled to a
	// temporary file first, because S3 stores metadata before the bytes.
	SHA256 string
}

// Errors returned by a Store, matched with errors.Is. A *ConfigError (a
// store that cannot work as configured) is matched with errors.As.
var (
	// ErrNotFound: no object has the key.
	ErrNotFound = errors.New("object not found")
	// ErrExists: Put found the key taken; the stored object is unchanged.
	ErrExists = errors.New("object already exists")
	// ErrDigestMismatch: the bytes do not have the expected SHA-256.
	ErrDigestMismatch = errors.New("SHA-256 mismatch")
	// ErrUnavailable: the store could not be reached (connection refused,
	// timeout, DNS); retrying later may help.
	ErrUnavailable = errors.New("store unreachable")
	// ErrInvalidKey: a key or prefix breaks the rules of ValidKey.
	ErrInvalidKey = errors.New("invalid key")
)

// ConfigError says the store cannot work as configured: a bad URL, no or
// wrong credentials, a missing bucket or directory, a permission denied.
// Retrying does not help; the configuration must change.
type ConfigError struct {
	// Field names the part at fault: "url", "scheme", "dir", "bucket",
	// "prefix", "endpoint", "region", "path_style", "credentials",
	// "permission", or a query parameter's name.
	Field string
	// Reason says what is wrong, in one line with no secret in it.
	Reason string
}

func (e *ConfigError) Error() string { return "store: " + e.Field + ": " + e.Reason }

func configErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Open returns the store named by rawURL, after checking that it works: the
// directory exists or can be made and written, or the S3 credentials are
// found and accepted and the bucket exists. Its errors are one line: a
// *ConfigError, or one matching ErrUnavailable.
func Open(ctx context.Context, rawURL string) (Store, error) {
	return open(ctx, rawURL, nil)
}

// open is Open with extra AWS config options (tests pass credentials).
func open(ctx context.Context, rawURL string, awsOpts []awsLoadOption) (Store, error) {
	loc, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if loc.Dir != "" {
		return openFile(loc.Dir)
	}
	return openS3(ctx, loc, awsOpts)
}

// maxKeyLen is S3's limit on a key's length in bytes, prefix included.
const maxKeyLen = 1024

// tmpPrefix starts the names of a file store's temporary files; no key
// segment may start with it.
const tmpPrefix = ".bottleq-"

// ValidKey reports whether key may name an object: 1 to 1024 bytes of
// UTF-8 without NUL or backslash, segments separated by single slashes,
// none empty, "." or "..", none starting with ".bottleq-" (reserved for
// temporary files), and no leading or trailing slash.
func ValidKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	if strings.HasSuffix(key, "/") {
		return fmt.Errorf("%w: key %q ends with /", ErrInvalidKey, key)
	}
	return validPrefix(key)
}

// validPrefix applies ValidKey's rules to a List or Expire prefix, which may
// be empty or end with a slash.
func validPrefix(p string) error {
	if len(p) > maxKeyLen {
		return fmt.Errorf("%w: key is %d bytes, over %d", ErrInvalidKey, len(p), maxKeyLen)
	}
	if strings.ContainsAny(p, "\x00\\") || !utf8.ValidString(p) {
		return fmt.Errorf("%w: %q holds NUL, backslash or invalid UTF-8", ErrInvalidKey, p)
	}
	if strings.HasPrefix(p, "/") {
		return fmt.Errorf("%w: %q starts with /", ErrInvalidKey, p)
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		last := i == len(segs)-1
		switch {
		case s == "" && !last:
			return fmt.Errorf("%w: %q has an empty segment", ErrInvalidKey, p)
		case s == "." || s == "..":
			return fmt.Errorf("%w: %q has a %q segment", ErrInvalidKey, p, s)
		case strings.HasPrefix(s, tmpPrefix):
			return fmt.Errorf("%w: %q has a segment starting with %s (reserved)", ErrInvalidKey, p, tmpPrefix)
		}
	}
	return nil
}

// validDigest checks PutOptions.SHA256.
func validDigest(d string) error {
	if d == "" {
		return nil
	}
	if len(d) != 64 || strings.ToLower(d) != d {
		return fmt.Errorf("PutOptions.SHA256 must be 64 lowercase hex digits")
	}
	if _, err := hex.DecodeString(d); err != nil {
		return fmt.Errorf("PutOptions.SHA256 must be 64 lowercase hex digits")
	}
	return nil
}

// digestReader hashes what is read through it, on a goroutine of its own
// fed 256 KiB chunks, so that with a core to spare hashing overlaps the
// reading instead of adding to it (SHA-256 runs at about 1.5 GB/s here,
// no faster than a loopback GetObject). With
// want set, the read that reaches the end returns ErrDigestMismatch instead
// of io.EOF when the digest differs, so an uploader or a copy fails rather
// than finishing. Close stops the hashing goroutine of a reader abandoned
// before its end.
type digestReader struct {
	r     io.Reader
	want  string
	n     int64
	cur   []byte      // read, not yet handed to the hasher
	work  chan []byte // full chunks, to the hasher
	free  chan []byte // hashed chunks, back
	out   chan string // the digest, once work is closed
	final string
	done  bool
	err   error // returned by every Read after the end
}

const (
	digestChunk   = 256 << 10
	digestBuffers = 4
)

func newDigestReader(r io.Reader, want string) *digestReader {
	d := &digestReader{r: r, want: want,
		work: make(chan []byte, digestBuffers), free: make(chan []byte, digestBuffers), out: make(chan string, 1)}
	for range digestBuffers - 1 {
		d.free <- make([]byte, 0, digestChunk)
	}
	d.cur = make([]byte, 0, digestChunk)
	go func() {
		h := sha256.New()
		for b := range d.work {
			h.Write(b)
			d.free <- b[:0]
		}
		d.out <- hex.EncodeToString(h.Sum(nil))
	}()
	return d
}

func (d *digestReader) Read(p []byte) (int, error) {
	if d.done {
		return 0, d.err
	}
	n, err := d.r.Read(p)
	d.n += int64(n)
	for rest := p[:n]; len(rest) > 0; {
		m := copy(d.cur[len(d.cur):cap(d.cur)], rest)
		d.cur, rest = d.cur[:len(d.cur)+m], rest[m:]
		if len(d.cur) == cap(d.cur) {
			d.work <- d.cur
			d.cur = <-d.free
		}
	}
	if err == io.EOF {
		d.finish()
		d.err = io.EOF
		if d.want != "" && d.final != d.want {
			d.err = fmt.Errorf("%w: got %s after %d bytes, want %s", ErrDigestMismatch, d.final, d.n, d.want)
		}
		return n, d.err
	}
	return n, err
}

// finish hands the last bytes to the hasher and waits for the digest.
func (d *digestReader) finish() {
	if d.done {
		return
	}
	d.done = true
	if len(d.cur) > 0 {
		d.work <- d.cur
	}
	close(d.work)
	d.final = <-d.out
}

// sum is the digest of what was read; call it after the end.
func (d *digestReader) sum() string {
	d.finish()
	return d.final
}

// Close stops the hasher; reads after it return io.ErrClosedPipe.
func (d *digestReader) Close() error {
	if !d.done {
		d.finish()
		d.err = io.ErrClosedPipe
	}
	return nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// getReader is what Get returns: the digest-checking reader over the
// object's bytes, closing both.
type getReader struct {
	*digestReader
	body io.Closer
}

func (g getReader) Close() error {
	g.digestReader.Close()
	return g.body.Close()
}
