package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// s3Store keeps objects in an S3 bucket under a key prefix. Put uploads
// with the transfer manager (one PutObject below 16 MiB, else a streamed
// multipart upload of 8 MiB parts) and If-None-Match: *, which the server
// checks on PutObject and on CompleteMultipartUpload: a duplicate fails
// with 412 and the finished object is untouched. The SHA-256 is stored as
// the object's user metadata "sha256" (x-amz-meta-sha256), which S3 takes
// when an upload starts — so Put knows the digest before it sends a byte:
// from PutOptions.SHA256, from a first pass over an io.Seeker, or by
// buffering a small stream or spooling a large one to a temporary file.
type s3Store struct {
	client *s3.Client
	tm     *transfermanager.Client
	loc    Location
	// spoolAbove is how much of a stream without a known digest is held in
	// memory before it is spooled to a temporary file.
	spoolAbove int64
}

// awsLoadOption adds to the AWS config chain; Open passes none.
type awsLoadOption = func(*config.LoadOptions) error

// metaDigest is the user metadata key of the SHA-256 (x-amz-meta-sha256).
const metaDigest = "sha256"

// failTimeout bounds the abort of a failed multipart upload, which runs on
// a fresh context so that a cancelled Put still cleans up after itself.
const failTimeout = 30 * time.Second

func openS3(ctx context.Context, loc Location, extra []awsLoadOption) (*s3Store, error) {
	opts := append([]awsLoadOption{}, extra...)
	if loc.Region != "" {
		opts = append(opts, config.WithRegion(loc.Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		// The message names the setting or file at fault, never a secret.
		return nil, configErr("credentials", "AWS configuration: %s", oneLine(err.Error()))
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, configErr("credentials", "none found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if loc.Endpoint != "" {
			o.BaseEndpoint = aws.String(loc.Endpoint)
		}
		o.UsePathStyle = loc.PathStyle
		// Get checks the object's SHA-256 itself, so the SDK need not
		// check a CRC too (nor warn of each multipart object it cannot).
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	s := &s3Store{
		client:     client,
		tm:         transfermanager.New(client, func(o *transfermanager.Options) { o.FailTimeout = failTimeout }),
		loc:        loc,
		spoolAbove: 8 << 20,
	}
	// One request proves the endpoint, credentials and bucket: a listing
	// answers NoSuchBucket, InvalidAccessKeyId or SignatureDoesNotMatch
	// where a HEAD would answer a bare 403 or 404.
	_, err = client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
		Bucket: aws.String(loc.Bucket), Prefix: aws.String(loc.Prefix), MaxKeys: aws.Int32(1),
	})
	if err != nil {
		return nil, s.classify(err)
	}
	return s, nil
}

func (s *s3Store) Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (Object, error) {
	if err := ValidKey(key); err != nil {
		return Object{}, fmt.Errorf("store: put: %w", err)
	}
	if err := validDigest(opts.SHA256); err != nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, err)
	}
	full := s.loc.Prefix + key
	if len(full) > maxKeyLen {
		return Object{}, fmt.Errorf("store: put: %w: %q with the URL's prefix is over %d bytes", ErrInvalidKey, key, maxKeyLen)
	}
	// Skip a pointless upload of a taken key; If-None-Match decides races.
	if _, err := s.Stat(ctx, key); err == nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, ErrExists)
	} else if !errors.Is(err, ErrNotFound) {
		return Object{}, err
	}
	body, sum, size, cleanup, err := s.digestFirst(ctx, r, opts.SHA256)
	if err != nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, err)
	}
	defer cleanup()
	in := &transfermanager.UploadObjectInput{
		Bucket:      aws.String(s.loc.Bucket),
		Key:         aws.String(full),
		Body:        body,
		IfNoneMatch: aws.String("*"),
		Metadata:    map[string]string{metaDigest: sum},
	}
	if size >= 0 {
		in.ContentLength = aws.Int64(size)
	}
	if _, err := s.tm.UploadObject(ctx, in); err != nil {
		return Object{}, fmt.Errorf("store: put %s: %w", key, s.classify(err))
	}
	obj, err := s.Stat(context.WithoutCancel(ctx), key)
	if err != nil || obj.SHA256 != sum {
		// Stored, but the HEAD failed: report what was sent.
		return Object{Key: key, Size: size, SHA256: sum, Modified: time.Now()}, nil
	}
	return obj, nil
}

