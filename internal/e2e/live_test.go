package e2e

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/internal/livelog"
	"github.com/bot-bottle/bottleq/tasks"
	"github.com/bot-bottle/bottleq/worker"
)

// rdb is a go-redis client of the stack's Redis.
func (s *stack) rdb() *redis.Client {
	s.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.redis.Addr})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// TestLiveOutput: enqueue --wait shows the agent's first line while the
// task still runs (the agent goes on only once the test has read that line
// from enqueue's stdout and seen the task active), then the rest, once;
// every phase once, in order; the task's stream expires with it; and
// enqueue.Client.Follow resumed after an event passes on only the events
// after it.
func TestLiveOutput(t *testing.T) {
	t.Parallel()
	each(t, func(t *testing.T, s *stack) {
		w := s.worker()
		_, insp := s.client()
		gate := filepath.Join(t.TempDir(), "gate")
		id := "live-" + strings.ReplaceAll(s.version, ".", "")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bins.enqueue, "--redis", s.redisURL(), "--task-id", id, "--image", "alpine:3", "--wait", "--",
			"sh", "-c", `echo first; echo to-stderr >&2; while [ ! -e "$1" ]; do sleep 0.02; done; echo second`, "sh", gate)
		var stderr syncBuffer
		cmd.Stderr = &stderr
		pipe, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		out := bufio.NewReader(pipe)
		first, err := out.ReadString('\n')
		if err != nil || first != "first\n" {
			t.Fatalf("enqueue's first stdout line %q, %v\nstderr %s\nworker:\n%s", first, err, stderr.String(), w.logs)
		}
		if info, err := insp.GetTaskInfo(tasks.DefaultQueue, id); err != nil || info.State != asynq.TaskStateActive {
			t.Fatalf("the first line came with the task %v (%v), want it still running", info.State, err)
		}
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		rest, _ := io.ReadAll(out)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("enqueue: %v\nstderr %s", err, stderr.String())
		}
		if string(rest) != "second\n" {
			t.Errorf("stdout after the first line %q, want the second line once", rest)
		}
		if n := strings.Count(stderr.String(), "to-stderr\n"); n != 1 {
			t.Errorf("the agent's stderr line shown %d times:\n%s", n, stderr.String())
		}
		phaseLine := regexp.MustCompile(`(?m)^bottleq: task ` + id + `: ([a-z]+) \(`)
		var phases []string
		for _, m := range phaseLine.FindAllStringSubmatch(stderr.String(), -1) {
			phases = append(phases, m[1])
		}
		want := []string{"pack", "create", "start", "ready", "exec", "stop", "commit", "delete"}
		if !reflect.DeepEqual(phases, want) {
			t.Errorf("phases shown %q, want %q\n%s", phases, want, stderr.String())
		}

		rdb := s.rdb()
		if ttl := rdb.PTTL(ctx, livelog.Key(tasks.DefaultQueue, id)).Val(); ttl <= 0 || ttl > tasks.DefaultRetention {
			t.Errorf("the task's stream expires in %v, want within its retention (%v)", ttl, tasks.DefaultRetention)
		}

		c, err := enqueue.NewFromURL(s.redisURL())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var all []enqueue.Event
		if err := c.Follow(ctx, "", id, func(e enqueue.Event) error { all = append(all, e); return nil }, ""); err != nil {
			t.Fatal(err)
		}
		if len(all) < 12 || all[0].Type != enqueue.EventAttempt || all[len(all)-1].Type != enqueue.EventEnd {
			t.Fatalf("Follow passed on %d events: %+v", len(all), all)
		}
		for _, k := range []int{0, 5, len(all) - 2} {
			var later []enqueue.Event
			if err := c.Follow(ctx, "", id, func(e enqueue.Event) error { later = append(later, e); return nil }, all[k].ID); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(later, all[k+1:]) {
				t.Errorf("Follow after event %d (%s) passed on %d events, want the %d after it", k, all[k].ID, len(later), len(all)-k-1)
			}
		}
	})
}

