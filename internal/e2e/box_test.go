package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

// hungryPack writes, with the simulator in a state directory of its own, a
// pack whose manifest says network on, 255 CPUs and 1 TiB, the way anyone
// could with smolvm: a commit (pack --from-vm --cpus 255 --mem 1048576) of
// a machine created with --net. It returns the .smolmachine file.
func hungryPack(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	env := append(os.Environ(), "SMOLVM_SIM_STATE="+filepath.Join(dir, "state"), "SMOLVM_SIM_VERSION=1.9.3")
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(bins.sim, args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("smolvm %v: %v\n%s", args, err, out)
		}
	}
	run("pack", "create", "--image", "alpine:3", "-o", filepath.Join(dir, "image"))
	run("machine", "create", "--name", "src", "--from", filepath.Join(dir, "image.smolmachine"), "--net")
	run("machine", "start", "--name", "src")
	run("machine", "stop", "--name", "src")
	run("pack", "create", "--from-vm", "src", "--cpus", "255", "--mem", "1048576", "-o", filepath.Join(dir, "hungry"))
	run("machine", "delete", "--name", "src", "-f")
	return filepath.Join(dir, "hungry.smolmachine")
}

// createdBox is the simulator's record of what a create made.
type createdBox struct {
	CPUs         int      `json:"cpus"`
	MemoryMiB    int      `json:"memory_mib"`
	Network      bool     `json:"network"`
	AllowedCIDRs []string `json:"allowed_cidrs"`
	DNS          string   `json:"dns"`
}

// created are the machines the worker's creates made, as the simulator
// recorded them (allow-list and DNS included, which status never shows).
func (s *stack) created() []call {
	return s.calls(func(c call) bool { return c.Op == "machine create" && c.Created != nil })
}

// fromDirsEnv lets the worker boot packs in dir, for workers that refuse
// an absolute `from` outside the operator's directories.
func fromDirsEnv(pack string) string { return "BOTTLEQ_FROM_DIRS=" + filepath.Dir(pack) }

// TestNoProxyNoEgress: without a proxy, a task from a pack whose manifest
// says network on, 255 CPUs and 1 TiB runs on smolvm 1.9.3 in a VM with
// loopback-only egress, a DNS server that answers nothing and the
// resources the worker allows; on 1.7.0, where smolvm cannot take the
// network away, it is archived on first delivery and its VM deleted
// before it ever starts.
func TestNoProxyNoEgress(t *testing.T) {
	t.Parallel()
	pack := hungryPack(t)
	t.Run("1.9.3", func(t *testing.T) {
		t.Parallel()
		s := newStack(t, "miniredis", "1.9.3")
		c, insp := s.client()
		s.worker(fromDirsEnv(pack))
		info := s.submit(c, tasks.AgentRun{From: pack, Command: []string{"echo", "boxed"}}, asynq.MaxRetry(0))
		done := waitState(t, insp, info.Queue, info.ID, asynq.TaskStateCompleted)
		if r := result(t, done); r.ExitCode != 0 || r.Stdout != "boxed\n" {
			t.Fatalf("result %+v", r)
		}
		made := s.created()
		if len(made) != 2 {
			t.Fatalf("%d creates, want 2 (the pack's network, then loopback only): %+v", len(made), made)
		}
		last := made[1].Created
		if made[0].Name != made[1].Name || last.CPUs != 2 || last.MemoryMiB != 2048 ||
			!slices.Equal(last.AllowedCIDRs, []string{"127.0.0.0/8", "::1/128"}) || last.DNS != "192.0.2.1" {
			t.Errorf("the VM that ran: %+v; want 2 vCPUs, 2048 MiB, loopback only, DNS 192.0.2.1", last)
		}
		if n := len(s.calls(func(c call) bool { return c.Op == "machine start" })); n != 1 {
			t.Errorf("%d starts, want 1: the first VM must be gone before anything starts", n)
		}
	})
	t.Run("1.7.0", func(t *testing.T) {
		t.Parallel()
		s := newStack(t, "miniredis", "1.7.0")
		c, insp := s.client()
		s.worker(fromDirsEnv(pack))
		info := s.submit(c, tasks.AgentRun{From: pack, Command: []string{"echo", "escaped"}}, asynq.MaxRetry(5))
		got := waitState(t, insp, info.Queue, info.ID, asynq.TaskStateArchived)
		want := "from: the pack has network on and smolvm 1.7.0 cannot turn it off;"
		if !strings.HasPrefix(got.LastErr, want) || got.Retried != 0 {
			t.Errorf("archived with %q after %d retries; want %q and none", got.LastErr, got.Retried, want)
		}
		if n := len(s.calls(func(c call) bool { return c.Op == "machine start" || c.Op == "machine exec" })); n != 0 {
			t.Errorf("%d starts or execs; want none", n)
		}
		if n := len(s.calls(func(c call) bool { return c.Op == "machine delete" && c.Exit == 0 })); n != 1 {
			t.Errorf("%d deletes; want the VM deleted", n)
		}
	})
}

