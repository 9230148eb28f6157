package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// Input files by reference: a producer with a store uploads a file too big
// to travel in Redis (see enqueue.Options.Store), and the payload's
// tasks.File carries a tasks.FileRef instead of its content. The worker
// downloads it into the files phase's private temporary directory and
// copies it in as it would a file that came with the payload.
//
// What a failure means for the task: objects are written once and never
// change (store.Put is create-only), and the producer uploads before it
// enqueues. So an object that is missing, or present with another size or
// SHA-256 than the payload says, can never become right: the task is bad
// input, archived without retry. The store failing to answer, or bytes
// that do not match the digest the store itself recorded (a torn read, a
// corrupted disk), are the store's trouble: a retried error.

// fetchInput downloads the object ref names from st into path, which must
// not exist yet, with exactly mode, after checking the object's size and
// SHA-256 against ref. field names the ref in errors ("files[0].ref"). A
// missing or mismatched object is a *tasks.ValidationError; any other
// failure is a plain error wrapping the store's (see store.ErrUnavailable,
// store.ErrDigestMismatch). Nothing is left at path when it fails.
func fetchInput(ctx context.Context, st store.Store, field string, ref tasks.FileRef, path string, mode os.FileMode) (err error) {
	rc, obj, err := st.Get(ctx, ref.Key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &tasks.ValidationError{Field: field, Reason: fmt.Sprintf(
			"no object %s in the store: the store's retention deleted it, or it was never uploaded there", ref.Key)}
	case err != nil:
		return fmt.Errorf("%s: %w", field, err)
	}
	defer rc.Close()
	if obj.Size != ref.Size {
		return &tasks.ValidationError{Field: field, Reason: fmt.Sprintf(
			"the object %s in the store is %d bytes, not the %d the payload says", ref.Key, obj.Size, ref.Size)}
	}
	if obj.SHA256 != "" && obj.SHA256 != ref.SHA256 {
		return &tasks.ValidationError{Field: field, Reason: fmt.Sprintf(
			"the object %s in the store has SHA-256 %s, not the %s the payload says", ref.Key, obj.SHA256, ref.SHA256)}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return diskErr(field, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = diskErr(field, cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	sum := sha256.New()
	// The store's reader checks its own digest at the end; one byte past
	// the size the object claims would be a store that lies.
	n, err := io.Copy(io.MultiWriter(f, sum), io.LimitReader(rc, ref.Size+1))
	if err != nil {
		// A full disk here matches ErrDiskFull; the store's failures keep
		// their own errors.
		return diskErr(fmt.Sprintf("%s: downloading %s", field, ref.Key), err)
	}
	if n != ref.Size {
		return fmt.Errorf("%s: downloading %s: got %d bytes of %d", field, ref.Key, n, ref.Size)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != ref.SHA256 {
		// Only an object the store recorded no digest for gets here (a
		// recorded one was compared above and checked as read): its bytes
		// are there for good and are not the payload's.
		return &tasks.ValidationError{Field: field, Reason: fmt.Sprintf(
			"the object %s in the store has SHA-256 %s, not the %s the payload says", ref.Key, got, ref.SHA256)}
	}
	if err := f.Chmod(mode); err != nil { // not subject to the umask
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

// writeInput writes file i of the payload to path with exactly mode: its
// content, or the bytes its Ref names in the worker's store. Its errors
// name the file.
func (r *run) writeInput(ctx context.Context, i int, f tasks.File, path string, mode os.FileMode) error {
	if f.Ref == nil {
		if err := writeFile(path, f.Content, mode); err != nil {
			return diskErr(fmt.Sprintf("files[%d]", i), err)
		}
		return nil
	}
	return fetchInput(ctx, r.h.cfg.Store, fmt.Sprintf("files[%d].ref", i), *f.Ref, path, mode)
}
