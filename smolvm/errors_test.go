package smolvm

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestSeedErrorPath ports TestErrorPath: a non-zero exit of every call but
// exec is an *Error with the exit code and smolvm's message.
func TestSeedErrorPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		call func(context.Context, *Client) error
	}{
		{"create", func(ctx context.Context, c *Client) error { return c.Create(ctx, "agent-xyz", CreateOptions{}) }},
		{"pack_create", func(ctx context.Context, c *Client) error {
			_, err := c.PackImage(ctx, "missing:tag", "/tmp/out")
			return err
		}},
		{"pack_create_from_vm", func(ctx context.Context, c *Client) error {
			_, err := c.PackFromVM(ctx, "bot-bottle-dev-abc12", "/tmp/out")
			return err
		}},
		{"start", func(ctx context.Context, c *Client) error { return c.Start(ctx, "agent-xyz") }},
		{"stop", func(ctx context.Context, c *Client) error { return c.Stop(ctx, "agent-xyz") }},
		{"delete", func(ctx context.Context, c *Client) error { return c.Delete(ctx, "agent-xyz") }},
		{"cp", func(ctx context.Context, c *Client) error { return c.CopyOut(ctx, "agent-xyz", "/b", "/a") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeRun{answers: []proc{fail(1, "Error: no such image\n")}}
			err := tt.call(context.Background(), fakeClient(t, v193, f))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if e.ExitCode != 1 || !strings.Contains(err.Error(), "no such image") {
				t.Errorf("err = %v (exit %d)", err, e.ExitCode)
			}
		})
	}
}

// TestSeedExecFailureReturnsResult: a guest exiting non-zero is a result.
func TestSeedExecFailureReturnsResult(t *testing.T) {
	t.Parallel()
	f := &fakeRun{answers: []proc{{exitCode: 42, stderr: []byte("nope")}}}
	r, err := fakeClient(t, v080, f).Exec(context.Background(), "agent-xyz", []string{"sh", "-c", "exit 42"}, ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.ExitCode != 42 || string(r.Stdout) != "" || string(r.Stderr) != "nope" {
		t.Errorf("result = %+v", r)
	}
}

// TestExecTellsToolFromGuest: exit 1 is the guest's unless smolvm's own
// `Error: ` line ends stderr.
func TestExecTellsToolFromGuest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		p       proc
		wantErr error // nil: a guest result
		tool    bool
		timeout bool
	}{
		{"guest exit 1", fail(1, "grep: no match\n"), nil, false, false},
		{"guest says Error mid-stream", fail(1, "Error: bad input\nretrying\n"), nil, false, false},
		{"guest ends with its own Error line", fail(1, "step 1\nError: config file missing\n"), nil, false, false},
		{"guest's Error line with exit 3", fail(3, "Error: agent operation failed: not smolvm\n"), nil, false, false},
		{"guest mimics clap without a usage line", fail(2, "error: bad flag\n\nFor more information, try '--help'.\n"), nil, false, false},
		{"not running", fail(1, "Error: agent operation failed: connect: machine 'vm1' is not running. Use 'smolvm machine start --name vm1' first.\n"), ErrNotRunning, true, false},
		{"not found after guest-like note", fail(1, "note: no packed assets found for 'smolvm-sim'\nError: vm not found: vm1\n"), ErrNotFound, true, false},
		{"other tool failure", fail(1, "Error: agent operation failed: vm exec: failed to spawn command: nope\n"), nil, true, false},
		{"clap usage", fail(2, "error: unexpected argument '-n' found\n\nUsage: smolvm machine exec [OPTIONS]\n\nFor more information, try '--help'.\n"), ErrUsage, true, false},
		{"guest exit 2 error text", fail(2, "error: bad flag\n"), nil, false, false},
		{"timeout", fail(124, "\ncommand timed out after 1000ms"), nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeRun{answers: []proc{tt.p}}
			r, err := fakeClient(t, v193, f).Exec(context.Background(), "vm1", []string{"x"}, ExecOptions{Timeout: time.Second})
			var e *Error
			if got := errors.As(err, &e); got != tt.tool {
				t.Fatalf("tool error = %v (%v), want %v", got, err, tt.tool)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if r.ExitCode != tt.p.exitCode || r.TimedOut != tt.timeout {
				t.Errorf("result = %+v", r)
			}
		})
	}
}

