package smolvm

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	v080 = Version{0, 8, 0}
	v101 = Version{1, 0, 1}
	v102 = Version{1, 0, 2}
	v193 = Version{1, 9, 3}
)

// TestSeedArgv pins the argv of each call, to the letter, on smolvm 0.x
// (the positional dialect of docs/smolvm.md).
func TestSeedArgv(t *testing.T) {
	t.Parallel()
	proxy := netip.MustParsePrefix("192.168.50.2/32")
	tests := []struct {
		name string
		call func(context.Context, *Client) error
		want []string
	}{
		{"pack_create", func(ctx context.Context, c *Client) error {
			_, err := c.PackImage(ctx, "bot-bottle-claude:latest", "/tmp/agent.smolmachine")
			return err
		}, []string{"pack", "create", "--image", "bot-bottle-claude:latest", "-o", "/tmp/agent.smolmachine"}},
		{"pack_create_from_vm", func(ctx context.Context, c *Client) error {
			_, err := c.PackFromVM(ctx, "bot-bottle-dev-abc12", "/tmp/committed")
			return err
		}, []string{"pack", "create", "--from-vm", "bot-bottle-dev-abc12", "-o", "/tmp/committed"}},
		{"machine_create_minimal", func(ctx context.Context, c *Client) error {
			return c.Create(ctx, "agent-xyz", CreateOptions{})
		}, []string{"machine", "create", "agent-xyz"}},
		{"machine_create_with_from_and_allow_cidr_and_env", func(ctx context.Context, c *Client) error {
			return c.Create(ctx, "agent-xyz", CreateOptions{
				From:       "/stage/agent.smolmachine",
				AllowCIDRs: []netip.Prefix{proxy},
				Env:        map[string]string{"HTTPS_PROXY": "http://192.168.50.2:8888"},
			})
		}, []string{"machine", "create", "--from", "/stage/agent.smolmachine", "--net", "--allow-cidr", "192.168.50.2/32", "-e", "HTTPS_PROXY=http://192.168.50.2:8888", "agent-xyz"}},
		{"machine_create_omits_net_when_no_allow_cidrs", func(ctx context.Context, c *Client) error {
			return c.Create(ctx, "agent-xyz", CreateOptions{From: "/x.smolmachine"})
		}, []string{"machine", "create", "--from", "/x.smolmachine", "agent-xyz"}},
		{"machine_start_uses_dash_name", func(ctx context.Context, c *Client) error {
			return c.Start(ctx, "agent-xyz")
		}, []string{"machine", "start", "--name", "agent-xyz"}},
		{"machine_stop_uses_dash_name", func(ctx context.Context, c *Client) error {
			return c.Stop(ctx, "agent-xyz")
		}, []string{"machine", "stop", "--name", "agent-xyz"}},
		{"machine_delete_uses_positional_name_and_force", func(ctx context.Context, c *Client) error {
			return c.Delete(ctx, "agent-xyz")
		}, []string{"machine", "delete", "-f", "agent-xyz"}},
		{"machine_exec_argv_with_separator", func(ctx context.Context, c *Client) error {
			_, err := c.Exec(ctx, "agent-xyz", []string{"echo", "hello"}, ExecOptions{})
			return err
		}, []string{"machine", "exec", "--name", "agent-xyz", "--", "echo", "hello"}},
		{"machine_exec_env_workdir_timeout", func(ctx context.Context, c *Client) error {
			_, err := c.Exec(ctx, "agent-xyz", []string{"ls"}, ExecOptions{
				Env: map[string]string{"FOO": "bar", "BAZ": "qux"}, Workdir: "/app", Timeout: 30 * time.Second,
			})
			return err
		}, []string{"machine", "exec", "--name", "agent-xyz", "-e", "BAZ=qux", "-e", "FOO=bar", "-w", "/app", "--timeout", "30s", "--", "ls"}},
		{"machine_cp_positional_argv", func(ctx context.Context, c *Client) error {
			return c.CopyOut(ctx, "agent-xyz", "/dest/file", "/host/file")
		}, []string{"machine", "cp", "agent-xyz:/dest/file", "/host/file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// 0.8.1: the seed's dialect, and past 0.8.0's stop-before-delete.
			f := &fakeRun{answers: []proc{ok("")}}
			if err := tt.call(context.Background(), fakeClient(t, Version{0, 8, 1}, f)); err != nil {
				t.Fatalf("call: %v", err)
			}
			calls := f.argvs()
			if len(calls) != 1 || !slices.Equal(calls[0], tt.want) {
				t.Errorf("argv:\n got %q\nwant %q", calls, tt.want)
			}
		})
	}
}

