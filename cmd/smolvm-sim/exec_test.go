package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The exec tests run the simulator as a process: its guests are processes
// too, and signals and process groups are part of what they check.

func TestExecExitCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		version string
		script  string
		code    int
	}{
		{"1.9.3", "exit 0", 0},
		{"1.9.3", "exit 1", 1},
		{"1.9.3", "exit 42", 42},
		{"1.9.3", "kill -9 $$", 137},
		{"0.8.1", "kill -TERM $$", 143},
		{"0.8.0", "kill -9 $$", 255},
	}
	for _, tt := range tests {
		t.Run(tt.version+" "+tt.script, func(t *testing.T) {
			t.Parallel()
			s := newProcSim(t, tt.version)
			s.running("m")
			if r := s.run("machine", "exec", "--name", "m", "--", "sh", "-c", tt.script); r.code != tt.code || strings.Contains(r.stderr, "Error:") {
				t.Errorf("exit %d stderr %q; want %d", r.code, r.stderr, tt.code)
			}
		})
	}
}

func TestExecErrors(t *testing.T) {
	t.Parallel()
	s := newProcSim(t, "1.9.3")
	s.ok(s.create("m")...)
	notRunning := "Error: agent operation failed: connect: machine 'm' is not running. Use 'smolvm machine start --name m' first.\n"
	s.fails(1, notRunning, "machine", "exec", "--name", "m", "--", "true")
	s.ok("machine", "start", "--name", "m")
	s.fails(1, "Error: agent operation failed: vm exec: failed to spawn command: ", "machine", "exec", "--name", "m", "--", "no-such-command-smolvm-sim")
	s.ok("machine", "stop", "--name", "m")
	s.fails(1, notRunning, "machine", "exec", "--name", "m", "--", "true")
}

// TestExecContainer: on a machine with an image (every machine bottleq
// makes) a command that cannot start is the container runtime's exit, 127
// or 126, with no "Error: " line; a timeout says "container timed out".
func TestExecContainer(t *testing.T) {
	t.Parallel()
	s := newProcSim(t, "1.9.3")
	s.running("c", "--from", s.pack("alpine:3"))
	for cmd, code := range map[string]int{"no-such-command-smolvm-sim": 127, "/nonexistent/agent": 127, "/": 126} {
		r := s.run("machine", "exec", "--name", "c", "--", cmd)
		if r.code != code || strings.Contains(r.stderr, "Error:") || !strings.Contains(r.stderr, cmd) {
			t.Errorf("%s: exit %d stderr %q; want %d and the runtime's line", cmd, r.code, r.stderr, code)
		}
	}
	r := s.run("machine", "exec", "--name", "c", "--timeout", "200ms", "--", "sleep", "30")
	if r.code != 124 || r.stderr != "container timed out\n" {
		t.Errorf("timeout: exit %d stderr %q; want 124 and \"container timed out\"", r.code, r.stderr)
	}
}

func TestExecOutput(t *testing.T) {
	t.Parallel()
	s := newProcSim(t, "1.9.3")
	s.running("m")
	// Buffered: all stdout, then all stderr; options must precede COMMAND.
	r := s.ok("machine", "exec", "--name", "m", "sh", "-c", "echo out1; echo err1 >&2; echo out2", "--name", "x")
	if r.stdout != "out1\nout2\n" || r.stderr != "err1\n" {
		t.Errorf("stdout %q stderr %q", r.stdout, r.stderr)
	}
	// The guest's stdin is /dev/null, whatever the simulator's is.
	cat := s.command("machine", "exec", "--name", "m", "--", "cat")
	cat.Stdin = strings.NewReader("typed")
	if out, err := cat.Output(); err != nil || len(out) != 0 {
		t.Errorf("guest read %q from stdin (%v)", out, err)
	}
	if r := s.ok("machine", "exec", "--name", "m", "--stream", "--", "sh", "-c", "echo a; echo b >&2"); r.stdout != "a\n" || r.stderr != "b\n" {
		t.Errorf("--stream: %q %q", r.stdout, r.stderr)
	}
	// Env precedence: create's -e < exec's -e; the workdir is the guest
	// root unless -w names another, which exec creates.
	s.running("e", "-e", "K=record", "-e", "R=kept")
	r = s.ok("machine", "exec", "--name", "e", "-e", "K=cli", "--", "sh", "-c", `echo "$K $R $SMOLVM_SIM_ROOT"; pwd`)
	if want := "cli kept " + s.root("e") + "\n" + s.root("e") + "\n"; r.stdout != want {
		t.Errorf("env/workdir: %q; want %q", r.stdout, want)
	}
	r = s.ok("machine", "exec", "--name", "e", "-w", "/srv/app", "--", "pwd")
	if want := filepath.Join(s.root("e"), "srv", "app") + "\n"; r.stdout != want {
		t.Errorf("-w: %q; want %q", r.stdout, want)
	}
}