// TestLiveOutputCap: an agent that writes 50 MB leaves a stream within the
// cap, in entries and in bytes, that says where its output was cut (and
// where Redis fell behind the agent), whose end counts every byte not
// streamed, and enqueue --wait prints the result's head and tail after
// it.
func TestLiveOutputCap(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"miniredis", "redis-server"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			s := newStack(t, kind, "1.9.3")
			w := s.worker()
			id := "chatty"
			stdout, stderr, code := s.enqueue("--task-id", id, "--image", "alpine:3", "--no-commit", "--wait", "--",
				"sh", "-c", `head -c 50000000 /dev/zero | tr '\0' x; echo; echo the-end`)
			if code != 0 || !strings.HasSuffix(stdout, "x\nthe-end\n") {
				t.Fatalf("exit %d, stdout …%q, stderr %q\nworker:\n%s", code, lastBytes(stdout, 40), lastBytes(stderr, 2000), lastBytes(w.logs.String(), 5000))
			}
			if !strings.Contains(stderr, "bottleq: task chatty: live output reached the task's cap") ||
				!strings.Contains(stderr, "bottleq: task chatty: not all of its output was shown as it came; the result's copy follows") {
				t.Errorf("stderr does not say the output was cut: %q", lastBytes(stderr, 2000))
			}

			ctx := context.Background()
			rdb := s.rdb()
			key := livelog.Key(tasks.DefaultQueue, id)
			entries, err := livelog.Read(ctx, rdb, tasks.DefaultQueue, id, "0", 1<<20, 0)
			if err != nil {
				t.Fatal(err)
			}
			xlen := rdb.XLen(ctx, key).Val()
			var size, output int64
			var cut, end *livelog.Entry
			for i, e := range entries {
				for _, f := range e.Fields() {
					size += int64(len(f))
				}
				switch e.Kind {
				case livelog.KindOutput:
					output += int64(len(e.Data))
				case livelog.KindTruncated:
					if e.Reason == livelog.ReasonCap {
						cut = &entries[i]
					}
				case livelog.KindEnd:
					end = &entries[i]
				}
			}
			maxEntries := int64(worker.DefaultLiveOutputBytes/livelog.EntryOverhead + 1024)
			t.Logf("%s: XLEN %d, %d bytes in entries, %d of output", kind, xlen, size, output)
			if xlen != int64(len(entries)) || xlen > maxEntries {
				t.Errorf("XLEN %d (%d read), want at most %d", xlen, len(entries), maxEntries)
			}
			if size > worker.DefaultLiveOutputBytes {
				t.Errorf("the stream holds %d bytes, over the cap of %d", size, worker.DefaultLiveOutputBytes)
			}
			if output < worker.DefaultLiveOutputBytes/2 {
				t.Errorf("only %d bytes of output streamed before the cap", output)
			}
			if cut == nil || end == nil || end.StdoutDropped+output != 50000000+len64("\nthe-end\n") {
				t.Errorf("truncated %+v, end %+v: want the cap's marker and the end counting the rest", cut, end)
			}
			if kind == "redis-server" {
				mem, err := rdb.MemoryUsage(ctx, key).Result()
				t.Logf("MEMORY USAGE %s = %d", key, mem)
				if err != nil || mem > worker.DefaultLiveOutputBytes*3/2 {
					t.Errorf("MEMORY USAGE = %d, %v; want at most 1.5 times the cap", mem, err)
				}
			}
			if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 0 {
				t.Errorf("the stream has no TTL (%v)", ttl)
			}
		})
	}
}

func len64(s string) int64 { return int64(len(s)) }

// TestLiveOutputAttempts: --wait tells a failed attempt and its retry as
// they happen, and the attempt of a task that fails for good, all without
// asynq's own words.
func TestLiveOutputAttempts(t *testing.T) {
	t.Parallel()
	s := newStack(t, "redis-server", "1.9.3")
	w := s.worker("SMOLVM_SIM_FAULTS=start:1:1:agent operation failed: start machine: kvm not available: injected")
	stdout, stderr, code := s.enqueue("--task-id", "r1", "--image", "alpine:3", "--no-commit", "--wait", "--", "echo", "survived")
	if code != 0 || stdout != "survived\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q\n%s", code, stdout, stderr, w.logs)
	}
	failed := strings.Index(stderr, "bottleq: task r1: attempt 1 failed in phase start: ")
	retry := strings.Index(stderr, "bottleq: task r1: attempt 2 starts on host ")
	exec := strings.Index(stderr, "bottleq: task r1: exec (running the command), attempt 2\n")
	if failed < 0 || retry < failed || exec < retry {
		t.Errorf("stderr does not tell attempt 1's failure, then attempt 2, in order:\n%s", stderr)
	}

	_, stderr, code = s.enqueue("--task-id", "r2", "--from", "task:none", "--wait", "--", "true")
	if code != 1 || !strings.Contains(stderr, "enqueue: task r2 failed: from: ") ||
		strings.Contains(stderr, asynq.SkipRetry.Error()) {
		t.Errorf("a task that cannot run: exit %d, stderr %q", code, stderr)
	}
}
