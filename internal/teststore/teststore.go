// Package teststore gives tests a real S3-compatible server: versitygw,
// started on a free loopback port over a temporary directory, with a bucket
// made for the test, and stopped by its pid at cleanup. It is never a mock
// of the S3 API: the tests that use it talk to a real server over HTTP.
//
// versitygw is built once by scripts/ensure-versitygw into a cache directory
// outside the repository (the first build takes a few minutes). Where it
// cannot be built the tests that need it skip and say why, so `make test`
// passes on a machine with only Go and no network; under CI (CI=true) they
// fail instead, since .ci/run installs it and a skip there would hide that
// the tests did not run.
package teststore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Server is a running versitygw a test talks to on loopback.
type Server struct {
	// Endpoint is the server's base URL, http://127.0.0.1:PORT.
	Endpoint string
	// AccessKey and SecretKey are the root credentials, made for this
	// server.
	AccessKey, SecretKey string
	// Region is the region the server signs with.
	Region string
	// Bucket is a bucket made for the test.
	Bucket string
	// Dir is the directory holding the buckets: bucket B's object K is the
	// file Dir/B/K.
	Dir string

	cmd *exec.Cmd
	log string
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the versitygw path, running scripts/ensure-versitygw once
// per test binary (it builds versitygw the first time), or why there is none.
func Binary() (string, error) {
	binOnce.Do(func() { binPath, binErr = ensure() })
	return binPath, binErr
}

func ensure() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	var stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(root, "scripts", "ensure-versitygw"))
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("versitygw could not be installed: %s", lastLine(stderr.String(), err))
	}
	p := strings.TrimSpace(string(out))
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("scripts/ensure-versitygw printed %q, which is not there", p)
	}
	return p, nil
}

// repoRoot finds the directory holding go.mod, from the test's directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// Start starts versitygw on a free loopback port and makes a bucket,
// stopping the server at cleanup. It skips the test when versitygw cannot
// be installed, except under CI.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must run the S3 store tests: %v", err)
		}
		t.Skipf("skipping S3 store test: %v", err)
	}
	s := &Server{AccessKey: "bottleq-test", SecretKey: randHex(20), Region: "us-east-1", Dir: t.TempDir()}
	s.log = filepath.Join(t.TempDir(), "versitygw.log")
	var last error
	for try := 0; try < 5; try++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if last = s.start(bin, port); last == nil {
			t.Cleanup(s.Stop)
			s.Bucket = s.NewBucket(t)
			return s
		}
	}
	t.Fatalf("versitygw did not start: %v", last)
	return nil
}

func (s *Server) start(bin string, port int) error {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	logf, err := os.Create(s.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	// The credentials go in the environment, not argv, where ps shows them.
	cmd := exec.Command(bin, "--port", addr, "--region", s.Region, "--quiet", "posix", s.Dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.AccessKey, "ROOT_SECRET_ACCESS_KEY="+s.SecretKey)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.Endpoint = "http://" + addr
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			b, _ := os.ReadFile(s.log)
			return fmt.Errorf("versitygw exited: %s", lastLine(string(b), nil))
		default:
		}
		// Any HTTP answer (an S3 error for an unsigned request) means it
		// is serving.
		if resp, err := client.Get(s.Endpoint + "/"); err == nil {
			resp.Body.Close()
			s.cmd = cmd
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-exited
	return fmt.Errorf("versitygw on %s did not answer within 30s", addr)
}

// Stop stops the server by its pid (SIGTERM, then SIGKILL after 5s) and
// waits for it to exit. Stopping twice is harmless.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	p := s.cmd.Process
	syscall.Kill(-p.Pid, syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(p.Pid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(-p.Pid, syscall.SIGKILL)
	s.cmd = nil
}

// Client returns an S3 client of the root user, for a test's own checks
// and set-up.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey, Source: "teststore"}, nil
		}),
	})
}

// NewBucket makes another empty bucket and returns its name.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := "test-" + randHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return name
}

// URL returns the s3:// store URL of the test bucket under prefix (which
// may be empty), pointing at this server.
func (s *Server) URL(prefix string) string {
	q := url.Values{"endpoint": {s.Endpoint}, "region": {s.Region}, "path_style": {"true"}}
	return (&url.URL{Scheme: "s3", Host: s.Bucket, Path: "/" + prefix, RawQuery: q.Encode()}).String()
}

// Env returns the environment a process needs to reach the server through
// the standard AWS chain: the credentials and region, with the EC2
// metadata service disabled so nothing dials beyond loopback.
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// Setenv sets t's environment so that this process reaches the server
// through the standard AWS chain, as a worker or producer would: Env, with
// no shared config or credentials file and no profile to read instead. A
// test that calls it must not be parallel.
func (s *Server) Setenv(t testing.TB) {
	t.Helper()
	for _, kv := range append(s.Env(),
		"AWS_CONFIG_FILE="+filepath.Join(t.TempDir(), "none"),
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(t.TempDir(), "none"),
		"AWS_PROFILE=") {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	os.Unsetenv("AWS_PROFILE") // set empty above, so that t restores it
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// lastLine is the last non-empty line of s, or err's text.
func lastLine(s string, err error) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return l
	}
	if err != nil {
		return err.Error()
	}
	return "no output"
}
