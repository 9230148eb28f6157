package livelog

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/internal/testredis"
)

// eachRedis runs f against miniredis and a real redis-server.
func eachRedis(t *testing.T, f func(t *testing.T, rdb *redis.Client)) {
	for _, kind := range []string{"miniredis", "redis-server"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			var s *testredis.Server
			if kind == "miniredis" {
				s = testredis.Mini(t)
			} else {
				s = testredis.Real(t)
			}
			rdb := redis.NewClient(&redis.Options{Addr: s.Addr})
			t.Cleanup(func() { rdb.Close() })
			f(t, rdb)
		})
	}
}

func TestEntryRoundTrip(t *testing.T) {
	t.Parallel()
	for _, e := range []Entry{
		{Kind: KindAttempt, Attempt: 2, Host: "w1"},
		{Kind: KindPhase, Attempt: 1, Phase: "exec"},
		{Kind: KindOutput, Attempt: 1, Stream: Stderr, Data: []byte("a\x00b\nä")},
		{Kind: KindOutput, Attempt: 1, Stream: Stdout, Data: []byte{}},
		{Kind: KindTruncated, Attempt: 1, Reason: ReasonBacklog, StdoutDropped: 7, StderrDropped: 1 << 40},
		{Kind: KindEnd, Attempt: 1, Outcome: OutcomeDone, Phase: "delete"},
		{Kind: KindEnd, Attempt: 3, Outcome: OutcomeDone, ExitCode: 124, TimedOut: true},
		{Kind: KindEnd, Attempt: 3, Outcome: OutcomeFailed, Phase: "create", Error: "machine create: kvm: no"},
	} {
		f := e.Fields()
		values := map[string]any{}
		for i := 0; i < len(f); i += 2 {
			values[f[i]] = f[i+1]
		}
		got, err := Parse("1-0", values)
		e.ID = "1-0"
		if e.Kind == KindOutput && e.Data == nil {
			e.Data = []byte{}
		}
		if err != nil || !reflect.DeepEqual(got, e) {
			t.Errorf("Parse(Fields(%+v)) = %+v, %v", e, got, err)
		}
	}
	for _, values := range []map[string]any{
		{"kind": "nonsense", "attempt": "1"},
		{"attempt": "1"},
		{"kind": KindPhase, "attempt": "one"},
	} {
		if _, err := Parse("1-0", values); !errors.Is(err, errBadEntry) {
			t.Errorf("Parse(%v) = %v, want errBadEntry", values, err)
		}
	}
}

func TestValidID(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]bool{
		"0": true, "0-0": true, "1700000000000-12": true, "": false, "-": false, "1-": false, "-1": false,
		"1-2-3": false, "$": false, "abc": false, "1 -2": false, "+": false,
	} {
		if got := ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v", id, got)
		}
	}
}

