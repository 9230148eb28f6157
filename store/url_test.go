package store

import (
	"errors"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	good := []struct {
		raw  string
		want Location
	}{
		{"file:///var/lib/bottleq", Location{Dir: "/var/lib/bottleq"}},
		{"file://localhost/var/lib/bottleq/", Location{Dir: "/var/lib/bottleq"}},
		{"file:///a/../b", Location{Dir: "/b"}},
		{"s3://my-bucket", Location{Bucket: "my-bucket"}},
		{"s3://my-bucket/", Location{Bucket: "my-bucket"}},
		{"s3://my.bucket/pool/a", Location{Bucket: "my.bucket", Prefix: "pool/a/"}},
		{"S3://bkt/p/", Location{Bucket: "bkt", Prefix: "p/"}},
		{"s3://bkt/p?endpoint=http://127.0.0.1:7070&region=eu-west-1&path_style=true",
			Location{Bucket: "bkt", Prefix: "p/", Endpoint: "http://127.0.0.1:7070", Region: "eu-west-1", PathStyle: true}},
		{"s3://bkt?endpoint=https://s3.example.com/&path_style=0",
			Location{Bucket: "bkt", Endpoint: "https://s3.example.com"}},
	}
	for _, tc := range good {
		t.Run(tc.raw, func(t *testing.T) {
			got, err := ParseURL(tc.raw)
			if err != nil {
				t.Fatalf("ParseURL: %v", err)
			}
			if got != tc.want {
				t.Fatalf("ParseURL = %+v, want %+v", got, tc.want)
			}
			// String gives back a URL that parses to the same location.
			again, err := ParseURL(got.String())
			if err != nil || again != got {
				t.Fatalf("ParseURL(%q) = %+v, %v; want %+v", got.String(), again, err, got)
			}
		})
	}

	bad := []struct {
		raw   string
		field string // the ConfigError's Field
	}{
		{"", "scheme"},
		{"/var/lib/bottleq", "scheme"},
		{"http://bucket/p", "scheme"},
		{"s3://AKIAEXAMPLE:SECRETSECRET@bucket/p", "url"},
		{"file://user:SECRETSECRET@localhost/d", "url"},
		{"file:relative/dir", "dir"},
		{"file://host/dir", "dir"},
		{"file:///d?mode=x", "url"},
		{"file:///d#frag", "url"},
		{"s3://bucket/p#frag", "url"},
		{"s3:///prefix", "bucket"},
		{"s3://bucket:9000/p", "bucket"},
		{"s3://Bucket/p", "bucket"},
		{"s3://ab/p", "bucket"},
		{"s3://b_ucket/p", "bucket"},
		{"s3://a..b/p", "bucket"},
		{"s3://bucket/a//b", "prefix"},
		{"s3://bucket/a/../b", "prefix"},
		{"s3://bucket/.bottleq-tmp", "prefix"},
		{"s3://bucket?endpoint=127.0.0.1:9000", "endpoint"},
		{"s3://bucket?endpoint=ftp://host", "endpoint"},
		{"s3://bucket?endpoint=http://u:SECRETSECRET@host", "endpoint"},
		{"s3://bucket?endpoint=http://host/path", "endpoint"},
		{"s3://bucket?region=EU%20West", "region"},
		{"s3://bucket?path_style=maybe", "path_style"},
		{"s3://bucket?region=a&region=b", "region"},
		{"s3://bucket?colour=red", "colour"},
		{"s3://bucket?secret_key=SECRETSECRET", "secret_key"},
		{"s3://bucket?aws_access_key_id=AKIAEXAMPLE", "aws_access_key_id"},
		{"s3://bucket?X-Amz-Credential=SECRETSECRET", "X-Amz-Credential"},
		{"s3://bucket?session_token=SECRETSECRET", "session_token"},
		{"s3://bucket?a=%zz", "url"},
		{"s3://bu cket/p", "url"},
	}
	for _, tc := range bad {
		t.Run(tc.raw, func(t *testing.T) {
			_, err := ParseURL(tc.raw)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("ParseURL = %v, want a *ConfigError", err)
			}
			if ce.Field != tc.field {
				t.Errorf("error names %q, want %q: %v", ce.Field, tc.field, err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || strings.Contains(msg, "SECRETSECRET") || strings.Contains(msg, "AKIAEXAMPLE") {
				t.Errorf("error is not one secret-free line: %q", msg)
			}
		})
	}
}

func TestValidKey(t *testing.T) {
	t.Parallel()
	for _, k := range []string{"a", "commits/acme/T1.smolmachine", "artifacts/t/x/.env", "a b/ü", "a/.bottle"} {
		if err := ValidKey(k); err != nil {
			t.Errorf("ValidKey(%q) = %v, want nil", k, err)
		}
	}
	for _, k := range []string{"", "/a", "a/", "a//b", "./a", "a/./b", "a/..", "../a", "a\\b", "a\x00b", "\xff",
		".bottleq-tmp-1", "a/.bottleq-x/b", strings.Repeat("k", 1025)} {
		if err := ValidKey(k); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ValidKey(%q) = %v, want ErrInvalidKey", k, err)
		}
	}
	// A prefix may be empty or end with a slash; it is otherwise a key.
	for _, p := range []string{"", "a/", "a/b", "commits/"} {
		if err := validPrefix(p); err != nil {
			t.Errorf("validPrefix(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{"/", "a//", "../", "a/../"} {
		if err := validPrefix(p); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("validPrefix(%q) = %v, want ErrInvalidKey", p, err)
		}
	}
}
