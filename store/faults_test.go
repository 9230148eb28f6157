package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3t "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/bot-bottle/bottleq/internal/teststore"
)

// TestMain doubles as the uploader process TestKillMidUpload kills.
func TestMain(m *testing.M) {
	if os.Getenv("BOTTLEQ_STORE_TEST_UPLOADER") != "" {
		uploader()
		return
	}
	os.Exit(m.Run())
}

// uploader opens the store of $STORE_URL through Open (the standard AWS
// chain reads the credentials from its environment) and Puts an endless
// stream; once 24 MiB have been read it says "uploading" on stdout and
// blocks, mid-upload, until it is killed.
func uploader() {
	ctx := context.Background()
	s, err := Open(ctx, os.Getenv("STORE_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	r := &stallingReader{r: gen(9, 1<<40), after: 24 << 20}
	_, err = s.Put(ctx, "commits/killed", r, PutOptions{SHA256: strings.Repeat("0", 64)})
	fmt.Fprintln(os.Stderr, "Put returned:", err)
	os.Exit(3)
}

type stallingReader struct {
	r     io.Reader
	after int64
	said  bool
}

func (s *stallingReader) Read(p []byte) (int, error) {
	if s.after <= 0 {
		if !s.said {
			s.said = true
			fmt.Println("uploading")
		}
		select {} // wait for SIGKILL
	}
	if int64(len(p)) > s.after {
		p = p[:s.after]
	}
	n, err := s.r.Read(p)
	s.after -= int64(n)
	return n, err
}

// TestKillMidUpload: a process killed with SIGKILL in the middle of a Put
// leaves no object anyone can see; Expire then removes what it left behind
// (a temporary file, or an incomplete multipart upload).
func TestKillMidUpload(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		url := "file://" + b.root
		env := []string{}
		if b.srv != nil {
			url = b.srv.URL(b.prefix)
			env = b.srv.Env()
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), append(env, "BOTTLEQ_STORE_TEST_UPLOADER=1", "STORE_URL="+url)...)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		line, _ := bufio.NewReader(out).ReadString('\n')
		if line != "uploading\n" {
			cmd.Wait()
			t.Fatalf("uploader said %q", line)
		}
		// Wait until bytes of the upload have reached the store, then kill.
		deadline := time.Now().Add(time.Minute)
		for !uploadUnderway(t, b) {
			if time.Now().After(deadline) {
				t.Fatal("no upload appeared in the store within a minute")
			}
			time.Sleep(20 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()

		if _, err := b.Stat(ctx, "commits/killed"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat after the kill = %v, want ErrNotFound", err)
		}
		if err := b.List(ctx, "", func(o Object) error { return fmt.Errorf("List shows %s", o.Key) }); err != nil {
			t.Error(err)
		}
		if !uploadUnderway(t, b) {
			t.Fatal("the killed upload left nothing behind: the test did not kill it mid-upload")
		}
		// What a killed upload leaves is not an object and is not counted,
		// and a cutoff before it started keeps it.
		if n, err := b.Expire(ctx, "", time.Now().Add(-time.Hour)); err != nil || n != 0 || !uploadUnderway(t, b) {
			t.Fatalf("Expire with an old cutoff = %d, %v, or removed the upload", n, err)
		}
		if n, err := b.Expire(ctx, "commits/", time.Now().Add(time.Minute)); err != nil || n != 0 {
			t.Fatalf("Expire = %d, %v; want 0 objects", n, err)
		}
		assertNothingLeft(t, b)
	})
}

// uploadUnderway reports whether a partial upload is in the store: a
// temporary file with bytes in it, or a multipart upload with a part.
func uploadUnderway(t *testing.T, b backend) bool {
	t.Helper()
	if b.srv == nil {
		found := false
		filepath.WalkDir(b.root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && strings.HasPrefix(d.Name(), tmpPrefix) {
				if fi, err := d.Info(); err == nil && fi.Size() > 0 {
					found = true
				}
			}
			return nil
		})
		return found
	}
	c := b.srv.Client()
	ups, err := c.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(b.srv.Bucket)})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range ups.Uploads {
		parts, err := c.ListParts(context.Background(), &s3.ListPartsInput{Bucket: aws.String(b.srv.Bucket), Key: u.Key, UploadId: u.UploadId})
		if err == nil && len(parts.Parts) > 0 {
			return true
		}
	}
	return false
}

