package enqueue

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// Redis holds a task's control state, the store its bulk: with
// Options.Store a big input file goes to the store and the task carries a
// reference to it, and a worker with a store keeps its agent's whole
// output there and only the output's tail in the result (see
// tasks.Result.StdoutKey and ReadOutput).

// DefaultInlineFileBytes is Options.InlineFileBytes's default: with a
// store, a file bigger than this goes to the store, so that a task costs
// Redis a few KiB however big its inputs.
const DefaultInlineFileBytes = 1 << 10

// DefaultStoreRetention is how long a task enqueued with Options.Store
// (and no Options.Retention) stays readable in Redis once finished: its
// result then points into the store, where its bulk is kept for the
// workers' -retention (7 days by default), and need not cost Redis that
// long. tasks.DefaultRetention applies without a store.
const DefaultStoreRetention = 24 * time.Hour

// uploadTimeout bounds the clean-up of inputs whose task was not enqueued.
const uploadTimeout = 30 * time.Second

// uploadFiles puts each file of p bigger than o's inline threshold in
// o.Store and makes p carry a reference to it instead, on a copy of p's
// files. It returns the keys it stored. Without a store it changes
// nothing. On an error nothing it stored is left but what the store's
// retention deletes.
func (o Options) uploadFiles(ctx context.Context, p *tasks.AgentRun) ([]string, error) {
	if o.Store == nil {
		return nil, nil
	}
	limit := o.InlineFileBytes
	if limit == 0 {
		limit = DefaultInlineFileBytes
	}
	var keys []string
	files := slices.Clone(p.Files)
	for i, f := range files {
		if f.Ref != nil || int64(len(f.Content)) <= max(limit, 0) {
			continue
		}
		name, err := inputName()
		if err != nil {
			o.forget(ctx, keys)
			return nil, fmt.Errorf("enqueue: files[%d]: %w", i, err)
		}
		key := tasks.InputKey(p.TenantName(), name)
		sum := sha256.Sum256(f.Content)
		digest := hex.EncodeToString(sum[:])
		if _, err := o.Store.Put(ctx, key, bytes.NewReader(f.Content), store.PutOptions{SHA256: digest}); err != nil {
			o.forget(ctx, keys)
			return nil, fmt.Errorf("enqueue: files[%d]: uploading it to the store: %w", i, err)
		}
		keys = append(keys, key)
		files[i] = tasks.File{Path: f.Path, Mode: f.Mode, Ref: &tasks.FileRef{Key: key, SHA256: digest, Size: int64(len(f.Content))}}
	}
	p.Files = files
	return keys, nil
}

// forget deletes inputs that no task will read, as far as the store lets
// it within uploadTimeout; what is left the store's retention deletes.
func (o Options) forget(ctx context.Context, keys []string) {
	if len(keys) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), uploadTimeout)
	defer cancel()
	for _, k := range keys {
		_ = o.Store.Delete(ctx, k)
	}
}

// inputName is a random name for an input: 32 hex digits. A fresh name per
// upload, rather than the content's digest, gives each task's input its
// own age for the store's retention to go by.
func inputName() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// ErrNotAnOutput: ReadOutput was given a key that names no stored output
// stream.
var ErrNotAnOutput = errors.New("not a stored output stream")

// ReadOutput copies the output stream a worker stored under key (a
// result's StdoutKey or StderrKey) from st, the workers' store, to w, and
// returns how many bytes it copied. The store checks the stream's SHA-256
// as it is read: bytes that do not match make an error matching
// store.ErrDigestMismatch once read to the end, after they were written to
// w. A key past the store's retention is an error matching
// store.ErrNotFound; a key outside tasks.OutputKeyPrefix one matching
// ErrNotAnOutput.
func ReadOutput(ctx context.Context, st store.Store, key string, w io.Writer) (int64, error) {
	if !strings.HasPrefix(key, tasks.OutputKeyPrefix) {
		return 0, fmt.Errorf("enqueue: %q: %w", key, ErrNotAnOutput)
	}
	rc, _, err := st.Get(ctx, key) // its errors name the key
	if err != nil {
		return 0, fmt.Errorf("enqueue: %w", err)
	}
	defer rc.Close()
	n, err := io.Copy(w, rc)
	if err != nil {
		return n, fmt.Errorf("enqueue: reading %s: %w", key, err)
	}
	return n, nil
}
