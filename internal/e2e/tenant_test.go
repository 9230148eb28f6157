package e2e

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestTenantsApart: tenant globex cannot start from a commit of tenant
// acme and read the secret acme's agent left in it, neither on the host
// that made the commit nor on another host of the pool (sharing its store),
// which asks the queue; the refusal reads as it does for a task that does
// not exist, and never names acme's host. acme starts from its own commit
// on either host, and hears that a task of its own that ran with
// --no-commit ran without a commit.
func TestTenantsApart(t *testing.T) {
	t.Parallel()
	s := newStack(t, "miniredis", "1.9.3")
	shared := "BOTTLEQ_STORE=file://" + filepath.Join(t.TempDir(), "store")
	wa := s.worker("BOTTLEQ_HOST=host-a", "BOTTLEQ_QUEUES=a=1", shared)
	wb := s.worker("BOTTLEQ_HOST=host-b", "BOTTLEQ_QUEUES=b=1", "BOTTLEQ_DATA_DIR="+t.TempDir(), shared)
	logs := func() string { return "host-a:\n" + wa.logs.String() + "\nhost-b:\n" + wb.logs.String() }

	run := func(tenant, queue string, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		return s.enqueue(append([]string{"--tenant", tenant, "--queue", queue, "--workdir", "/workspace", "--wait"}, args...)...)
	}
	if _, stderr, code := run("acme", "a", "--image", "alpine:3", "--task-id", "acme-1", "--", "sh", "-c", "echo s3cret > creds.txt"); code != 0 {
		t.Fatalf("acme's first task: exit %d\n%s\n%s", code, stderr, logs())
	}
	if stdout, stderr, code := run("acme", "a", "--from", "task:acme-1", "--", "cat", "creds.txt"); code != 0 || stdout != "s3cret\n" {
		t.Fatalf("acme from its own commit: exit %d, stdout %q\n%s\n%s", code, stdout, stderr, logs())
	}
	if _, stderr, code := run("acme", "a", "--image", "alpine:3", "--task-id", "acme-nc", "--no-commit", "--", "true"); code != 0 {
		t.Fatalf("acme's --no-commit task: exit %d\n%s", code, stderr)
	}

	// refusal runs a task from task:id and returns why it failed, with the
	// task ID made "ID".
	refusal := func(tenant, queue, id string) string {
		t.Helper()
		stdout, stderr, code := run(tenant, queue, "--from", "task:"+id, "--", "cat", "creds.txt")
		if code == 0 || stdout != "" || strings.Contains(stderr, "s3cret") {
			t.Fatalf("%s from task:%s on queue %s: exit %d, stdout %q, stderr %q", tenant, id, queue, code, stdout, stderr)
		}
		m := regexp.MustCompile(`(?m)^enqueue: task \S+ failed: (.*)$`).FindStringSubmatch(stderr)
		if m == nil {
			t.Fatalf("%s from task:%s: no failure in %q", tenant, id, stderr)
		}
		return strings.ReplaceAll(m[1], id, "ID")
	}
	missing := refusal("globex", "a", "nope-1")
	if !strings.HasPrefix(missing, "from: tenant globex has no commit of task ID") {
		t.Errorf("a missing task: %q", missing)
	}
	for _, tt := range []struct{ name, queue, id string }{
		{"on the host that holds it", "a", "acme-1"},
		{"on another host", "b", "acme-1"},
		{"of a --no-commit task", "a", "acme-nc"},
		{"missing, on another host", "b", "nope-1"},
	} {
		if got := refusal("globex", tt.queue, tt.id); got != missing {
			t.Errorf("globex from acme's task %s: %q; a missing task reads %q", tt.name, got, missing)
		}
	}
	if stdout, stderr, code := run("acme", "b", "--from", "task:acme-1", "--", "cat", "creds.txt"); code != 0 || stdout != "s3cret\n" {
		t.Errorf("acme from its own commit on host-b: exit %d, stdout %q\n%s\n%s", code, stdout, stderr, logs())
	}
	if got := refusal("acme", "a", "acme-nc"); !strings.Contains(got, "task ID ran without a commit") {
		t.Errorf("acme from its --no-commit task: %q", got)
	}
}
