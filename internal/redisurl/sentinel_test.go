package redisurl_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/internal/redisurl"
	"github.com/bot-bottle/bottleq/internal/testredis"
)

// runs counts how often each task ran.
type runs struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *runs) ProcessTask(ctx context.Context, t *asynq.Task) error {
	id, _ := asynq.GetTaskID(ctx)
	r.mu.Lock()
	r.n[id]++
	r.mu.Unlock()
	time.Sleep(5 * time.Millisecond) // a task is active for a while
	return nil
}

func (r *runs) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[id]
}

// open opens raw, closed at cleanup after everything registered later:
// asynq's server must stop before its client closes.
func open(t *testing.T, raw, caFile string) redis.UniversalClient {
	t.Helper()
	rc, err := redisurl.Open(raw, caFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	return rc
}

// serve runs a real asynq server on rc until cleanup.
func serve(t *testing.T, rc redis.UniversalClient) *runs {
	t.Helper()
	r := &runs{n: map[string]int{}}
	srv := asynq.NewServerFromRedisClient(rc, asynq.Config{
		Concurrency:              4,
		TaskCheckInterval:        10 * time.Millisecond,
		DelayedTaskCheckInterval: 100 * time.Millisecond,
		RetryDelayFunc:           func(int, error, *asynq.Task) time.Duration { return 100 * time.Millisecond },
		ShutdownTimeout:          time.Second,
		LogLevel:                 asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.Handle("test", r)
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return r
}

// enqueue puts task id on the queue, trying again while Redis refuses
// (as during a failover): a producer that is told its task was not taken
// sends it again, and the task ID makes that idempotent.
func enqueue(c *asynq.Client, id string) (tries int, err error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		tries++
		_, err := c.Enqueue(asynq.NewTask("test", []byte(id)), asynq.TaskID(id), asynq.Retention(time.Hour), asynq.MaxRetry(25))
		if err == nil || errors.Is(err, asynq.ErrTaskIDConflict) {
			return tries, nil
		}
		if time.Now().After(deadline) {
			return tries, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitCompleted waits until every task in ids is completed; if they are
// not, it calls dump (if set) to log why before failing.
func waitCompleted(t *testing.T, insp *asynq.Inspector, ids []string, within time.Duration, dump func()) {
	t.Helper()
	deadline := time.Now().Add(within)
	left := append([]string(nil), ids...)
	for len(left) > 0 {
		var still []string
		var last string
		for _, id := range left {
			info, err := insp.GetTaskInfo("default", id)
			if err != nil || info.State != asynq.TaskStateCompleted {
				still = append(still, id)
				last = fmt.Sprintf("%s: %v %v", id, stateOf(info), err)
			}
		}
		if left = still; len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			if dump != nil {
				dump()
			}
			t.Fatalf("%d of %d tasks not completed after %s, such as %s", len(left), len(ids), within, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func stateOf(info *asynq.TaskInfo) string {
	if info == nil {
		return "(none)"
	}
	return info.State.String()
}

// TestSentinelForms: both Sentinel forms, with passwords on the sentinels
// and (go-redis's form) on the master, and go-redis's over TLS with a CA
// file, reach the master through the sentinels, and a real asynq server
// processes what a client enqueues.
func TestSentinelForms(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]testredis.SentinelConfig{
		"asynq":        {Sentinels: 2, SentinelPassword: "sentinel-s3cret"},
		"go-redis":     {Sentinels: 2, SentinelPassword: "sentinel-s3cret", Password: "master-s3cret"},
		"go-redis+tls": {Sentinels: 2, SentinelPassword: "sentinel-s3cret", Password: "master-s3cret", TLS: true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := testredis.Sentinel(t, cfg)
			raw := s.URL()
			if name != "asynq" {
				raw = s.FailoverURL()
			}
			rc := open(t, raw, s.CAFile)
			if cfg.TLS {
				// Without the CA file the certificates are not trusted.
				if err := open(t, raw, "").Ping(t.Context()).Err(); err == nil {
					t.Error("TLS to the sentinels worked without their CA")
				}
			}
			if port := serverPort(t, rc); !strings.HasSuffix(s.Master(t).Addr, ":"+port) {
				t.Fatalf("the client talks to port %s, not the master %s", port, s.Master(t).Addr)
			}
			r := serve(t, rc)
			c := asynq.NewClientFromRedisClient(rc)
			if _, err := enqueue(c, "one"); err != nil {
				t.Fatal(err)
			}
			waitCompleted(t, asynq.NewInspectorFromRedisClient(rc), []string{"one"}, 30*time.Second, nil)
			if n := r.count("one"); n != 1 {
				t.Errorf("the task ran %d times", n)
			}
		})
	}
}

// serverPort is the port of the Redis rc talks to.
func serverPort(t *testing.T, rc redis.UniversalClient) string {
	t.Helper()
	info, err := rc.Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "tcp_port:"); ok {
			return v
		}
	}
	t.Fatalf("no tcp_port in INFO server")
	return ""
}

// TestSentinelFailoverLosesNoTask: tasks enqueued before, during and after
// SENTINEL FAILOVER all end completed, each run at least once, by a real
// asynq server whose client follows the master to the former replica.
func TestSentinelFailoverLosesNoTask(t *testing.T) {
	t.Parallel()
	s := testredis.Sentinel(t, testredis.SentinelConfig{Sentinels: 3})
	rc := open(t, s.URL(), "")
	r := serve(t, rc)
	// The producer's enqueues return once the replica has them: a write
	// only the old master took would be lost in the failover.
	c := asynq.NewClientFromRedisClient(redisurl.Replicated(rc, 1, time.Second))
	insp := asynq.NewInspectorFromRedisClient(rc)

	var ids []string
	var retried, longest atomic.Int64
	add := func(id string) {
		start := time.Now()
		tries, err := enqueue(c, id)
		if d := int64(time.Since(start)); d > longest.Load() {
			longest.Store(d)
		}
		if err != nil {
			t.Errorf("enqueue %s: %v", id, err)
		}
		retried.Add(int64(tries - 1))
	}
	for i := range 30 {
		ids = append(ids, fmt.Sprintf("before-%02d", i))
		add(ids[len(ids)-1])
	}

	// Enqueue all through the failover.
	stop := make(chan struct{})
	during := make(chan []string)
	go func() {
		var mine []string
		for i := 0; ; i++ {
			select {
			case <-stop:
				during <- mine
				return
			default:
			}
			id := fmt.Sprintf("during-%03d", i)
			start := time.Now()
			tries, err := enqueue(c, id)
			if d := int64(time.Since(start)); d > longest.Load() {
				longest.Store(d)
			}
			if err != nil {
				t.Errorf("enqueue %s: %v", id, err)
			}
			retried.Add(int64(tries - 1))
			mine = append(mine, id)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	newMaster := s.Failover(t)
	t.Logf("failover took %v", time.Since(start).Round(time.Millisecond))
	time.Sleep(time.Second) // and beyond, while the clients move
	close(stop)
	duringIDs := <-during
	ids = append(ids, duringIDs...)
	for i := range 30 {
		ids = append(ids, fmt.Sprintf("after-%02d", i))
		add(ids[len(ids)-1])
	}

	dump := func() {
		t.Logf("client on port %s; sentinels name %s", serverPort(t, rc), s.Master(t).Addr)
		for _, n := range s.Nodes {
			c := redis.NewClient(&redis.Options{Addr: n.Addr})
			info, _ := c.Info(context.Background(), "replication", "keyspace").Result()
			keys, _ := c.Keys(context.Background(), "*").Result()
			if len(keys) > 8 {
				keys = keys[:8]
			}
			t.Logf("node %s:\n%s\n%q\n%s", n.Addr, info, keys, strings.ReplaceAll(n.LogTail(40), " | ", "\n"))
			c.Close()
		}
		for _, n := range s.Sentinels {
			t.Logf("sentinel %s:\n%s", n.Addr, strings.ReplaceAll(n.LogTail(40), " | ", "\n"))
		}
	}
	start = time.Now()
	waitCompleted(t, insp, ids, 3*time.Minute, dump)
	t.Logf("%d tasks (%d during the failover) completed %v after the last enqueue; %d enqueues were refused and sent again, the longest took %v",
		len(ids), len(duringIDs), time.Since(start).Round(time.Millisecond), retried.Load(), time.Duration(longest.Load()).Round(time.Millisecond))
	twice := 0
	for _, id := range ids {
		switch n := r.count(id); {
		case n == 0:
			t.Errorf("task %s completed without running", id)
		case n > 1:
			twice++
		}
	}
	t.Logf("%d tasks ran more than once (asynq is at-least-once)", twice)
	if port := serverPort(t, rc); !strings.HasSuffix(newMaster.Addr, ":"+port) {
		t.Errorf("after the failover the client talks to port %s, not the new master %s", port, newMaster.Addr)
	}
}

// TestReplicated: a Replicated client's scripts succeed once the replicas
// asked for confirm them, what the script wrote and what it only read,
// and fail with ErrNotReplicated when there are too few.
func TestReplicated(t *testing.T) {
	t.Parallel()
	master := testredis.Real(t, "--repl-diskless-sync-delay", "0")
	replica := testredis.Real(t, "--replicaof", "127.0.0.1", strings.TrimPrefix(master.Addr, "127.0.0.1:"))
	rc := open(t, master.URL(), "")
	onReplica := open(t, replica.URL(), "")
	write := redis.NewScript(`return redis.call("SET", KEYS[1], ARGV[1])`)
	read := redis.NewScript(`return redis.call("EXISTS", KEYS[1])`)

	one := redisurl.Replicated(rc, 1, 5*time.Second)
	if err := write.Run(t.Context(), one, []string{"k"}, "v1").Err(); err != nil {
		t.Fatalf("a write with one replica: %v", err)
	}
	if got, _ := onReplica.Get(t.Context(), "k").Result(); got != "v1" {
		t.Errorf("the replica has %q after a confirmed write, want v1", got)
	}
	if n, err := read.Run(t.Context(), one, []string{"k"}).Int(); err != nil || n != 1 {
		t.Errorf("a read with one replica = %d, %v", n, err)
	}
	two := redisurl.Replicated(rc, 2, 100*time.Millisecond)
	for name, s := range map[string]*redis.Script{"write": write, "read": read} {
		if err := s.Run(t.Context(), two, []string{"k"}, "v2").Err(); !errors.Is(err, redisurl.ErrNotReplicated) {
			t.Errorf("a %s asking two replicas of one = %v, want ErrNotReplicated", name, err)
		}
	}
	// What the script returned is kept beside the error.
	if v := write.Run(t.Context(), two, []string{"k"}, "v3").Val(); v != "OK" {
		t.Errorf("the unconfirmed write's reply = %q, want OK", v)
	}
}
