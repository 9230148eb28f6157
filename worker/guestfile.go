package worker

import (
	"context"
	"errors"
	"os"
	"regexp"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// statTimeout bounds the guest's `stat` of an artifact; a guest whose stat
// hangs is treated as one that cannot tell.
const statTimeout = 10 * time.Second

// copyWatchInterval is how often a running download's size is checked
// against the cap: it passes the cap by at most what smolvm writes in that
// time before it is stopped.
const copyWatchInterval = 10 * time.Millisecond

// guestFile is what the guest says of an artifact before it is copied.
type guestFile struct {
	// known is false when the guest could not tell: no stat in its image,
	// a stat that failed (a missing file: cp reports it), or output not
	// understood. The copy then goes ahead, under the same caps.
	known bool
	// kind is stat's %F: "regular file", "fifo", "directory", …
	kind string
	// size is stat's %s, the file's size in bytes.
	size int64
}

// regular tells a regular file, empty or not.
func (g guestFile) regular() bool { return g.kind == "regular file" || g.kind == "regular empty file" }

// statLine is the one line `stat -L -c '%F %s'` prints, in GNU coreutils
// and in busybox alike. Its text comes from the guest and is never
// repeated: only a kind of this list and a number are taken from it.
var statLine = regexp.MustCompile(`^(regular file|regular empty file|directory|fifo|symbolic link|socket|character special file|block special file|weird file|message queue|semaphore|shared memory object|typed memory object) ([0-9]{1,19})\n?$`)

// statGuest asks the guest what the artifact at guest is, with `stat -L -c
// '%F %s'` (busybox and GNU), run from / on the path made relative so that
// it cannot pass for an option. What the guest's stat says is only a
// hint: a hostile guest can lie, so the copy is capped all the same.
func (r *run) statGuest(ctx context.Context, guest string) guestFile {
	argv := []string{"stat", "-L", "-c", "%F %s", "." + guest}
	res, err := r.h.cfg.Smolvm.Exec(ctx, r.vm, argv, smolvm.ExecOptions{Workdir: "/", Timeout: statTimeout})
	if err != nil || res.ExitCode != 0 || res.StdoutOmitted > 0 {
		return guestFile{}
	}
	return parseStat(res.Stdout)
}

// parseStat reads stat's line, or returns an unknown guestFile.
func parseStat(out []byte) guestFile {
	m := statLine.FindSubmatch(out)
	if m == nil {
		return guestFile{}
	}
	size, err := strconv.ParseInt(string(m[2]), 10, 64)
	if err != nil {
		return guestFile{}
	}
	return guestFile{known: true, kind: string(m[1]), size: size}
}

// Outcomes of copyCapped besides cp's own errors.
var (
	// errCopyOverCap: the files in the download's directory passed the
	// cap, and the copy was stopped.
	errCopyOverCap = errors.New("the copy passed the cap and was stopped")
	// errCopyTimeout: the copy did not finish within Config.CopyTimeout.
	errCopyTimeout = errors.New("the copy did not finish in time")
)

// copyCapped downloads guest to host, a file in dir, which holds nothing
// else: smolvm may stage the download there under another name. The copy
// gets Config.CopyTimeout of its own, and is stopped as soon as the files
// in dir pass limit bytes. It returns errCopyOverCap, errCopyTimeout, or
// what CopyOut returned.
func (r *run) copyCapped(ctx context.Context, guest, dir, host string, limit int64) error {
	cpCtx, cancel := context.WithTimeout(ctx, r.h.cfg.CopyTimeout)
	defer cancel()
	var over atomic.Bool
	done, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		tick := time.NewTicker(copyWatchInterval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if n := dirSize(dir); n > limit {
				over.Store(true)
				cancel()
				r.log.Info().Str("phase", tasks.PhaseArtifacts).Str("artifact", guest).Int64("bytes", n).Int64("cap", limit).
					Msg("artifact copy passed the cap; stopped")
				return
			}
		}
	}()
	err := r.h.cfg.Smolvm.CopyOut(cpCtx, r.vm, guest, host)
	close(done)
	<-watched
	switch {
	case over.Load():
		return errCopyOverCap
	case err != nil && ctx.Err() == nil && errors.Is(cpCtx.Err(), context.DeadlineExceeded):
		return errCopyTimeout
	}
	return err
}

// dirSize is the size of the files in dir, not counting subdirectories.
func dirSize(dir string) int64 {
	ents, _ := os.ReadDir(dir)
	var n int64
	for _, e := range ents {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
	}
	return n
}
