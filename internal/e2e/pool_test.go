package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/teststore"
	"github.com/bot-bottle/bottleq/tasks"
)

// poolHost is one worker host of a pool: a worker process with a host
// name, data directory and simulator state of its own.
type poolHost struct {
	name, data, sim string
	p               *proc
}

// storeEnv is the environment that points a worker at srv's bucket, under
// the key prefix "pool", through the standard AWS chain.
func storeEnv(t *testing.T, srv *teststore.Server) []string {
	return append(srv.Env(),
		"BOTTLEQ_STORE="+srv.URL("pool"),
		"AWS_CONFIG_FILE="+filepath.Join(t.TempDir(), "none"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(t.TempDir(), "none"))
}

// poolWorker starts a worker host of the stack's pool with env added (the
// store's, say). At cleanup, after the worker has stopped, its simulator
// must hold no machine.
func (s *stack) poolWorker(name string, env ...string) *poolHost {
	s.t.Helper()
	h := &poolHost{name: name, data: s.t.TempDir(), sim: s.t.TempDir()}
	s.t.Cleanup(func() {
		if ms := simMachines(s.t, s.version, h.sim); len(ms) != 0 {
			s.t.Errorf("machines left in %s's simulator: %q", name, ms)
		}
	})
	h.p = s.worker(append([]string{"BOTTLEQ_HOST=" + name, "BOTTLEQ_DATA_DIR=" + h.data, "SMOLVM_SIM_STATE=" + h.sim}, env...)...)
	return h
}

// stop stops the host's worker, which must exit 0.
func (h *poolHost) stop(t *testing.T) {
	t.Helper()
	if err := h.p.stop(); err != nil {
		t.Fatalf("%s exit: %v\n%s", h.name, err, h.p.logs)
	}
}

// simMachines lists the machines of the simulator state sim.
func simMachines(t *testing.T, version, sim string) []string {
	t.Helper()
	cmd := exec.Command(bins.sim, "machine", "ls", "--json")
	cmd.Env = append(os.Environ(), "SMOLVM_SIM_STATE="+sim, "SMOLVM_SIM_VERSION="+version)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("machine ls: %v", err)
	}
	var ms []struct{ Name string }
	if err := json.Unmarshal(out, &ms); err != nil {
		t.Fatalf("machine ls: %v: %s", err, out)
	}
	var names []string
	for _, m := range ms {
		names = append(names, m.Name)
	}
	return names
}

// simCalls returns the calls logged by the simulator state sim that match
// keep.
func simCalls(t *testing.T, sim string, keep func(call) bool) []call {
	t.Helper()
	return (&stack{t: t, simState: sim}).calls(keep)
}

// storeKeys lists srv's keys under the pool's prefix and prefix.
func storeKeys(t *testing.T, srv *teststore.Server, prefix string) []string {
	t.Helper()
	out, err := srv.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{
		Bucket: aws.String(srv.Bucket), Prefix: aws.String("pool/" + prefix),
	})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, strings.TrimPrefix(aws.ToString(o.Key), "pool/"))
	}
	return keys
}

// poolStore is the store of a pool test, as the test looks into it.
type poolStore struct {
	env []string
	// keys lists the keys under prefix.
	keys func(prefix string) []string
	// object returns an object's size and SHA-256.
	object func(key string) (int64, string, error)
}

// s3Pool is a pool store on a real versitygw, under the prefix "pool".
func s3Pool(t *testing.T) poolStore {
	srv := teststore.Start(t)
	return poolStore{
		env:  storeEnv(t, srv),
		keys: func(prefix string) []string { return storeKeys(t, srv, prefix) },
		object: func(key string) (int64, string, error) {
			head, err := srv.Client().HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(srv.Bucket), Key: aws.String("pool/" + key)})
			if err != nil {
				return 0, "", err
			}
			return aws.ToInt64(head.ContentLength), head.Metadata["sha256"], nil
		},
	}
}

// filePool is a pool store in a directory outside every host's data
// directory, as a shared mount would be.
func filePool(t *testing.T) poolStore {
	dir := filepath.Join(t.TempDir(), "shared")
	return poolStore{
		env: []string{"BOTTLEQ_STORE=file://" + dir},
		keys: func(prefix string) []string {
			var keys []string
			filepath.WalkDir(filepath.Join(dir, filepath.FromSlash(prefix)), func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					rel, _ := filepath.Rel(dir, p)
					keys = append(keys, filepath.ToSlash(rel))
				}
				return nil
			})
			return keys
		},
		object: func(key string) (int64, string, error) {
			b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(key)))
			sum := sha256.Sum256(b)
			return int64(len(b)), hex.EncodeToString(sum[:]), err
		},
	}
}

