package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// Output in the store: a worker with a store keeps each whole output
// stream of the agent's command there, and the result in Redis only the
// stream's last bytes (tasks.OutputTailBytes as JSON) and its key (see
// tasks.Result.StdoutKey). While the command runs each stream goes to a
// spool file in the data directory's tmp/ as it comes, beside the live
// output; after the command the spool is uploaded, create-only, and
// removed. The agent never waits for the store.

// outputKeyPrefix is where attempt's streams of task taskID go in the
// store: "outputs/TENANT/TASK-KEY/ATTEMPT-RANDOM/". The random part keeps
// a duplicate delivery of the same attempt (asynq delivers at least once)
// from finding its key taken.
func outputKeyPrefix(tenant, taskID string, attempt int) string {
	return tasks.OutputKeyPrefix + tenant + "/" + fileKey(taskID) + "/" + strconv.Itoa(attempt) + "-" + randHex(4) + "/"
}

// outputs starts the spools of the attempt's output when the worker has a
// store to keep it in, in the data directory's tmp/; nil without one, or
// with Config.OutputInResult.
func (r *run) outputs() (*attemptOutputs, error) {
	if r.h.cfg.Store == nil || r.h.cfg.OutputInResult {
		return nil, nil
	}
	return newAttemptOutputs(r.h.cfg.Store, r.h.tmpDir(), outputKeyPrefix(r.p.TenantName(), r.taskID, r.res.Attempt), tasks.MaxStoredOutputBytes)
}

// outputSpool is one output stream on its way to the store: its first max
// bytes in a spool file, their SHA-256, and the stream's last bytes in
// memory. Write never fails and never blocks on more than the local disk:
// a spool that cannot write keeps why, and keep reports it after the
// command. It is safe for concurrent use.
type outputSpool struct {
	name string // "stdout" or "stderr", the key's last segment

	mu     sync.Mutex
	f      *os.File
	sum    hash.Hash
	max    int64
	stored int64 // bytes in f
	total  int64 // bytes written to the spool
	tail   []byte
	err    error // the first write error; nothing is spooled after it
	// ended: the spool is being kept; a late write (smolvm may relay a
	// last one after Exec returned) is dropped.
	ended bool
}

// tailKeep is how many of a stream's last bytes a spool keeps in memory:
// enough for any tail that fits tasks.OutputTailBytes as JSON, plus the
// bytes of a UTF-8 character cut at its start.
const tailKeep = tasks.OutputTailBytes + utf8.UTFMax

func newOutputSpool(name string, f *os.File, limit int64) *outputSpool {
	return &outputSpool{name: name, f: f, sum: sha256.New(), max: limit}
}

func (s *outputSpool) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return len(p), nil
	}
	s.total += int64(len(p))
	if len(p) >= tailKeep {
		s.tail = append(s.tail[:0], p[len(p)-tailKeep:]...)
	} else {
		if over := len(s.tail) + len(p) - tailKeep; over > 0 {
			s.tail = s.tail[:copy(s.tail, s.tail[over:])]
		}
		s.tail = append(s.tail, p...)
	}
	if s.err != nil || s.stored >= s.max {
		return len(p), nil
	}
	q := p[:min(int64(len(p)), s.max-s.stored)]
	n, err := s.f.Write(q)
	s.sum.Write(q[:n])
	s.stored += int64(n)
	if err != nil {
		s.err = err
	}
	return len(p), nil
}

// attemptOutputs spools an attempt's stdout and stderr for the store. A
// nil *attemptOutputs, a worker's without a store, spools nothing: its
// writers are the live output's alone and keep changes nothing.
type attemptOutputs struct {
	st     store.Store
	prefix string
	spools [2]*outputSpool
}

// newAttemptOutputs starts the spools of one attempt in dir, private to
// this user, each holding at most limit bytes; the streams go to st under
// prefix (see outputKeyPrefix) once kept. Call close when done.
func newAttemptOutputs(st store.Store, dir, prefix string, limit int64) (*attemptOutputs, error) {
	if err := os.MkdirAll(dir, privateDir); err != nil {
		return nil, diskErr("output spool", err)
	}
	o := &attemptOutputs{st: st, prefix: prefix}
	for i, name := range streamNames {
		f, err := os.CreateTemp(dir, "output-"+name+"-")
		if err != nil {
			o.close()
			return nil, diskErr("output spool", err)
		}
		o.spools[i] = newOutputSpool(name, f, limit)
	}
	return o, nil
}