// TestVersitygwIfNoneMatch pins down the server behaviour the s3 store
// relies on, with the SDK alone: If-None-Match: * fails with 412 on a
// PutObject and on a CompleteMultipartUpload when the key exists — also
// when both multipart uploads began before either completed — and the
// object stays as the first writer left it.
func TestVersitygwIfNoneMatch(t *testing.T) {
	t.Parallel()
	srv := teststore.Start(t)
	c := srv.Client()
	ctx := context.Background()
	bkt := aws.String(srv.Bucket)
	star := aws.String("*")
	put := func(key, body string) error {
		_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: bkt, Key: aws.String(key), Body: strings.NewReader(body), IfNoneMatch: star})
		return err
	}
	body := func(key string) string {
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: bkt, Key: aws.String(key)})
		if err != nil {
			t.Fatal(err)
		}
		defer out.Body.Close()
		b, _ := io.ReadAll(out.Body)
		return string(b)
	}
	is412 := func(err error) bool {
		var ae apiError
		return errors.As(err, &ae) && ae.ErrorCode() == "PreconditionFailed"
	}

	if err := put("plain", "first"); err != nil {
		t.Fatal(err)
	}
	if err := put("plain", "second"); !is412(err) {
		t.Errorf("second PutObject with If-None-Match: * = %v, want 412 PreconditionFailed", err)
	}
	if got := body("plain"); got != "first" {
		t.Errorf("object holds %q, want first", got)
	}

	// Two multipart uploads of one key, both under way; the first to
	// complete wins.
	part := strings.Repeat("m", 5<<20)
	begin := func(fill string) (*string, []s3types) {
		up, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: bkt, Key: aws.String("multi")})
		if err != nil {
			t.Fatal(err)
		}
		var parts []s3types
		for i := int32(1); i <= 2; i++ {
			out, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: bkt, Key: aws.String("multi"), UploadId: up.UploadId,
				PartNumber: aws.Int32(i), Body: strings.NewReader(fill + part)})
			if err != nil {
				t.Fatal(err)
			}
			parts = append(parts, s3types{PartNumber: aws.Int32(i), ETag: out.ETag})
		}
		return up.UploadId, parts
	}
	complete := func(id *string, parts []s3types) error {
		_, err := c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: bkt, Key: aws.String("multi"),
			UploadId: id, IfNoneMatch: star, MultipartUpload: completed(parts)})
		return err
	}
	idA, partsA := begin("A")
	idB, partsB := begin("B")
	if err := complete(idA, partsA); err != nil {
		t.Fatal(err)
	}
	if err := complete(idB, partsB); !is412(err) {
		t.Errorf("second CompleteMultipartUpload with If-None-Match: * = %v, want 412 PreconditionFailed", err)
	}
	if got := body("multi"); !strings.HasPrefix(got, "A") || len(got) != 2*(len(part)+1) {
		t.Errorf("multipart object starts %q (%d bytes), want A's %d bytes", got[:1], len(got), 2*(len(part)+1))
	}
	// A multipart completion also refuses to replace a PutObject's object.
	up, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: bkt, Key: aws.String("plain")})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: bkt, Key: aws.String("plain"), UploadId: up.UploadId, PartNumber: aws.Int32(1), Body: strings.NewReader("x")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: bkt, Key: aws.String("plain"), UploadId: up.UploadId,
		IfNoneMatch: star, MultipartUpload: completed([]s3types{{PartNumber: aws.Int32(1), ETag: out.ETag}})})
	if !is412(err) || body("plain") != "first" {
		t.Errorf("CompleteMultipartUpload over a PutObject's object = %v, object %q; want 412 and first", err, body("plain"))
	}
}