// TestDialectArgv pins each name-taking subcommand in both dialects.
func TestDialectArgv(t *testing.T) {
	t.Parallel()
	from := CreateOptions{From: "/p/a.smolmachine", AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32")}}
	tests := []struct {
		name string
		v    Version
		call func(context.Context, *Client) error
		want [][]string
	}{
		{"create positional 1.0.1", v101, func(ctx context.Context, c *Client) error { return c.Create(ctx, "vm1", from) },
			[][]string{{"machine", "create", "--from", "/p/a.smolmachine", "--net", "--allow-cidr", "10.0.0.2/32", "vm1"}}},
		{"create named 1.0.2", v102, func(ctx context.Context, c *Client) error { return c.Create(ctx, "vm1", from) },
			[][]string{{"machine", "create", "--name", "vm1", "--from", "/p/a.smolmachine", "--net", "--allow-cidr", "10.0.0.2/32"}}},
		{"create named resources", v193, func(ctx context.Context, c *Client) error {
			return c.Create(ctx, "vm1", CreateOptions{CPUs: 2, MemoryMiB: 1024})
		}, [][]string{{"machine", "create", "--name", "vm1", "--cpus", "2", "--mem", "1024"}}},
		{"delete positional 1.0.1", v101, func(ctx context.Context, c *Client) error { return c.Delete(ctx, "vm1") },
			[][]string{{"machine", "delete", "-f", "vm1"}}},
		{"delete named 1.9.3", v193, func(ctx context.Context, c *Client) error { return c.Delete(ctx, "vm1") },
			[][]string{{"machine", "delete", "--name", "vm1", "-f"}}},
		{"delete stops first on 0.8.0", v080, func(ctx context.Context, c *Client) error { return c.Delete(ctx, "vm1") },
			[][]string{{"machine", "stop", "--name", "vm1"}, {"machine", "delete", "-f", "vm1"}}},
		{"start named", v193, func(ctx context.Context, c *Client) error { return c.Start(ctx, "vm1") },
			[][]string{{"machine", "start", "--name", "vm1"}}},
		{"exec long --name only", v193, func(ctx context.Context, c *Client) error {
			_, err := c.Exec(ctx, "vm1", []string{"sh", "-c", "echo --name x"}, ExecOptions{Timeout: 1500 * time.Millisecond, Stream: true})
			return err
		}, [][]string{{"machine", "exec", "--name", "vm1", "--timeout", "1500ms", "--stream", "--", "sh", "-c", "echo --name x"}}},
		{"status", v193, func(ctx context.Context, c *Client) error { _, err := c.Status(ctx, "vm1"); return err },
			[][]string{{"machine", "status", "--name", "vm1", "--json"}}},
		{"ls", v080, func(ctx context.Context, c *Client) error { _, err := c.List(ctx); return err },
			[][]string{{"machine", "ls", "--json"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeRun{answers: []proc{ok("{}")}}
			if strings.HasSuffix(tt.name, "ls") {
				f.answers = []proc{ok("[]")}
			}
			if err := tt.call(context.Background(), fakeClient(t, tt.v, f)); err != nil {
				t.Fatalf("call: %v", err)
			}
			if got := f.argvs(); !slices.EqualFunc(got, tt.want, slices.Equal) {
				t.Errorf("argv:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestFormatDuration(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{30 * time.Second, "30s"},
		{time.Hour, "3600s"},
		{1500 * time.Millisecond, "1500ms"},
		{time.Microsecond, "1ms"},
		{1001 * time.Microsecond, "2ms"},
	} {
		if got := formatDuration(tt.d); got != tt.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	argv := execArgv("vm1", []string{"env", "-e", "X=shown"}, ExecOptions{Env: map[string]string{"TOKEN": "s3cret"}})
	got := strings.Join(redact(argv), " ")
	if strings.Contains(got, "s3cret") || !strings.Contains(got, "TOKEN=<redacted>") || !strings.Contains(got, "X=shown") {
		t.Errorf("redact = %q", got)
	}
	if !slices.Contains(argv, "TOKEN=s3cret") {
		t.Error("redact changed its input")
	}
}