// writer is the writer of stream (0 stdout, 1 stderr) for the command:
// the spool, and live too when it is not nil.
func (o *attemptOutputs) writer(stream int, live io.Writer) io.Writer {
	switch {
	case o == nil:
		return live
	case live == nil:
		return o.spools[stream]
	}
	return io.MultiWriter(live, o.spools[stream])
}

// keep ends the spools once the command has exited: each stream that does
// not fit in its tail is uploaded to the store, create-only, and res gets
// its tail, the count of bytes the tail leaves out, and its key; a stream
// that fits is put in res whole, with no key and no object. A spool that
// could not write (a full disk) or a store that fails makes an error to
// retry the attempt by: a result never names an object that is not whole.
func (o *attemptOutputs) keep(ctx context.Context, res *tasks.Result) error {
	if o == nil {
		return nil
	}
	var keys, tails [2]string
	var omitted [2]int64
	for i, s := range o.spools {
		s.mu.Lock()
		s.ended = true
		total, tail, werr := s.total, s.tail, s.err
		s.mu.Unlock()
		if int64(len(tail)) == total && jsonLen(string(tail)) <= tasks.OutputTailBytes {
			tails[i] = string(tail) // all of it: no object
			continue
		}
		if werr != nil {
			return diskErr(s.name+": spooling it for the store", werr)
		}
		key := o.prefix + s.name
		if err := o.upload(ctx, s, key); err != nil {
			return err
		}
		keys[i] = key
		tails[i], omitted[i] = tailOf(tail, total, tasks.OutputTailBytes)
	}
	res.Stdout, res.StdoutOmitted, res.StdoutKey = tails[0], omitted[0], keys[0]
	res.Stderr, res.StderrOmitted, res.StderrKey = tails[1], omitted[1], keys[1]
	return nil
}

// upload puts the spool's bytes in the store under key.
func (o *attemptOutputs) upload(ctx context.Context, s *outputSpool, key string) error {
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	digest := hex.EncodeToString(s.sum.Sum(nil))
	// A file store takes the spool by a hard link, without a second copy
	// of its bytes on the disk; close then only drops the spool's name.
	var obj store.Object
	err := errors.ErrUnsupported
	if l, ok := o.st.(store.Linker); ok {
		obj, err = l.PutFile(ctx, key, s.f.Name(), store.PutOptions{SHA256: digest})
	}
	if errors.Is(err, errors.ErrUnsupported) {
		obj, err = o.st.Put(ctx, key, io.LimitReader(s.f, s.stored), store.PutOptions{SHA256: digest})
	}
	if err != nil {
		return fmt.Errorf("%s: storing it: %w", s.name, err)
	}
	if obj.Size != s.stored {
		return fmt.Errorf("%s: stored %d bytes of %d", s.name, obj.Size, s.stored)
	}
	return nil
}

// close removes the spool files.
func (o *attemptOutputs) close() error {
	if o == nil {
		return nil
	}
	var errs []error
	for _, s := range o.spools {
		if s == nil {
			continue
		}
		s.mu.Lock()
		s.err = errors.Join(s.err, os.ErrClosed) // late writes spool nothing
		errs = append(errs, s.f.Close(), os.Remove(s.f.Name()))
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// tailOf is the end of a stream of total bytes whose last bytes are last,
// as a result keeps it: a marker counting the bytes left out
// ("[… N bytes omitted …]\n"), then as many of the last bytes as fit in
// budget bytes of JSON with it, from the start of a UTF-8 character. It
// returns the text and the count of bytes left out.
func tailOf(last []byte, total int64, budget int) (string, int64) {
	text := func(k int) (string, int64) {
		from := len(last) - k
		for from < len(last) && !utf8.RuneStart(last[from]) {
			from++
		}
		n := total - int64(len(last)-from)
		return fmt.Sprintf(tailMarker, n) + string(last[from:]), n
	}
	// The largest k that fits: keep the last k bytes.
	lo, hi := 0, len(last)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if t, _ := text(mid); jsonLen(t) <= budget {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return text(lo)
}

// tailMarker starts a tail, counting the bytes before it.
const tailMarker = "[… %d bytes omitted …]\n"