func TestExecOutputCap(t *testing.T) {
	t.Parallel()
	const over = "head -c 12000000 /dev/zero"
	s := newProcSim(t, "1.9.3")
	s.running("m")
	s.fails(1, "Error: agent operation failed: vm exec: command output exceeded 11534336 bytes; use streaming exec (--stream)",
		"machine", "exec", "--name", "m", "--", "sh", "-c", over)
	if r := s.ok("machine", "exec", "--name", "m", "--stream", "--", "sh", "-c", over); len(r.stdout) != 12000000 {
		t.Errorf("--stream got %d bytes", len(r.stdout))
	}
	old := newProcSim(t, "1.8.0")
	old.running("m")
	if r := old.ok("machine", "exec", "--name", "m", "--", "sh", "-c", over); len(r.stdout) != outputCap {
		t.Errorf("1.8.0 got %d bytes; want the cap %d", len(r.stdout), outputCap)
	}
}

func TestExecTimeoutKillsGuest(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"0.8.0", "1.9.3"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			s := newProcSim(t, v)
			s.running("m")
			start := time.Now()
			r := s.run("machine", "exec", "--name", "m", "--timeout", "300ms", "--", "sh", "-c", "echo before; sleep 60 & echo $! > pid; wait")
			if r.code != 124 || r.stdout != "before\n" {
				t.Fatalf("exit %d stdout %q; want 124", r.code, r.stdout)
			}
			if want := "\ncommand timed out after 300ms\n"; (v != "0.8.0") != strings.Contains(r.stderr, want) {
				t.Errorf("stderr %q (want timeout text: %v)", r.stderr, v != "0.8.0")
			}
			if time.Since(start) > 30*time.Second {
				t.Errorf("timeout took %v", time.Since(start))
			}
			waitGone(t, readPID(t, filepath.Join(s.root("m"), "pid")))
		})
	}
}

func TestExecSignalKillsGuest(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			s := newProcSim(t, "1.9.3")
			s.running("m")
			cmd := s.command("machine", "exec", "--name", "m", "--", "sh", "-c", "sleep 60 & echo $! > pid; wait")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			guest := readPID(t, filepath.Join(s.root("m"), "pid"))
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			if got, want := cmd.ProcessState.ExitCode(), 128+int(sig); got != want {
				t.Errorf("simulator exit %d; want %d (stderr %q)", got, want, stderr.String())
			}
			waitGone(t, guest)
		})
	}
}

func TestExecNotReady(t *testing.T) {
	t.Parallel()
	s := newProcSim(t, "1.9.3", "SMOLVM_SIM_NOT_READY=1h")
	s.running("m")
	s.fails(1, "Error: agent operation failed: connect: machine 'm' is not running.", "machine", "exec", "--name", "m", "--", "true")

	s = newProcSim(t, "1.9.3", "SMOLVM_SIM_NOT_READY=300ms")
	s.running("m")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if s.run("machine", "exec", "--name", "m", "--", "true").code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("exec never became ready")
		}
	}
}
