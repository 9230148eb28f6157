package enqueue_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/internal/teststore"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// fileStore opens a file:// store in a temporary directory.
func fileStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), "file://"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// s3Store opens an s3:// store on a real versitygw on loopback through the
// AWS environment, as a producer would (so t must not be parallel), and
// returns it with a function that stops the server.
func s3Store(t *testing.T) (store.Store, func()) {
	t.Helper()
	srv := teststore.Start(t)
	srv.Setenv(t)
	st, err := store.Open(context.Background(), srv.URL("pool"))
	if err != nil {
		t.Fatal(err)
	}
	return st, srv.Stop
}

// keys lists the store's keys under prefix.
func keys(t *testing.T, st store.Store, prefix string) []string {
	t.Helper()
	var out []string
	if err := st.List(context.Background(), prefix, func(o store.Object) error { out = append(out, o.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEnqueueFilesByRef: with a store, a file over the inline threshold
// goes to the store under its tenant's inputs and the task in Redis carries
// only its reference, size and SHA-256; smaller files stay inline; the
// caller's payload is unchanged; the task's retention is the store's
// default. Against a file store and a real S3 server.
func TestEnqueueFilesByRef(t *testing.T) {
	for _, kind := range []string{"file", "s3"} {
		t.Run(kind, func(t *testing.T) {
			st := fileStore(t)
			if kind == "s3" {
				st, _ = s3Store(t)
			}
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
			c := newClient(t, r)
			big := bytes.Repeat([]byte("0123456789"), 70_000) // 700 KB
			p := payload()
			p.Tenant = "acme"
			p.Files = []tasks.File{
				{Path: "/in/big", Content: big, Mode: "0755"},
				{Path: "/in/small", Content: []byte("small")},
				{Path: "/in/edge", Content: make([]byte, enqueue.DefaultInlineFileBytes)},
			}
			info, err := c.Enqueue(context.Background(), p, enqueue.Options{Store: st})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Files[0].Content) != len(big) || p.Files[0].Ref != nil {
				t.Errorf("Enqueue changed the caller's payload: %+v", p.Files[0].Ref)
			}
			got, err := newInspector(t, r).GetTaskInfo(info.Queue, info.ID)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(got.Payload); n > 2048 {
				t.Errorf("the payload in Redis is %d bytes, want at most 2 KiB", n)
			}
			if got.Retention != enqueue.DefaultStoreRetention {
				t.Errorf("retention %s, want %s", got.Retention, enqueue.DefaultStoreRetention)
			}
			dec, err := tasks.Decode(got.Payload)
			if err != nil {
				t.Fatal(err)
			}
			ref := dec.Files[0].Ref
			sum := sha256.Sum256(big)
			if ref == nil || !strings.HasPrefix(ref.Key, "inputs/acme/") || ref.Size != int64(len(big)) ||
				ref.SHA256 != hex.EncodeToString(sum[:]) || len(dec.Files[0].Content) != 0 || dec.Files[0].Mode != "0755" {
				t.Fatalf("files[0] in Redis = %+v ref %+v; want a ref under inputs/acme/ with the file's size and digest", dec.Files[0], ref)
			}
			if dec.Files[1].Ref != nil || string(dec.Files[1].Content) != "small" || dec.Files[2].Ref != nil || len(dec.Files[2].Content) != enqueue.DefaultInlineFileBytes {
				t.Errorf("files within the threshold did not stay inline: %+v", dec.Files[1:])
			}
			rc, obj, err := st.Get(context.Background(), ref.Key)
			if err != nil {
				t.Fatal(err)
			}
			var stored bytes.Buffer
			_, err = stored.ReadFrom(rc)
			rc.Close()
			if err != nil || !bytes.Equal(stored.Bytes(), big) || obj.SHA256 != ref.SHA256 {
				t.Errorf("the store holds %d bytes (%v), want the file's %d", stored.Len(), err, len(big))
			}
			if k := keys(t, st, "inputs/"); len(k) != 1 {
				t.Errorf("the store holds inputs %q, want one", k)
			}
		})
	}
}

// TestEnqueueRefsThreshold: InlineFileBytes moves the threshold; an
// explicit Retention wins over the store's default; a payload without a
// store keeps its files inline.
func TestEnqueueRefsThreshold(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		o        func(store.Store) enqueue.Options
		wantRefs int
		wantRet  time.Duration
	}{
		{"no store", func(store.Store) enqueue.Options { return enqueue.Options{} }, 0, tasks.DefaultRetention},
		{"threshold 10", func(st store.Store) enqueue.Options { return enqueue.Options{Store: st, InlineFileBytes: 10} }, 1, enqueue.DefaultStoreRetention},
		{"every file", func(st store.Store) enqueue.Options { return enqueue.Options{Store: st, InlineFileBytes: -1} }, 2, enqueue.DefaultStoreRetention},
		{"own retention", func(st store.Store) enqueue.Options {
			return enqueue.Options{Store: st, InlineFileBytes: -1, Retention: 72 * time.Hour}
		}, 2, 72 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := fileStore(t)
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
			c := newClient(t, r)
			p := payload()
			p.Files = []tasks.File{{Path: "/a", Content: []byte("eleven byte")}, {Path: "/b", Content: []byte("ten bytes!")}, {Path: "/empty"}}
			info, err := c.Enqueue(context.Background(), p, tt.o(st))
			if err != nil {
				t.Fatal(err)
			}
			got, err := newInspector(t, r).GetTaskInfo(info.Queue, info.ID)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := tasks.Decode(got.Payload)
			if err != nil {
				t.Fatal(err)
			}
			refs := 0
			for _, f := range dec.Files {
				if f.Ref != nil {
					refs++
				}
			}
			if refs != tt.wantRefs || got.Retention != tt.wantRet || len(keys(t, st, "inputs/")) != refs {
				t.Errorf("%d refs, retention %s, %d objects; want %d refs, retention %s", refs, got.Retention, len(keys(t, st, "inputs/")), tt.wantRefs, tt.wantRet)
			}
		})
	}
}

// TestEnqueueRefsLeftNothing: a payload that is refused, over the cap or a
// duplicate task ID uploads nothing, or deletes what it uploaded.
func TestEnqueueRefsLeftNothing(t *testing.T) {
	t.Parallel()
	st := fileStore(t)
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	c := newClient(t, r)
	ctx := context.Background()
	big := withFile(payload(), 5000)
	if _, err := c.Enqueue(ctx, big, enqueue.Options{Store: st, TaskID: "dup"}); err != nil {
		t.Fatal(err)
	}
	first := keys(t, st, "inputs/")
	if len(first) != 1 {
		t.Fatalf("inputs after one Enqueue: %q", first)
	}
	if _, err := c.Enqueue(ctx, big, enqueue.Options{Store: st, TaskID: "dup"}); !errors.Is(err, enqueue.ErrDuplicate) {
		t.Fatalf("second Enqueue of dup: %v", err)
	}
	bad := big
	bad.Command = nil
	var ve *tasks.ValidationError
	if _, err := c.Enqueue(ctx, bad, enqueue.Options{Store: st}); !errors.As(err, &ve) || ve.Field != "command" {
		t.Fatalf("invalid payload: %v", err)
	}
	if _, err := c.Enqueue(ctx, withFile(payload(), 2<<20), enqueue.Options{Store: st}); !errors.As(err, &ve) || ve.Field != "files" {
		t.Fatalf("payload over the cap: %v", err)
	}
	if got := keys(t, st, "inputs/"); len(got) != 1 || got[0] != first[0] {
		t.Errorf("inputs left: %q, want only the first task's %q", got, first)
	}
}

// TestEnqueueStoreDown: a store that does not answer fails Enqueue with an
// error matching store.ErrUnavailable, and nothing is enqueued.
func TestEnqueueStoreDown(t *testing.T) {
	st, stop := s3Store(t)
	stop()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	c := newClient(t, r)
	_, err := c.Enqueue(context.Background(), withFile(payload(), 5000), enqueue.Options{Store: st})
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "files[0]: uploading it to the store") {
		t.Fatalf("Enqueue with the store down = %v, want files[0]'s upload failing with store.ErrUnavailable", err)
	}
	if qs, _ := newInspector(t, r).Queues(); len(qs) != 0 {
		t.Errorf("queues after a failed upload: %q", qs)
	}
}

