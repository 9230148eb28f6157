package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// Help of --store and --retention.
var (
	storeFlagHelp = "the workers' store `URL`, as their -store: file:///ABS/DIR or s3://BUCKET/PREFIX?endpoint=URL&region=R&path_style=true, " +
		"S3 credentials from the standard AWS environment. With it each --file over " + tasks.FormatBytes(enqueue.DefaultInlineFileBytes) +
		" goes to the store and the task carries a reference to it, the task is kept " + enqueue.DefaultStoreRetention.String() +
		" once finished (--retention), --wait reads from there the output its live output missed, and --artifacts-dir downloads from there " +
		"(default $BOTTLEQ_STORE, else none; --artifacts-dir alone downloads from the worker's default store when it is on this machine)"
	retentionFlagHelp = "how long the finished task and its result stay readable, at least 1s (default " + enqueue.DefaultStoreRetention.String() +
		" with --store, else " + tasks.DefaultRetention.String() + ")"
)

// checkBulk reads --store, or BOTTLEQ_STORE, and --retention, without
// touching the store.
func (c *config) checkBulk(getenv func(string) string) error {
	c.storeFrom = "--store"
	if c.storeURL == "" {
		c.storeURL, c.storeFrom = getenv("BOTTLEQ_STORE"), "BOTTLEQ_STORE"
	}
	if c.storeURL != "" {
		if _, err := store.ParseURL(c.storeURL); err != nil {
			var ce *store.ConfigError
			if errors.As(err, &ce) {
				return usagef("%s: %s: %s", c.storeFrom, ce.Field, ce.Reason)
			}
			return usagef("%s: %v", c.storeFrom, err)
		}
	}
	switch r := c.opts.Retention; {
	case r < 0:
		return usagef("--retention: must not be negative")
	case r > 0 && r < time.Second:
		return usagef("--retention: %s is shorter than a second", r)
	}
	return nil
}

// openStore opens the store --store names, checking that it works, before
// anything is enqueued; nil without one.
func (c *config) openStore(ctx context.Context) (store.Store, error) {
	if c.storeURL == "" {
		return nil, nil
	}
	// A typing mistake in a file:// URL would make an empty store that no
	// worker reads.
	if loc, _ := store.ParseURL(c.storeURL); loc.Dir != "" {
		if fi, err := os.Stat(loc.Dir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("%s: the store directory %s does not exist", c.storeFrom, loc.Dir)
		}
	}
	st, err := store.Open(ctx, c.storeURL)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.storeFrom, err)
	}
	return st, nil
}

// outputSource says where printOutput takes the output from.
func outputSource(st store.Store, r tasks.Result) string {
	switch {
	case st != nil && (r.StdoutKey != "" || r.StderrKey != ""):
		return "the whole of it follows, from the store"
	case r.StdoutKey != "" || r.StderrKey != "":
		return "the result's copy follows (the tail of each stream; --store reads all of it from the workers' store)"
	}
	return "the result's copy follows (the head and tail of each stream)"
}

// printOutput prints the task's output from its result: each stream from
// the store when the result names it there and st is set, else the
// result's copy. A stream the store cannot give is printed from the result
// after a line saying why; with hint, a line says so when the result keeps
// only the tail of a stream that st would give whole.
func printOutput(ctx context.Context, st store.Store, id string, r tasks.Result, hint bool, stdout, stderr io.Writer) {
	if hint && st == nil && (r.StdoutKey != "" || r.StderrKey != "") {
		fmt.Fprintf(stderr, "bottleq: task %s: %s\n", id, outputSource(st, r))
	}
	for _, s := range []struct {
		name, key, copy string
		w               io.Writer
	}{{"stdout", r.StdoutKey, r.Stdout, stdout}, {"stderr", r.StderrKey, r.Stderr, stderr}} {
		if st != nil && s.key != "" {
			n, err := enqueue.ReadOutput(ctx, st, s.key, s.w)
			if err == nil {
				continue
			}
			if n > 0 {
				fmt.Fprintln(s.w)
			}
			fmt.Fprintf(stderr, "bottleq: task %s: its %s from the store: %s; the result's tail follows\n", id, s.name,
				strings.TrimPrefix(err.Error(), "enqueue: "))
		}
		_, _ = io.WriteString(s.w, s.copy)
	}
}
