package teststore

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func TestServer(t *testing.T) {
	t.Parallel()
	s := Start(t)
	if host, _, _ := net.SplitHostPort(strings.TrimPrefix(s.Endpoint, "http://")); host != "127.0.0.1" {
		t.Errorf("server listens on %s, want loopback", s.Endpoint)
	}
	ctx := context.Background()
	c := s.Client()
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String("a/b"), Body: strings.NewReader("hello")}); err != nil {
		t.Fatalf("PutObject: %v", err)
	}
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String("a/b")})
	if err != nil {
		t.Fatalf("GetObject: %v", err)
	}
	b, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if string(b) != "hello" {
		t.Errorf("GetObject = %q, want hello", b)
	}
	// Buckets are directories under Dir, objects files in them.
	if b, err := os.ReadFile(filepath.Join(s.Dir, s.Bucket, "a", "b")); err != nil || string(b) != "hello" {
		t.Errorf("Dir/BUCKET/a/b = %q, %v; want hello", b, err)
	}
	if other := s.NewBucket(t); other == s.Bucket {
		t.Errorf("NewBucket gave the test bucket's name again")
	}
	s.Stop()
	if resp, err := http.Get(s.Endpoint); err == nil {
		resp.Body.Close()
		t.Errorf("server still answers after Stop")
	}
	s.Stop() // twice is harmless
}