// TestExecErrorKeepsNoGuestText: exec relays the guest's stderr, so a
// guest can end it with a line of smolvm's shape holding anything, a
// secret say. The *Error of such an exec says what the line means, and
// keeps the sentinel, but repeats none of its text, nor the chmod's of a
// CopyIn; a cancelled exec keeps none of it either.
func TestExecErrorKeepsNoGuestText(t *testing.T) {
	t.Parallel()
	const secret = "sk-guest-5e1f"
	tests := []struct {
		name  string
		p     proc
		perr  error
		cause error
		want  string
	}{
		{"not found", fail(1, "Error: vm not found: "+secret+"\n"), nil, ErrNotFound, "smolvm machine exec vm1: exit 1: machine not found"},
		{"not running", fail(1, "Error: agent operation failed: connect: machine '"+secret+"' is not running. Use x\n"), nil, ErrNotRunning, "smolvm machine exec vm1: exit 1: machine not running"},
		{"other prefix", fail(1, "Error: agent operation failed: vm exec: "+secret+"\n"), nil, nil, "smolvm machine exec vm1: exit 1: agent operation failed (the rest of smolvm's line is not kept: exec relays the guest's stderr)"},
		{"clap usage", fail(2, "error: "+secret+"\n\nUsage: smolvm machine exec\n\nFor more information, try '--help'.\n"), nil, ErrUsage, "smolvm machine exec vm1: exit 2: smolvm rejected its arguments"},
		{"cancelled", proc{exitCode: -1, stderr: []byte("Error: vm not found: " + secret + "\n")}, context.Canceled, context.Canceled, "smolvm machine exec vm1: context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeRun{answers: []proc{tt.p}, errs: []error{tt.perr}}
			_, err := fakeClient(t, v193, f).Exec(context.Background(), "vm1", []string{"x"}, ExecOptions{})
			var e *Error
			if !errors.As(err, &e) || (tt.cause != nil && !errors.Is(err, tt.cause)) {
				t.Fatalf("err = %v, want an *Error matching %v", err, tt.cause)
			}
			if err.Error() != tt.want || strings.Contains(e.Message, secret) {
				t.Errorf("err = %q, want %q", err, tt.want)
			}
		})
	}
	f := &fakeRun{answers: []proc{ok(""), fail(1, "chmod: "+secret+"\n")}}
	if err := fakeClient(t, v101, f).CopyIn(context.Background(), "vm1", "/h/a", "/g/a", 0o755); err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("CopyIn's chmod failure = %v, want an error without the guest's text", err)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		stderr string
		code   int
		want   error
		msg    string
	}{
		{"Error: vm not found: vm1\n", 1, ErrNotFound, "vm not found: vm1"},
		{"Error: config operation failed: machine status: machine 'vm1' not found\n", 1, ErrNotFound, ""},
		{"Error: agent operation failed: pack from VM: VM 'x' not found\n", 1, ErrNotFound, ""},
		{"Error: config operation failed: create machine: machine 'vm1' already exists or is being created\n", 1, ErrExists, ""},
		{"Error: config operation failed: create from .smolmachine: file not found: /x\n", 1, nil, ""},
		{"Error: config operation failed: cp: open /w/none.txt: no such file or directory\n", 1, ErrNoSuchFile, ""},
		{"Error: agent operation failed: file read: No such file or directory (os error 2)\n", 1, ErrNoSuchFile, ""},
		{"Error: agent operation failed: pack from VM: write /d/cache/tmp/x.smolmachine: no space left on device\n", 1, ErrNoSpace, ""},
		{"Error: config operation failed: cp: No space left on device (os error 28)\n", 1, ErrNoSpace, ""},
		{"Error: agent operation failed: pack from VM: VM 'x' is running. Stop it first with: smolvm machine stop --name x\n", 1, nil, ""},
		{"Starting machine 'vm1'...\nError: agent operation failed: start machine: kvm not available: KVM not available.\n", 1, nil, "agent operation failed: start machine: kvm not available: KVM not available."},
	}
	for _, tt := range tests {
		msg, cause, own := classify(tt.code, []byte(tt.stderr))
		if !own || cause != tt.want || (tt.msg != "" && msg != tt.msg) {
			t.Errorf("classify(%q) = %q, %v, %v; want %v", tt.stderr, msg, cause, own, tt.want)
		}
	}
}

