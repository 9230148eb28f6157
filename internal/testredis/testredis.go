// Package testredis gives tests a Redis: an in-process miniredis, or a real
// redis-server started on a free loopback port and stopped by its pid.
//
// Where redis-server is not installed the real-Redis tests skip and say why,
// so `make test` passes on a machine with only Go. Under CI (CI=true) a
// missing redis-server fails the test instead: .ci/run installs it, and a
// skip there would hide that the tests did not run.
package testredis

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// Server is a Redis a test talks to on loopback.
type Server struct {
	// Addr is host:port on loopback.
	Addr string
	// Kind is "miniredis" or "redis-server".
	Kind string

	// CAFile is the PEM CA that signed a TLS server's certificate.
	CAFile string

	mini *miniredis.Miniredis
	cmd  *exec.Cmd
	args []string
	dir  string
	tls  *tls.Config // set for a TLS server, for PING
}

// URL returns redis://Addr, or rediss://Addr for a TLS server.
func (s *Server) URL() string {
	if s.tls != nil {
		return "rediss://" + s.Addr
	}
	return "redis://" + s.Addr
}

// Mini starts a miniredis on a free loopback port, stopped at cleanup.
func Mini(t testing.TB) *Server {
	t.Helper()
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return &Server{Addr: m.Addr(), Kind: "miniredis", mini: m}
}

// RefusedAddr returns a loopback address whose dials are refused for the
// rest of the test: a socket bound to a port, never listening, held until
// cleanup. A port found free and let go instead (listen, close) may be
// taken by a server another test starts meanwhile, and the dial answered.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// redisServer returns the redis-server path, or why there is none.
func redisServer() (string, error) {
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("redis-server is not installed (apt-get install redis-server, or run .ci/run): %w", err)
	}
	return p, nil
}

// Real starts redis-server on a free loopback port with extra config
// arguments (such as "--requirepass", "pw"), stopped at cleanup. It skips
// the test when redis-server is missing, except under CI.
func Real(t testing.TB, extra ...string) *Server {
	t.Helper()
	return startReal(t, nil, extra...)
}

// RealTLS starts redis-server speaking only TLS, with a certificate for
// 127.0.0.1 signed by a CA made for the test (Server.CAFile).
func RealTLS(t testing.TB, extra ...string) *Server {
	t.Helper()
	dir := t.TempDir()
	ca, err := writeCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	return startReal(t, &tlsFiles{dir: dir, ca: ca}, extra...)
}

type tlsFiles struct {
	dir string
	ca  *x509.CertPool
}

func startReal(t testing.TB, tf *tlsFiles, extra ...string) *Server {
	t.Helper()
	bin := binaryOrSkip(t)
	s := &Server{Kind: "redis-server", dir: t.TempDir()}
	if tf != nil {
		s.tls = &tls.Config{RootCAs: tf.ca, ServerName: "127.0.0.1"}
		s.CAFile = filepath.Join(tf.dir, "ca.pem")
	}
	s.launch(t, bin, func(port int) ([]string, error) {
		args := []string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no"}
		if tf != nil {
			args = []string{"--port", "0", "--tls-port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no",
				"--tls-cert-file", filepath.Join(tf.dir, "server.pem"), "--tls-key-file", filepath.Join(tf.dir, "server.key"),
				"--tls-ca-cert-file", filepath.Join(tf.dir, "ca.pem"), "--tls-auth-clients", "no"}
		}
		return append(args, extra...), nil
	})
	return s
}

// binaryOrSkip returns the redis-server path, or skips the test (fails it
// under CI) when there is none.
func binaryOrSkip(t testing.TB) string {
	t.Helper()
	bin, err := redisServer()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must run the real-Redis tests: %v", err)
		}
		t.Skipf("skipping real-Redis test: %v", err)
	}
	return bin
}

// launch starts bin with the arguments argsFor gives for a free loopback
// port, trying other ports if one is taken meanwhile; the server is
// stopped at cleanup.
func (s *Server) launch(t testing.TB, bin string, argsFor func(port int) ([]string, error)) {
	t.Helper()
	var last error
	for try := 0; try < 5; try++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s.Addr = fmt.Sprintf("127.0.0.1:%d", port)
		if s.args, err = argsFor(port); err != nil {
			t.Fatal(err)
		}
		if last = s.start(bin); last == nil {
			t.Cleanup(s.Stop)
			return
		}
	}
	t.Fatalf("redis-server did not start: %v", last)
}

func (s *Server) start(bin string) error {
	cmd := exec.Command(bin, s.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, err := os.Create(filepath.Join(s.dir, "redis.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("redis-server exited: %s", lastLines(string(b), 3))
		default:
		}
		if ping(s.Addr, s.tls) == nil {
			s.cmd = cmd
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
	return fmt.Errorf("redis-server on %s did not answer PING", s.Addr)
}

// Stop stops the server by its pid (SIGTERM, then SIGKILL).
func (s *Server) Stop() {
	if s.mini != nil {
		s.mini.Close()
		return
	}
	if s.cmd == nil {
		return
	}
	p := s.cmd.Process
	p.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		for syscall.Kill(p.Pid, 0) == nil {
			time.Sleep(10 * time.Millisecond)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		p.Kill()
	}
	s.cmd = nil
}

// Restart stops the server and starts it again on the same port, empty.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if s.mini != nil {
		s.mini.Restart()
		return
	}
	s.Stop()
	bin, err := redisServer()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.start(bin); err != nil {
		t.Fatal(err)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ping sends a PING in RESP and expects +PONG (or -NOAUTH, which means the
// server is up and wants a password).
func ping(addr string, tc *tls.Config) error {
	var c net.Conn
	var err error
	d := &net.Dialer{Timeout: time.Second}
	if tc != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, tc)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH") {
		return nil
	}
	return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// LogTail returns the last n lines the server logged, for a failing
// test's message. A miniredis logs nothing.
func (s *Server) LogTail(n int) string {
	if s.dir == "" {
		return ""
	}
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	return lastLines(string(b), n)
}
