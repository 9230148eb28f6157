package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/internal/livelog"
	"github.com/bot-bottle/bottleq/internal/teststore"
	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// TestBulkInStore: with a store on the worker (-store) and on the producer
// (enqueue --store), a 700 KB --file travels as a reference the worker
// downloads and checks, the agent sees its bytes, and its 40 KiB on each
// stream go to the store whole while the task in Redis keeps a reference,
// the output's tails and keys: a few KiB. Once the live output is gone,
// enqueue wait prints the tails and says --store gives all. On a file://
// store and on a real S3 server (versitygw).
func TestBulkInStore(t *testing.T) {
	for _, kind := range []string{"file", "s3"} {
		t.Run(kind, func(t *testing.T) {
			s := newStack(t, "redis-server", "1.9.3")
			var url string
			var env []string
			switch kind {
			case "file":
				dir := t.TempDir()
				url = "file://" + dir
			case "s3":
				srv := teststore.Start(t)
				url = srv.URL("pool")
				env = append(srv.Env(), "AWS_CONFIG_FILE="+filepath.Join(t.TempDir(), "none"), "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(t.TempDir(), "none"))
				for _, kv := range env { // for this test's own store.Open
					k, v, _ := strings.Cut(kv, "=")
					t.Setenv(k, v)
				}
			}
			w := s.worker(append([]string{"BOTTLEQ_STORE=" + url}, env...)...)
			input := bytes.Repeat([]byte("seven hundred KB of input, line by line.\n"), 700_000/41)
			local := filepath.Join(t.TempDir(), "input.bin")
			if err := os.WriteFile(local, input, 0o640); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(input)
			script := "sha256sum in/input.bin | cut -c1-64; yes 'the agent talks' | head -c 40960; yes 'the agent warns' | head -c 40960 >&2"
			stdout, stderr, code := s.enqueue("--store", url, "--image", "alpine:3", "--workdir", "/workspace", "--wait",
				"--file", local+":/workspace/in/input.bin", "--", "sh", "-c", script)
			wantOut := hex.EncodeToString(sum[:]) + "\n" + strings.Repeat("the agent talks\n", 2560)
			if code != 0 || stdout != wantOut {
				t.Fatalf("exit %d, stdout %d bytes %.100q; want the input's digest and 40 KiB\nstderr %s\nworker:\n%s", code, len(stdout), stdout, lastBytes(stderr, 2000), lastBytes(w.logs.String(), 5000))
			}
			m := regexp.MustCompile(`bottleq: task (\S+): enqueued on queue (\S+)`).FindStringSubmatch(stderr)
			if m == nil {
				t.Fatalf("no task ID in %q", stderr)
			}
			id, queue := m[1], m[2]
			insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: s.redis.Addr})
			defer insp.Close()
			info, err := insp.GetTaskInfo(queue, id)
			if err != nil {
				t.Fatal(err)
			}
			p, err := tasks.Decode(info.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if ref := p.Files[0].Ref; ref == nil || ref.SHA256 != hex.EncodeToString(sum[:]) || len(p.Files[0].Content) != 0 || len(info.Payload) > 1024 {
				t.Errorf("the payload in Redis (%d bytes) carries %+v, want a reference to the input", len(info.Payload), p.Files[0])
			}
			var res tasks.Result
			if err := json.Unmarshal(info.Result, &res); err != nil {
				t.Fatal(err)
			}
			if len(info.Result) > 3<<10 || res.StdoutKey == "" || res.StderrKey == "" || !strings.HasSuffix(res.Stdout, "the agent talks\n") {
				t.Errorf("result of %d bytes: %s; want output keys and tails in at most 3 KiB", len(info.Result), info.Result)
			}
			st, err := store.Open(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			var stored bytes.Buffer
			if _, err := enqueue.ReadOutput(context.Background(), st, res.StdoutKey, &stored); err != nil || stored.String() != wantOut {
				t.Errorf("stdout in the store: %d bytes, %v; want the %d the agent wrote", stored.Len(), err, len(wantOut))
			}

			// Once the live output has gone (a minute after the task), wait
			// prints the result's tails and says where the rest is.
			rdb := redis.NewClient(&redis.Options{Addr: s.redis.Addr})
			defer rdb.Close()
			if err := rdb.Del(context.Background(), livelog.Key(queue, id), livelog.SizeKey(queue, id)).Err(); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, code = s.enqueue("wait", "--queue", queue, id)
			if code != 0 || stdout != res.Stdout || !strings.Contains(stderr, "--store reads all of it from the workers' store") {
				t.Errorf("wait after the live output expired: exit %d, stdout %q, stderr %q", code, stdout, stderr)
			}
		})
	}
}
