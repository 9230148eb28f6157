package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// s3Server is a versitygw on a free loopback port over a directory of the
// harness, with root credentials made for the run and one bucket, stopped
// by its pid. (internal/teststore does the same for tests, but needs a
// testing.TB and is for tests alone.)
type s3Server struct {
	endpoint, region, bucket string
	access, secret           string
	serverProc
}

// startS3 installs versitygw with scripts/ensure-versitygw (the first time
// it builds it, for minutes) and starts it with its buckets in dir and a
// bucket named bucket. Its error says why there is none.
func startS3(ctx context.Context, dir, bucket string) (*s3Server, error) {
	var stderr bytes.Buffer
	ensure := exec.CommandContext(ctx, filepath.Join("scripts", "ensure-versitygw"))
	ensure.Stderr = &stderr
	out, err := ensure.Output()
	if err != nil {
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		return nil, fmt.Errorf("versitygw is not installed and scripts/ensure-versitygw could not install it (run bench from the repository's root): %v: %s",
			err, lines[len(lines)-1])
	}
	bin := strings.TrimSpace(string(out))
	secret := make([]byte, 20)
	rand.Read(secret)
	s := &s3Server{region: "us-east-1", bucket: bucket, access: "bottleq-bench", secret: hex.EncodeToString(secret)}
	if err := onFreePort("versitygw", func(port int) error { return s.start(bin, dir, port) }); err != nil {
		return nil, err
	}
	if _, err := s.client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		s.stop()
		return nil, fmt.Errorf("create bucket %s: %w", bucket, err)
	}
	return s, nil
}

func (s *s3Server) start(bin, dir string, port int) error {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	logPath := filepath.Join(dir, "versitygw.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	data := filepath.Join(dir, "buckets")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	// The credentials go in the environment, not argv, where ps shows them.
	cmd := exec.Command(bin, "--port", addr, "--region", s.region, "--quiet", "posix", data)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.access, "ROOT_SECRET_ACCESS_KEY="+s.secret)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return err
	}
	s.watch(cmd)
	s.endpoint = "http://" + addr
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			b, _ := os.ReadFile(logPath)
			return fmt.Errorf("versitygw exited: %s", strings.TrimSpace(string(b)))
		default:
		}
		// Any HTTP answer (an S3 error for an unsigned request) means it
		// is serving.
		if resp, err := client.Get(s.endpoint + "/"); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.stop()
	return fmt.Errorf("versitygw on %s did not answer within 30s", addr)
}

// client is an S3 client of the root user, the raw SDK the store is
// measured against.
func (s *s3Server) client() *s3.Client {
	return s3.New(s3.Options{
		Region:       s.region,
		BaseEndpoint: aws.String(s.endpoint),
		UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: s.access, SecretAccessKey: s.secret, Source: "bench"}, nil
		}),
	})
}

// url is the s3:// store URL of the bucket under prefix.
func (s *s3Server) url(prefix string) string {
	q := url.Values{"endpoint": {s.endpoint}, "region": {s.region}, "path_style": {"true"}}
	return (&url.URL{Scheme: "s3", Host: s.bucket, Path: "/" + prefix, RawQuery: q.Encode()}).String()
}

// env is what a process needs to reach the server through the standard
// AWS chain, and nothing else: no shared config, no instance metadata.
func (s *s3Server) env(dir string) []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.access,
		"AWS_SECRET_ACCESS_KEY=" + s.secret,
		"AWS_REGION=" + s.region,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + filepath.Join(dir, "no-aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "no-aws-credentials"),
	}
}
