package e2e

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/bot-bottle/bottleq/internal/testredis"
)

// TestSentinelFailover: the worker on asynq's redis-sentinel:// URL and
// enqueue --replicas 1 on go-redis's form run tasks enqueued before, during
// and after SENTINEL FAILOVER: each enqueue returns once the replica has
// its task, so the failover loses none, and the same worker, whose one
// Redis client follows the master, runs them all. No password reaches a
// log.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	const pw = "sentinel-pw-5be1a0"
	sen := testredis.Sentinel(t, testredis.SentinelConfig{Sentinels: 3, SentinelPassword: pw})
	s := newStack(t, "none", "1.9.3")
	s.url = sen.URL()
	w := s.worker()
	run := func(word string) (stdout, stderr string, code int) {
		return s.enqueueURL(sen.FailoverURL(), "--replicas", "1", "--image", "alpine:3", "--wait", "--", "echo", word)
	}
	check := func(word, stdout, stderr string, code int) {
		t.Helper()
		if code != 0 || stdout != word+"\n" {
			t.Errorf("%s the failover: exit %d %q %q", word, code, stdout, stderr)
		}
		if strings.Contains(stderr, pw) {
			t.Errorf("enqueue's stderr shows the password: %s", stderr)
		}
	}
	stdout, stderr, code := run("before")
	check("before", stdout, stderr, code)

	// During: started before the failover, it finishes after.
	var dOut, dErr bytes.Buffer
	during := exec.Command(bins.enqueue, "--redis", sen.FailoverURL(), "--replicas", "1", "--image", "alpine:3", "--wait", "--", "echo", "during")
	during.Stdout, during.Stderr = &dOut, &dErr
	if err := during.Start(); err != nil {
		t.Fatal(err)
	}
	sen.Failover(t)
	stdout, stderr, code = run("after")
	check("after", stdout, stderr, code)
	_ = during.Wait() // its exit code is checked
	check("during", dOut.String(), dErr.String(), during.ProcessState.ExitCode())

	if n := strings.Count(w.logs.String(), "worker serving"); n != 1 {
		t.Errorf("the worker started serving %d times, want once", n)
	}
	if strings.Contains(w.logs.String(), pw) {
		t.Error("the worker logged the sentinels' password")
	}
	if t.Failed() {
		t.Logf("worker:\n%s", w.logs)
	}
}
