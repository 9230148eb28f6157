package composecheck

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bot-bottle/bottleq/internal/testbin"
	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/internal/teststore"
	"github.com/bot-bottle/bottleq/store"
)

// TestWorkerTakesComposeListeners runs the real worker with the
// environment docker-compose.yml gives worker-1, on the smolvm simulator.
// Its two listen addresses name the worker by network aliases, which only
// Docker's DNS resolves; here each name is localhost and each port a free
// one (tests bind no fixed port). The worker must take a host name in
// both, serve /metrics on one and the egress proxy on the other. Its store
// is the file's BOTTLEQ_STORE with the endpoint moved to a real S3 server
// on loopback (versitygw) holding the file's bucket, and that server's
// keys for the file's.
func TestWorkerTakesComposeListeners(t *testing.T) {
	p, err := loadFile(root, userEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	w := p.Services["worker-1"]
	storeURL, storeEnv := onTestStore(t, env(w, "BOTTLEQ_STORE"))
	bins, err := testbin.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bins.Close() })
	worker, err := bins.Build("github.com/bot-bottle/bottleq/cmd/worker", "worker")
	if err != nil {
		t.Fatal(err)
	}
	// Named smolvm so that it speaks as smolvm does (docs/smolvm.md).
	sim, err := bins.Build("github.com/bot-bottle/bottleq/cmd/smolvm-sim", filepath.Join("sim", "smolvm"))
	if err != nil {
		t.Fatal(err)
	}
	redis := testredis.Mini(t)

	// onLoopback checks that compose names the listener by a network alias
	// and moves it to host on a free port. In compose the two aliases are
	// on different networks, so different addresses: here the proxy keeps a
	// name (localhost, resolved by the worker to 127.0.0.1) and metrics go
	// to 127.0.0.2, as the worker refuses any listener of its own on the
	// proxy's address.
	onLoopback := func(name, host string) string {
		h, _, err := net.SplitHostPort(env(w, name))
		if err != nil || h == "" || net.ParseIP(h) != nil {
			t.Fatalf("%s %q: want NAME:PORT", name, env(w, name))
		}
		return net.JoinHostPort(host, strconv.Itoa(freePort(t, host)))
	}
	proxyAddr, metricsAddr := onLoopback("BOTTLEQ_EGRESS_LISTEN", "localhost"), onLoopback("BOTTLEQ_METRICS_ADDR", "127.0.0.2")
	dir := t.TempDir()
	cmd := exec.Command(worker)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	for k, v := range w.Environment {
		if v != nil {
			cmd.Env = append(cmd.Env, k+"="+*v)
		}
	}
	cmd.Env = append(cmd.Env,
		"REDIS_URL="+redis.URL(), "SMOLVM_BIN="+sim, "SMOLVM_SIM_STATE="+filepath.Join(dir, "sim"),
		"BOTTLEQ_DATA_DIR="+filepath.Join(dir, "data"), "BOTTLEQ_QUEUES=compose-idle=1",
		"BOTTLEQ_EGRESS_LISTEN="+proxyAddr, "BOTTLEQ_METRICS_ADDR="+metricsAddr, "BOTTLEQ_STORE="+storeURL)
	cmd.Env = append(cmd.Env, storeEnv...)
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed when the worker has exited, with waitErr set: a
	// closed channel can be read by the failure path and by cleanup alike.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()

	metricsURL := "http://" + metricsAddr + "/metrics"
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(metricsURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %s", metricsURL, resp.Status)
			}
			break
		}
		select {
		case <-exited:
			t.Fatalf("the worker exited (%v) with compose's environment:\n%s", waitErr, log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30s: %v\n%s", metricsURL, err, log.String())
		}
	}

	// The proxy answers a client without credentials 407, as VMs see it.
	var conn net.Conn
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", proxyAddr)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("the worker exited (%v) with compose's environment:\n%s", waitErr, log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no egress proxy at %s within 30s: %v\n%s", proxyAddr, err, log.String())
		}
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 407") {
		t.Errorf("egress proxy at %s answered %q, %v; want 407\n%s", proxyAddr, status, err, log.String())
	}
	t.Logf("worker's log:\n%s", log.String())
}

// onTestStore starts versitygw on loopback with the bucket of the s3://
// URL raw, and returns raw pointing at it, and the server's keys (to
// replace the file's) for the worker's environment.
func onTestStore(t *testing.T, raw string) (string, []string) {
	t.Helper()
	loc, err := store.ParseURL(raw)
	if err != nil || loc.Bucket == "" || loc.Endpoint == "" {
		t.Fatalf("worker-1's BOTTLEQ_STORE %q: %v; want an s3:// URL with an endpoint", raw, err)
	}
	srv := teststore.Start(t)
	if _, err := srv.Client().CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(loc.Bucket)}); err != nil {
		t.Fatal(err)
	}
	loc.Endpoint = srv.Endpoint
	return loc.String(), srv.Env()
}

// lockedBuffer is a bytes.Buffer the worker's output goroutines may write
// while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