// TestResourceCap: a payload asking for more vCPUs than the worker's cap
// is archived on first delivery without any smolvm call; one within it
// gets what it asked for.
func TestResourceCap(t *testing.T) {
	t.Parallel()
	s := newStack(t, "miniredis", "1.9.3")
	c, insp := s.client()
	s.worker("BOTTLEQ_VM_CPUS=3", "BOTTLEQ_VM_MEM=1024")
	info := s.submit(c, tasks.AgentRun{Image: "alpine:3", CPUs: 4, Command: []string{"true"}}, asynq.MaxRetry(5))
	got := waitState(t, insp, info.Queue, info.ID, asynq.TaskStateArchived)
	if want := "cpus: 4 vCPUs is over this worker's cap of 3"; !strings.HasPrefix(got.LastErr, want) || got.Retried != 0 {
		t.Errorf("archived with %q after %d retries; want %q", got.LastErr, got.Retried, want)
	}
	if calls := s.calls(vmCalls); len(calls) != 0 {
		t.Errorf("smolvm was called: %+v", calls)
	}
	ok := s.submit(c, tasks.AgentRun{Image: "alpine:3", CPUs: 1, Commit: tasks.Bool(false), Command: []string{"true"}})
	waitState(t, insp, ok.Queue, ok.ID, asynq.TaskStateCompleted)
	if made := s.created(); len(made) != 1 || made[0].Created.CPUs != 1 || made[0].Created.MemoryMiB != 1024 || made[0].Created.Network {
		t.Errorf("created %+v; want 1 vCPU, 1024 MiB, no network", made)
	}
}

// TestProxyIsTheOnlyDoor: with a proxy on smolvm 1.9.3 every VM may reach
// only the proxy's address and sends DNS there (nothing answers it), even
// one from a pack whose manifest says network on.
func TestProxyIsTheOnlyDoor(t *testing.T) {
	t.Parallel()
	pack := hungryPack(t)
	s := newStack(t, "miniredis", "1.9.3")
	c, insp := s.client()
	// Nothing listens there: no test dials it.
	s.worker("BOTTLEQ_PROXY=http://127.0.0.9:3128", fromDirsEnv(pack))
	for _, p := range []tasks.AgentRun{
		{Image: "alpine:3", Commit: tasks.Bool(false), Command: []string{"true"}},
		{From: pack, Commit: tasks.Bool(false), Command: []string{"true"}},
	} {
		info := s.submit(c, p)
		waitState(t, insp, info.Queue, info.ID, asynq.TaskStateCompleted)
	}
	made := s.created()
	if len(made) != 2 {
		t.Fatalf("%d creates, want one per task: %+v", len(made), made)
	}
	for _, m := range made {
		if b := m.Created; !b.Network || !slices.Equal(b.AllowedCIDRs, []string{"127.0.0.9/32"}) || b.DNS != "127.0.0.9" || b.CPUs != 2 || b.MemoryMiB != 2048 {
			t.Errorf("%s: %+v; want only 127.0.0.9/32, DNS 127.0.0.9, 2 vCPUs, 2048 MiB", m.Name, b)
		}
	}
}