// TestOpenFails: a store that cannot work fails Open with one line naming
// the part at fault, and no secret.
func TestOpenFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("file", func(t *testing.T) {
		t.Parallel()
		f := filepath.Join(t.TempDir(), "a-file")
		os.WriteFile(f, nil, 0o600)
		for _, dir := range []string{f, filepath.Join(f, "sub")} {
			_, err := Open(ctx, "file://"+dir)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != "dir" || strings.Contains(err.Error(), "\n") {
				t.Errorf("Open(file://%s) = %v, want a one-line dir error", dir, err)
			}
		}
		if _, err := Open(ctx, "file:relative"); err == nil {
			t.Error("Open took a relative file URL")
		}
	})
	t.Run("s3", func(t *testing.T) {
		t.Parallel()
		srv := teststore.Start(t)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := l.Addr().String()
		l.Close()
		cases := []struct {
			name   string
			url    string
			opts   []awsLoadOption
			field  string // the *ConfigError's Field, or "" for ErrUnavailable
			secret string // must not appear in the error
		}{
			{"wrong secret", srv.URL("p"), credsOf(srv.AccessKey, "WRONGSECRET123"), "credentials", "WRONGSECRET123"},
			{"unknown access key", srv.URL("p"), credsOf("NOSUCHKEY99", srv.SecretKey), "credentials", srv.SecretKey},
			{"missing bucket", strings.Replace(srv.URL("p"), srv.Bucket, "no-such-bucket", 1), creds(srv), "bucket", srv.SecretKey},
			{"unreachable endpoint", Location{Bucket: srv.Bucket, Endpoint: "http://" + closed, PathStyle: true}.String(), creds(srv), "", srv.SecretKey},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				_, err := open(ctx, tc.url, tc.opts)
				var ce *ConfigError
				switch {
				case err == nil:
					t.Fatal("Open succeeded")
				case tc.field == "" && !errors.Is(err, ErrUnavailable):
					t.Errorf("Open = %v, want ErrUnavailable", err)
				case tc.field != "" && (!errors.As(err, &ce) || ce.Field != tc.field):
					t.Errorf("Open = %v, want a *ConfigError naming %s", err, tc.field)
				}
				if msg := err.Error(); strings.Contains(msg, "\n") || strings.Contains(msg, tc.secret) {
					t.Errorf("error is not one secret-free line: %q", msg)
				}
				t.Logf("%s: %v", tc.name, err)
			})
		}
	})
}

// TestOpenCredentialChain reads credentials the way a worker does: from the
// environment, through the standard AWS chain. It sets the environment, so
// it does not run in parallel.
func TestOpenCredentialChain(t *testing.T) {
	srv := teststore.Start(t)
	ctx := context.Background()
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	// Nothing may dial beyond loopback: no instance metadata service, and
	// no AWS files of this machine.
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))

	_, err := Open(ctx, srv.URL("p"))
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "credentials" {
		t.Errorf("Open with no credentials anywhere = %v, want a credentials error", err)
	}
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	s, err := Open(ctx, srv.URL("p"))
	if err != nil {
		t.Fatalf("Open with credentials in the environment: %v", err)
	}
	if _, err := s.Put(ctx, "k", strings.NewReader("v"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := srv.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(srv.Bucket), Key: aws.String("p/k")})
	if err != nil || out.Metadata[metaDigest] == "" {
		t.Errorf("object p/k: %v, metadata %v; want it under the URL's prefix with its sha256", err, out)
	}
}

type s3types = s3t.CompletedPart

func completed(parts []s3types) *s3t.CompletedMultipartUpload {
	return &s3t.CompletedMultipartUpload{Parts: parts}
}
