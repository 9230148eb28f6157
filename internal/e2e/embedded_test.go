package e2e

import (
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestEmbeddedRedis: with no REDIS_URL the worker serves on an embedded
// Redis, says so, and enqueue --wait runs a task through it — the README's
// zero-setup path.
func TestEmbeddedRedis(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &stack{t: t, version: "1.9.3", simState: t.TempDir(), dataDir: t.TempDir()}
	cmd := exec.Command(bins.worker, "-embedded-redis", addr, "-log-format", "json")
	cmd.Env = append(os.Environ(), s.simEnv()...)
	cmd.Env = append(cmd.Env, "REDIS_URL=", "SMOLVM_BIN="+bins.sim, "BOTTLEQ_DATA_DIR="+s.dataDir, "BOTTLEQ_POLL_INTERVAL=20ms", "BOTTLEQ_METRICS_ADDR=off")
	w := s.startProc(cmd)
	if !strings.Contains(w.logs.String(), "embedded in-memory Redis") || !strings.Contains(w.logs.String(), addr) {
		t.Errorf("the worker did not say it runs an embedded Redis on %s:\n%s", addr, w.logs)
	}
	s.redis = nil
	out, errOut, code := s.enqueueURL("redis://"+addr, "--image", "alpine:3", "--wait", "--", "echo", "zero setup")
	if code != 0 || out != "zero setup\n" {
		t.Fatalf("exit %d %q %q\n%s", code, out, errOut, w.logs)
	}
	if ms := s.machines(); len(ms) != 0 {
		t.Errorf("machines left: %q", ms)
	}
}

// TestWorkerBadConfig: configuration mistakes are one clear line, not a
// stack trace, and nothing starts. The worker's listen addresses are taken
// by the test: it must report the mistake, having bound nothing before it
// checked its whole configuration.
func TestWorkerBadConfig(t *testing.T) {
	t.Parallel()
	var taken []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		taken = append(taken, l.Addr().String())
	}
	tests := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"missing smolvm", []string{"SMOLVM_BIN=/nonexistent/smolvm"}, nil, 1, `smolvm binary "/nonexistent/smolvm" not found`},
		{"bad concurrency env", []string{"BOTTLEQ_CONCURRENCY=lots"}, nil, 2, "BOTTLEQ_CONCURRENCY"},
		{"bad queues", nil, []string{"-queues", "default"}, 2, "-queues"},
		{"proxy by name", nil, []string{"-proxy", "http://proxy.local:3128"}, 2, "must be an IP address"},
		{"egress proxy on all addresses", []string{"BOTTLEQ_EGRESS_LISTEN=0.0.0.0:0"}, []string{"-redis", "redis://127.0.0.1:1"}, 2, "VMs need an address"},
		{"metrics on the proxy's address", []string{"BOTTLEQ_METRICS_ADDR=0.0.0.0:0"}, []string{"-proxy", "http://10.0.2.2:3128", "-redis", "redis://127.0.0.1:1"}, 2, "BOTTLEQ_METRICS_ADDR 0.0.0.0:0 is reachable on -proxy's address 10.0.2.2"},
		{"embedded Redis on the proxy's address", []string{"BOTTLEQ_EMBEDDED_REDIS=127.0.0.1:0", "BOTTLEQ_METRICS_ADDR=off"}, []string{"-egress-listen", "127.0.0.1:0"}, 2, "BOTTLEQ_EMBEDDED_REDIS 127.0.0.1:0 is reachable on -egress-listen's address 127.0.0.1"},
		{"old smolvm with proxy", []string{"SMOLVM_SIM_VERSION=1.7.0"}, []string{"-proxy", "http://10.0.2.2:3128", "-redis", "redis://127.0.0.1:1"}, 1, "-allow-unenforced-egress: not set, but smolvm 1.7.0 ignores --allow-cidr"},
		{"colon in data dir", nil, []string{"-data-dir", "TMP/a:b", "-redis", "redis://127.0.0.1:1"}, 1, "a:b\" must not contain ':'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tmp := t.TempDir()
			args := slices.Clone(tt.args)
			for i := range args {
				args[i] = strings.Replace(args[i], "TMP/", tmp+"/", 1)
			}
			cmd := exec.Command(bins.worker, args...)
			cmd.Env = append(os.Environ(), "SMOLVM_BIN="+bins.sim, "SMOLVM_SIM_STATE="+t.TempDir(), "BOTTLEQ_DATA_DIR="+t.TempDir(), "BOTTLEQ_LOG_FORMAT=json",
				"BOTTLEQ_METRICS_ADDR="+taken[0], "BOTTLEQ_EMBEDDED_REDIS="+taken[1])
			cmd.Env = append(cmd.Env, tt.env...)
			out, _ := cmd.CombinedOutput()
			last := lastLine(string(out))
			if cmd.ProcessState.ExitCode() != tt.code || !strings.Contains(last, tt.want) || !strings.HasPrefix(last, "worker: ") {
				t.Errorf("exit %d, last line %q; want exit %d and %q\n%s", cmd.ProcessState.ExitCode(), last, tt.code, tt.want, out)
			}
			if strings.Contains(string(out), "address already in use") {
				t.Errorf("the worker bound an address before it checked its configuration:\n%s", out)
			}
			if strings.Contains(string(out), "goroutine ") {
				t.Errorf("stack trace:\n%s", out)
			}
			if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
				t.Errorf("the refused worker created %s in its -data-dir's parent", ents[0].Name())
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