// TestInvalidInputStartsNoProcess: bad input is an ErrInvalid naming the
// field, and smolvm never runs.
func TestInvalidInputStartsNoProcess(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		v     Version
		call  func(context.Context, *Client) error
		field string
	}{
		{"empty name", v193, func(ctx context.Context, c *Client) error { return c.Start(ctx, "") }, "name"},
		{"flag-like name", v101, func(ctx context.Context, c *Client) error { return c.Create(ctx, "-rf", CreateOptions{}) }, "name"},
		{"name with --", v193, func(ctx context.Context, c *Client) error { return c.Delete(ctx, "a--b") }, "name"},
		{"name too long", v193, func(ctx context.Context, c *Client) error { return c.Stop(ctx, strings.Repeat("a", 129)) }, "name"},
		{"flag-like image", v193, func(ctx context.Context, c *Client) error { _, err := c.PackImage(ctx, "--help", "/o"); return err }, "image"},
		{"flag-like output", v193, func(ctx context.Context, c *Client) error { _, err := c.PackImage(ctx, "alpine", "-o"); return err }, "output"},
		{"smolmachine output on 1.7", Version{1, 7, 0}, func(ctx context.Context, c *Client) error {
			_, err := c.PackImage(ctx, "alpine", "/o.smolmachine")
			return err
		}, "output"},
		{"flag-like from", v193, func(ctx context.Context, c *Client) error { return c.Create(ctx, "vm1", CreateOptions{From: "-x"}) }, "from"},
		{"env key with =", v193, func(ctx context.Context, c *Client) error {
			return c.Create(ctx, "vm1", CreateOptions{Env: map[string]string{"A=B": "c"}})
		}, "env"},
		{"env value NUL", v193, func(ctx context.Context, c *Client) error {
			_, err := c.Exec(ctx, "vm1", []string{"x"}, ExecOptions{Env: map[string]string{"A": "b\x00c"}})
			return err
		}, "env"},
		{"invalid prefix", v193, func(ctx context.Context, c *Client) error {
			return c.Create(ctx, "vm1", CreateOptions{AllowCIDRs: []netip.Prefix{{}}})
		}, "allow_cidr"},
		{"empty command", v193, func(ctx context.Context, c *Client) error {
			_, err := c.Exec(ctx, "vm1", nil, ExecOptions{})
			return err
		}, "command"},
		{"relative workdir", v193, func(ctx context.Context, c *Client) error {
			_, err := c.Exec(ctx, "vm1", []string{"x"}, ExecOptions{Workdir: "app"})
			return err
		}, "workdir"},
		{"cp relative guest path", v193, func(ctx context.Context, c *Client) error { return c.CopyOut(ctx, "vm1", "b", "/a") }, "guest_path"},
		{"wait ready bad name", v193, func(ctx context.Context, c *Client) error { return c.WaitReady(ctx, "a b", time.Second) }, "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeRun{answers: []proc{ok("")}}
			err := tt.call(context.Background(), fakeClient(t, tt.v, f))
			var ae *ArgError
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &ae) || ae.Field != tt.field {
				t.Fatalf("err = %v, want ErrInvalid for field %q", err, tt.field)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if n := len(f.argvs()); n != 0 {
				t.Errorf("ran smolvm %d times, want 0", n)
			}
		})
	}
}

func TestErrorNeverShowsEnvValues(t *testing.T) {
	t.Parallel()
	f := &fakeRun{answers: []proc{fail(1, "Error: boom\n")}}
	err := fakeClient(t, v193, f).Create(context.Background(), "vm1", CreateOptions{Env: map[string]string{"TOKEN": "hunter2"}})
	var e *Error
	if !errors.As(err, &e) {
		t.Fatal(err)
	}
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(strings.Join(e.Args, " "), "hunter2") {
		t.Errorf("secret leaked: %v %q", err, e.Args)
	}
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	good := []string{"a", "A9", "bq-0123abcd-1", "x_y", strings.Repeat("a", 128), "9lives"}
	bad := []string{"", "-a", "_a", "a-", "a--b", "a.b", "a b", "a/b", "a:b", "é", strings.Repeat("a", 129)}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidateName(n); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalid", n, err)
		}
	}
}