// TestAppendCap: output entries stop at the byte cap, for every delivery
// together, while the other entries still go in; MAXLEN caps the length;
// both keys expire; Read returns what went in, in order, and resumes
// after an ID.
func TestAppendCap(t *testing.T) {
	t.Parallel()
	eachRedis(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		out := func(s string) Entry { return Entry{Kind: KindOutput, Attempt: 1, Stream: Stdout, Data: []byte(s)} }
		chunk := strings.Repeat("x", 100)
		l := Limits{MaxBytes: 3 * out(chunk).cost(), MaxEntries: 100}

		ids, err := Append(ctx, rdb, "q", "t1", l, time.Hour, []Entry{
			{Kind: KindAttempt, Attempt: 1, Host: "h"}, out(chunk), out(chunk),
		})
		if err != nil || len(ids) != 3 || ids[0] == "" || ids[1] == "" || ids[2] == "" {
			t.Fatalf("Append = %q, %v", ids, err)
		}
		// The attempt entry took some of the cap: the third chunk is refused,
		// and so is every chunk after it, whatever the delivery.
		ids, err = Append(ctx, rdb, "q", "t1", l, time.Hour, []Entry{
			out(chunk), {Kind: KindTruncated, Attempt: 1, Reason: ReasonCap}, out("y"), {Kind: KindPhase, Attempt: 1, Phase: "stop"},
		})
		if err != nil || ids[0] != "" || ids[1] == "" || ids[2] != "" || ids[3] == "" {
			t.Fatalf("Append over the cap = %q, %v", ids, err)
		}
		ids, _ = Append(ctx, rdb, "q", "t1", l, time.Hour, []Entry{{Kind: KindAttempt, Attempt: 2}, out("z")})
		if ids[0] == "" || ids[1] != "" {
			t.Errorf("a second delivery's output went past the task's cap: %q", ids)
		}

		all, err := Read(ctx, rdb, "q", "t1", "0", 100, 0)
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, e := range all {
			kinds = append(kinds, e.Kind)
		}
		want := []string{KindAttempt, KindOutput, KindOutput, KindTruncated, KindPhase, KindAttempt}
		if !reflect.DeepEqual(kinds, want) {
			t.Errorf("stream holds %q, want %q", kinds, want)
		}
		if string(all[1].Data) != chunk || all[4].Phase != "stop" {
			t.Errorf("entries read back wrong: %+v", all)
		}
		later, err := Read(ctx, rdb, "q", "t1", all[3].ID, 100, 0)
		if err != nil || len(later) != 2 || later[0].ID != all[4].ID {
			t.Errorf("Read after %s = %+v, %v; want the last two", all[3].ID, later, err)
		}
		for _, k := range []string{Key("q", "t1"), SizeKey("q", "t1")} {
			if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 0 || ttl > time.Hour {
				t.Errorf("%s expires in %v, want within the hour", k, ttl)
			}
		}

		// Once a chunk is refused, a smaller one after it in the same call is
		// too, though it would fit: the stream's output has no hole.
		tight := Limits{MaxBytes: out(chunk).cost() + out("y").cost(), MaxEntries: 100}
		ids, _ = Append(ctx, rdb, "q", "t3", tight, time.Minute, []Entry{out(chunk), out(chunk), out("y")})
		if ids[0] == "" || ids[1] != "" || ids[2] != "" {
			t.Errorf("Append after a refusal = %q, want the first only", ids)
		}

		// MAXLEN: the oldest entries go.
		short := Limits{MaxBytes: 1 << 20, MaxEntries: 3}
		for i := range 5 {
			if _, err := Append(ctx, rdb, "q", "t2", short, time.Minute, []Entry{{Kind: KindPhase, Attempt: 1, Phase: string(rune('a' + i))}}); err != nil {
				t.Fatal(err)
			}
		}
		if n := rdb.XLen(ctx, Key("q", "t2")).Val(); n != 3 {
			t.Errorf("XLEN = %d, want MAXLEN 3", n)
		}
		if got, _ := Read(ctx, rdb, "q", "t2", "0", 10, 0); len(got) != 3 || got[0].Phase != "c" {
			t.Errorf("after trimming: %+v", got)
		}
	})
}

// TestReadBlocks: Read with block waits for an entry that comes later,
// and returns none when none comes.
func TestReadBlocks(t *testing.T) {
	t.Parallel()
	eachRedis(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		if got, err := Read(ctx, rdb, "q", "none", "0", 10, 20*time.Millisecond); err != nil || len(got) != 0 {
			t.Errorf("Read of a missing stream = %+v, %v", got, err)
		}
		done := make(chan []Entry, 1)
		go func() {
			got, err := Read(ctx, rdb, "q", "t", "0", 10, time.Minute)
			if err != nil {
				t.Error(err)
			}
			done <- got
		}()
		// The reader may or may not be blocked yet: either way it gets it.
		if _, err := Append(ctx, rdb, "q", "t", Limits{MaxBytes: 1 << 20, MaxEntries: 10}, time.Minute, []Entry{{Kind: KindPhase, Attempt: 1, Phase: "exec"}}); err != nil {
			t.Fatal(err)
		}
		if got := <-done; len(got) != 1 || got[0].Phase != "exec" {
			t.Errorf("blocked Read got %+v", got)
		}
	})
}

// TestExpire: Expire shortens both keys' TTL from what Append gave them,
// and a missing key stays missing.
func TestExpire(t *testing.T) {
	t.Parallel()
	eachRedis(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		l := Limits{MaxBytes: 1 << 20, MaxEntries: 100}
		if _, err := Append(ctx, rdb, "q", "t1", l, 7*24*time.Hour, []Entry{{Kind: KindAttempt, Attempt: 1}}); err != nil {
			t.Fatal(err)
		}
		if err := Expire(ctx, rdb, "q", "t1", 30*time.Second); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{Key("q", "t1"), SizeKey("q", "t1")} {
			if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 0 || ttl > 30*time.Second {
				t.Errorf("%s expires in %v, want within 30s", k, ttl)
			}
		}
		if err := Expire(ctx, rdb, "q", "none", time.Minute); err != nil {
			t.Fatal(err)
		}
		if n := rdb.Exists(ctx, Key("q", "none"), SizeKey("q", "none")).Val(); n != 0 {
			t.Errorf("Expire of a task without live output made %d keys", n)
		}
	})
}