// TestReadOutput: a stored stream comes back whole; a key past retention is
// store.ErrNotFound; a key that is no output stream is refused unread.
func TestReadOutput(t *testing.T) {
	t.Parallel()
	st := fileStore(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte("output line\n"), 5000)
	key := tasks.OutputKeyPrefix + "acme/t-1/1-ab/stdout"
	if _, err := st.Put(ctx, key, bytes.NewReader(data), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if n, err := enqueue.ReadOutput(ctx, st, key, &got); err != nil || n != int64(len(data)) || !bytes.Equal(got.Bytes(), data) {
		t.Errorf("ReadOutput = %d, %v; want the %d bytes stored", n, err, len(data))
	}
	if _, err := enqueue.ReadOutput(ctx, st, tasks.OutputKeyPrefix+"acme/t-1/1-ab/stderr", &got); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a missing stream: %v, want store.ErrNotFound", err)
	}
	if _, err := st.Put(ctx, "commits/acme/t-1.smolmachine", bytes.NewReader(data), store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	got.Reset()
	if _, err := enqueue.ReadOutput(ctx, st, "commits/acme/t-1.smolmachine", &got); !errors.Is(err, enqueue.ErrNotAnOutput) || got.Len() != 0 {
		t.Errorf("a commit's key: %v (%d bytes), want ErrNotAnOutput and nothing read", err, got.Len())
	}
}