// TestPoolCommitsAcrossHosts is the pool test: three worker hosts (their
// own host name, data directory and simulator state), one Redis and one
// store, a real S3 server (versitygw) or a directory they share. Task A
// commits on host 1, which is then stopped and its data directory deleted;
// task B from task:A runs on host 2 and sees A's file; task C from task:B
// runs on host 3 and sees both. Each result names its commit's key and when
// it expires, and says its pack came from a commit; each artifact is in the
// store under its key.
func TestPoolCommitsAcrossHosts(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(*testing.T) poolStore{"s3": s3Pool, "file": filePool} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			poolCommits(t, open(t))
		})
	}
}

func poolCommits(t *testing.T, ps poolStore) {
	s := newStack(t, "redis-server", "1.9.3")
	_, insp := s.client()
	type step struct {
		host, id, from string
		script, want   string
	}
	steps := []step{
		{"host-1", "pool-a", "", "echo from-a > a.txt", ""},
		{"host-2", "pool-b", "task:pool-a", "cat a.txt; echo from-b > b.txt", "from-a\n"},
		{"host-3", "pool-c", "task:pool-b", "cat a.txt b.txt; echo from-c > c.txt", "from-a\nfrom-b\n"},
	}
	for _, st := range steps {
		h := s.poolWorker(st.host, ps.env...)
		args := []string{"--task-id", st.id, "--workdir", "/work", "--artifact", "/work/" + strings.TrimPrefix(st.id, "pool-") + ".txt", "--wait"}
		if st.from == "" {
			args = append(args, "--image", "alpine:3")
		} else {
			args = append(args, "--from", st.from)
		}
		stdout, stderr, code := s.enqueue(append(args, "--", "sh", "-c", st.script)...)
		if code != 0 || stdout != st.want {
			t.Fatalf("%s on %s: exit %d, stdout %q, want %q\n%s\n%s", st.id, st.host, code, stdout, st.want, stderr, h.p.logs)
		}
		r := result(t, waitState(t, insp, tasks.DefaultQueue, st.id, asynq.TaskStateCompleted))
		wantSource := tasks.PackSourceCommit
		if st.from == "" {
			wantSource = tasks.PackSourcePacked
		}
		if r.Host != st.host || r.PackSource != wantSource || r.CommitKey == "" || r.CommitExpires == nil ||
			time.Until(*r.CommitExpires) < 6*24*time.Hour || time.Until(*r.CommitExpires) > 7*24*time.Hour {
			t.Errorf("%s: host %q, pack source %q, commit key %q expiring %v; want %s, %s, a key, in 7 days", st.id, r.Host, r.PackSource, r.CommitKey, r.CommitExpires, st.host, wantSource)
		}
		if len(r.Artifacts) != 1 || r.Artifacts[0].Key == "" {
			t.Fatalf("%s: artifacts %+v, want one stored", st.id, r.Artifacts)
		}
		if size, sum, err := ps.object(r.Artifacts[0].Key); err != nil || size != r.Artifacts[0].Size || sum != r.Artifacts[0].SHA256 {
			t.Errorf("%s: artifact %s in the store: %d bytes, sha256 %s, %v; want %d, %s", st.id, r.Artifacts[0].Key, size, sum, err, r.Artifacts[0].Size, r.Artifacts[0].SHA256)
		}
		// The host goes, and its disk with it.
		h.stop(t)
		if err := os.RemoveAll(h.data); err != nil {
			t.Fatal(err)
		}
	}
	if keys := ps.keys("commits/"); len(keys) != 6 {
		t.Errorf("store commits %q, want three commits and their owner records", keys)
	}
}