// digestFirst returns a reader of r's bytes whose SHA-256 and size are
// known before the upload starts, because S3 takes metadata first. With a
// digest given, r is streamed as it is and checked while it is read (size
// -1: unknown). Otherwise an io.Seeker is hashed and rewound and checked
// again while uploaded (it could change in between); other readers are
// held in memory up to spoolAbove bytes, else spooled to a temporary file.
func (s *s3Store) digestFirst(ctx context.Context, r io.Reader, want string) (io.Reader, string, int64, func(), error) {
	none := func() {}
	r = ctxReader{ctx, r}
	if want != "" {
		d := newDigestReader(r, want)
		return d, want, -1, func() { d.Close() }, nil
	}
	// An *os.File on a pipe is an io.Seeker whose Seek fails: a stream.
	rs, seekable := r.(ctxReader).r.(io.ReadSeeker)
	var start int64
	if seekable {
		var err error
		start, err = rs.Seek(0, io.SeekCurrent)
		seekable = err == nil
	}
	if seekable {
		h := sha256.New()
		n, err := io.Copy(h, r)
		if err != nil {
			return nil, "", 0, none, err
		}
		if _, err := rs.Seek(start, io.SeekStart); err != nil {
			return nil, "", 0, none, err
		}
		sum := hex.EncodeToString(h.Sum(nil))
		d := newDigestReader(r, sum)
		return d, sum, n, func() { d.Close() }, nil
	}
	h := sha256.New()
	var buf bytes.Buffer
	n, err := io.Copy(io.MultiWriter(&buf, h), io.LimitReader(r, s.spoolAbove+1))
	if err != nil {
		return nil, "", 0, none, err
	}
	if n <= s.spoolAbove {
		return bytes.NewReader(buf.Bytes()), hex.EncodeToString(h.Sum(nil)), n, none, nil
	}
	f, err := os.CreateTemp("", "bottleq-spool-*")
	if err != nil {
		return nil, "", 0, none, fmt.Errorf("spool: %w", err)
	}
	// Unlinked at once: the open file keeps its bytes until it is closed,
	// and a killed process leaves nothing behind.
	os.Remove(f.Name())
	cleanup := func() { f.Close() }
	m, err := buf.WriteTo(f)
	if err == nil {
		var rest int64
		rest, err = io.Copy(io.MultiWriter(f, h), r)
		m += rest
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		cleanup()
		return nil, "", 0, none, fmt.Errorf("spool: %w", err)
	}
	return ctxReader{ctx, f}, hex.EncodeToString(h.Sum(nil)), m, cleanup, nil
}

func (s *s3Store) Get(ctx context.Context, key string) (io.ReadCloser, Object, error) {
	if err := ValidKey(key); err != nil {
		return nil, Object{}, fmt.Errorf("store: get: %w", err)
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.loc.Bucket), Key: aws.String(s.loc.Prefix + key)})
	if err != nil {
		return nil, Object{}, fmt.Errorf("store: get %s: %w", key, s.classify(err))
	}
	obj := Object{Key: key, Size: aws.ToInt64(out.ContentLength), Modified: aws.ToTime(out.LastModified), SHA256: digestMeta(out.Metadata)}
	return getReader{newDigestReader(out.Body, obj.SHA256), out.Body}, obj, nil
}

func (s *s3Store) Stat(ctx context.Context, key string) (Object, error) {
	if err := ValidKey(key); err != nil {
		return Object{}, fmt.Errorf("store: stat: %w", err)
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.loc.Bucket), Key: aws.String(s.loc.Prefix + key)})
	if err != nil {
		return Object{}, fmt.Errorf("store: stat %s: %w", key, s.classify(err))
	}
	return Object{Key: key, Size: aws.ToInt64(out.ContentLength), Modified: aws.ToTime(out.LastModified), SHA256: digestMeta(out.Metadata)}, nil
}

// digestMeta reads the SHA-256 from user metadata, ignoring a malformed one.
func digestMeta(m map[string]string) string {
	d := m[metaDigest]
	if validDigest(d) != nil {
		return ""
	}
	return d
}

