package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// Two task IDs with one slug whose SHA-256 share their first 40 bits, the
// part of it that names used to carry: found by brute force in a second.
const (
	collidingID1 = "acme-ci-pipeline-build-and-test-of-the-main-branch-nightly-run-36271"
	collidingID2 = "acme-ci-pipeline-build-and-test-of-the-main-branch-nightly-run-832930"
)

// TestIDsSharing40HashBitsStayApart: two IDs that agree in their slug and in
// 40 bits of their hash get different VMs and commit keys, and the second
// task's commit leaves the first one's alone.
func TestIDsSharing40HashBitsStayApart(t *testing.T) {
	t.Parallel()
	h1, h2 := sha256.Sum256([]byte(collidingID1)), sha256.Sum256([]byte(collidingID2))
	if !bytes.Equal(h1[:5], h2[:5]) || slug(collidingID1, 60) != slug(collidingID2, 60) {
		t.Fatal("the fixture IDs no longer share a slug and 40 bits of their hash")
	}
	if VMName(DefaultDeployment, collidingID1, 1) == VMName(DefaultDeployment, collidingID2, 1) {
		t.Error("the two IDs get one VM name")
	}
	if fileKey(collidingID1) == fileKey(collidingID2) {
		t.Error("the two IDs get one commit and artifacts key")
	}

	f := newFake()
	h, _ := newHandler(t, f, nil)
	commit := func(id string) (path string, content []byte) {
		t.Helper()
		var w results
		if err := h.Run(context.Background(), Meta{ID: id}, payload(t, basic), &w); err != nil {
			t.Fatal(err)
		}
		var res tasks.Result
		if err := json.Unmarshal(w.last, &res); err != nil || res.Commit == "" {
			t.Fatalf("task %s: result %s, %v: no commit", id, w.last, err)
		}
		b, err := os.ReadFile(res.Commit)
		if err != nil {
			t.Fatal(err)
		}
		return res.Commit, b
	}
	path1, content1 := commit(collidingID1)
	path2, _ := commit(collidingID2)
	if path1 == path2 {
		t.Errorf("both tasks committed to %s", path1)
	}
	if now, err := os.ReadFile(path1); err != nil || !bytes.Equal(now, content1) {
		t.Errorf("the second task's commit replaced the first's (%v)", err)
	}
	from := tasks.AgentRun{From: "task:" + collidingID1, Command: []string{"x"}, Commit: tasks.Bool(false)}
	if err := h.Run(context.Background(), Meta{ID: "next"}, payload(t, from), nil); err != nil {
		t.Fatal(err)
	}
	if f.lastCreate.From != path1 {
		t.Errorf("from task:%s booted %s, want its own commit %s", collidingID1, f.lastCreate.From, path1)
	}
}

// TestVMNameDeployments: every deployment's names are valid smolvm names,
// even for the longest ID and attempt, start with namePrefix, the deployment
// and '-', and never with another deployment's prefix.
func TestVMNameDeployments(t *testing.T) {
	t.Parallel()
	deployments := []string{DefaultDeployment, "a", "ab", "abc", "0123456789", DeploymentOf("127.0.0.1:6379", 1)}
	for _, d := range deployments {
		if err := ValidateDeployment(d); err != nil {
			t.Fatalf("deployment %q: %v", d, err)
		}
		for _, id := range []string{"", "x", collidingID1, strings.Repeat("é", 300), strings.Repeat("a-", 300)} {
			for _, attempt := range []int{1, math.MaxInt} {
				n := VMName(d, id, attempt)
				if err := smolvm.ValidateName(n); err != nil {
					t.Errorf("VMName(%q, %q, %d) = %q: %v", d, id, attempt, n, err)
				}
				for _, other := range deployments {
					if owns := strings.HasPrefix(n, vmPrefix(other)); owns != (other == d) {
						t.Errorf("VMName(%q, …) = %q; under %q's prefix: %v", d, n, other, owns)
					}
				}
			}
		}
	}
}

func TestValidateDeployment(t *testing.T) {
	t.Parallel()
	for d, ok := range map[string]bool{
		"prod": true, "a": true, "0123456789": true, DefaultDeployment: true,
		"": false, "01234567890": false, "Prod": false, "prod-eu": false, "prod_eu": false, "pröd": false,
	} {
		if err := ValidateDeployment(d); (err == nil) != ok {
			t.Errorf("ValidateDeployment(%q) = %v, want ok=%v", d, err, ok)
		}
	}
}

// TestDeploymentOf: one Redis database is one deployment, whatever case its
// host is written in; another database or server is another one.
func TestDeploymentOf(t *testing.T) {
	t.Parallel()
	db1 := DeploymentOf("redis.internal:6379", 1)
	if err := ValidateDeployment(db1); err != nil || len(db1) != maxDeploymentLen {
		t.Fatalf("DeploymentOf = %q: %v", db1, err)
	}
	if DeploymentOf("Redis.Internal:6379", 1) != db1 {
		t.Error("the case of the host changes the deployment")
	}
	for _, other := range []string{DeploymentOf("redis.internal:6379", 2), DeploymentOf("redis.internal:6380", 1), DeploymentOf("redis.internal:637", 91)} {
		if other == db1 {
			t.Errorf("another database or server has deployment %q too", other)
		}
	}
}