// TestPoolPacksOnce: 50 tasks of an image no host has packed, racing
// across three worker hosts (their own host name, data directory and
// simulator state; one Redis, one versitygw store), make exactly one
// `pack create --image` in the whole pool and one pack in the store; the
// other hosts download it.
func TestPoolPacksOnce(t *testing.T) {
	t.Parallel()
	s := newStack(t, "redis-server", "1.9.3")
	srv := teststore.Start(t)
	// A slow pack widens the race.
	env := append(storeEnv(t, srv), "SMOLVM_SIM_DELAY=pack-image=1s", "BOTTLEQ_CONCURRENCY=4")
	var hosts []*poolHost
	for i := range 3 {
		hosts = append(hosts, s.poolWorker(fmt.Sprintf("host-%d", i+1), env...))
	}
	c, insp := s.client()
	const n = 50
	var infos []*asynq.TaskInfo
	for i := range n {
		infos = append(infos, s.submit(c, tasks.AgentRun{Image: "alpine:3.20", Commit: tasks.Bool(false), Command: []string{"echo", fmt.Sprint(i)}}, asynq.MaxRetry(0)))
	}
	sources := map[string]int{}
	ran := map[string]int{}
	packers := map[string]bool{}
	for _, info := range infos {
		r := result(t, waitStateWithin(t, insp, info.Queue, info.ID, asynq.TaskStateCompleted, 3*time.Minute))
		sources[r.PackSource]++
		ran[r.Host]++
		if r.PackSource == tasks.PackSourcePacked {
			packers[r.Host] = true // it, and the tasks of its host that waited for it
		}
	}
	packs := 0
	for _, h := range hosts {
		packs += len(simCalls(t, h.sim, imagePacks))
	}
	if packs != 1 || len(packers) != 1 {
		t.Errorf("%d image packs in the pool, by %v; want exactly one pack", packs, packers)
	}
	if sources[tasks.PackSourcePacked]+sources[tasks.PackSourceStore]+sources[tasks.PackSourceCache] != n {
		t.Errorf("pack sources %v: want packed, store or cache for every task", sources)
	}
	if keys := storeKeys(t, srv, "packs/"); len(keys) != 1 || !strings.HasPrefix(keys[0], "packs/tagged/") {
		t.Errorf("store packs %q, want one", keys)
	}
	if len(ran) > 1 && sources[tasks.PackSourceStore] == 0 {
		t.Errorf("tasks ran on %v, yet none downloaded the pack", ran)
	}
	t.Logf("tasks per host %v, pack sources %v", ran, sources)
}

// TestStoreFailsFast: a worker whose -store cannot work exits 1 at start
// with one line naming -store: an unreachable server, wrong credentials, a
// missing bucket.
func TestStoreFailsFast(t *testing.T) {
	t.Parallel()
	srv := teststore.Start(t)
	down := teststore.Start(t)
	down.Stop()
	none := filepath.Join(t.TempDir(), "none")
	base := []string{"AWS_REGION=" + srv.Region, "AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=" + none, "AWS_SHARED_CREDENTIALS_FILE=" + none}
	creds := []string{"AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + srv.SecretKey}
	for _, tt := range []struct {
		name string
		env  []string
		want string
	}{
		{"unreachable", append(append([]string{"BOTTLEQ_STORE=" + down.URL("pool")}, creds...), base...), "-store: store unreachable"},
		{"wrong credentials", append([]string{"BOTTLEQ_STORE=" + srv.URL("pool"), "AWS_ACCESS_KEY_ID=" + srv.AccessKey, "AWS_SECRET_ACCESS_KEY=wrong-secret"}, base...), "-store: store: credentials"},
		{"missing bucket", append(append([]string{"BOTTLEQ_STORE=" + strings.Replace(srv.URL("pool"), srv.Bucket, "no-such-bucket", 1)}, creds...), base...), "-store: store: bucket"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bins.worker, "-log-format", "json", "-metrics-addr", "off", "-embedded-redis", "127.0.0.1:0")
			cmd.Env = append(os.Environ(), "SMOLVM_BIN="+bins.sim, "SMOLVM_SIM_STATE="+t.TempDir(), "BOTTLEQ_DATA_DIR="+t.TempDir())
			cmd.Env = append(cmd.Env, tt.env...)
			out, err := cmd.CombinedOutput()
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			last := lines[len(lines)-1]
			if cmd.ProcessState.ExitCode() != 1 || !strings.HasPrefix(last, "worker: "+tt.want) {
				t.Errorf("exit %v, last line %q; want exit 1 and %q\n%s", err, last, "worker: "+tt.want, out)
			}
			if strings.Contains(string(out), "wrong-secret") || strings.Contains(string(out), srv.SecretKey) {
				t.Error("the worker printed a secret")
			}
		})
	}
}