func (s *s3Store) Delete(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return fmt.Errorf("store: delete: %w", err)
	}
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.loc.Bucket), Key: aws.String(s.loc.Prefix + key)})
	if err != nil && !errors.Is(s.classify(err), ErrNotFound) {
		return fmt.Errorf("store: delete %s: %w", key, s.classify(err))
	}
	return nil
}

func (s *s3Store) List(ctx context.Context, prefix string, fn func(Object) error) error {
	if err := validPrefix(prefix); err != nil {
		return fmt.Errorf("store: list: %w", err)
	}
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(s.loc.Bucket), Prefix: aws.String(s.loc.Prefix + prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("store: list %s: %w", prefix, s.classify(err))
		}
		for _, o := range page.Contents {
			k := strings.TrimPrefix(aws.ToString(o.Key), s.loc.Prefix)
			if ValidKey(k) != nil {
				continue // a directory marker, or a key this package would not write
			}
			if err := fn(Object{Key: k, Size: aws.ToInt64(o.Size), Modified: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *s3Store) Expire(ctx context.Context, prefix string, olderThan time.Time) (int, error) {
	if err := validPrefix(prefix); err != nil {
		return 0, fmt.Errorf("store: expire: %w", err)
	}
	var old []string
	err := s.List(ctx, prefix, func(o Object) error {
		if o.Modified.Before(olderThan) {
			old = append(old, o.Key)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, k := range old {
		if err := s.Delete(ctx, k); err != nil {
			return n, err
		}
		n++
	}
	// Multipart uploads a killed process left behind hold storage but are
	// never visible; abort those started before the cutoff.
	p := s3.NewListMultipartUploadsPaginator(s.client, &s3.ListMultipartUploadsInput{
		Bucket: aws.String(s.loc.Bucket), Prefix: aws.String(s.loc.Prefix + prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return n, fmt.Errorf("store: expire %s: %w", prefix, s.classify(err))
		}
		for _, u := range page.Uploads {
			if !aws.ToTime(u.Initiated).Before(olderThan) {
				continue
			}
			_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
				Bucket: aws.String(s.loc.Bucket), Key: u.Key, UploadId: u.UploadId,
			})
			if err != nil && !errors.Is(s.classify(err), ErrNotFound) {
				return n, fmt.Errorf("store: expire %s: %w", prefix, s.classify(err))
			}
		}
	}
	return n, nil
}

// apiError is what the SDK's service errors implement (smithy.APIError).
type apiError interface {
	ErrorCode() string
	ErrorMessage() string
}

// classify turns an SDK error into this package's: ErrNotFound, ErrExists,
// a *ConfigError, ErrUnavailable, or a one-line error naming the S3 code.
// The causes it cannot name (context errors, a reader's error, a digest
// mismatch) stay in the chain for errors.Is.
func (s *s3Store) classify(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrDigestMismatch) {
		return err
	}
	var ae apiError
	if errors.As(err, &ae) {
		switch code := ae.ErrorCode(); code {
		case "NoSuchKey", "NotFound", "NoSuchUpload":
			return ErrNotFound
		case "PreconditionFailed":
			return ErrExists
		case "NoSuchBucket":
			return configErr("bucket", "%q does not exist", s.loc.Bucket)
		case "InvalidAccessKeyId", "XAdminUserNotFound": // the second is versitygw's
			return configErr("credentials", "the server does not know the access key")
		case "SignatureDoesNotMatch":
			return configErr("credentials", "the secret key does not match the access key")
		case "ExpiredToken", "InvalidToken", "TokenRefreshRequired":
			return configErr("credentials", "the session token is expired or invalid")
		case "AccessDenied", "Forbidden", "AllAccessDisabled":
			return configErr("permission", "access denied to bucket %q", s.loc.Bucket)
		case "AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException":
			return configErr("region", "the bucket is not in region %q (set ?region=)", s.regionName())
		default:
			return fmt.Errorf("S3 %s: %s", code, oneLine(ae.ErrorMessage()))
		}
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return fmt.Errorf("%w: %s", ErrUnavailable, oneLine(innermost(ne).Error()))
	}
	return err
}

func (s *s3Store) regionName() string {
	return s.client.Options().Region
}

// innermost digs through *url.Error and *net.OpError wrappers to the cause,
// keeping the net.OpError's "dial tcp ADDR" context.
func innermost(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe
	}
	return err
}

// oneLine flattens a message to one line of at most 200 bytes.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
