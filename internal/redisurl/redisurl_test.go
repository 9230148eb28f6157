package redisurl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in                   string
		addr, user, password string
		db                   int
		tls                  bool
		err                  string
	}{
		{in: "redis://127.0.0.1:6380", addr: "127.0.0.1:6380"},
		{in: "redis://localhost", addr: "localhost:6379"},
		{in: "redis://:pw@127.0.0.1:1/2", addr: "127.0.0.1:1", password: "pw", db: 2},
		{in: "redis://app:pw@127.0.0.1:1", addr: "127.0.0.1:1", user: "app", password: "pw"},
		{in: "rediss://cache.internal:6380", addr: "cache.internal:6380", tls: true},
		{in: "http://127.0.0.1", err: "scheme"},
		{in: "redis://", err: "no host"},
		{in: "redis://:s3cret@127.0.0.1/x", err: "database number"},
		{in: "::not a url s3cret", err: "not a valid URL"},
	}
	for _, tt := range tests {
		opt, err := Parse(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("Parse(%q) = %v, want an error about %q without the password", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || opt.Addr != tt.addr || opt.Username != tt.user || opt.Password != tt.password || opt.DB != tt.db || (opt.TLSConfig != nil) != tt.tls {
			t.Errorf("Parse(%q) = %+v, %v", tt.in, opt, err)
		}
	}
}

func TestWithCA(t *testing.T) {
	t.Parallel()
	plain, _ := Parse("redis://127.0.0.1:1")
	if _, err := WithCA(plain, "/x.pem"); err == nil {
		t.Error("a CA file on redis:// must be refused")
	}
	tlsOpt, _ := Parse("rediss://127.0.0.1:1")
	if _, err := WithCA(tlsOpt, filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Error("a missing CA file must be an error")
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(bad, []byte("not pem"), 0o600)
	if _, err := WithCA(tlsOpt, bad); err == nil {
		t.Error("a CA file without PEM must be an error")
	}
	if got, err := WithCA(tlsOpt, ""); err != nil || got.TLSConfig != tlsOpt.TLSConfig {
		t.Error("an empty CA file must change nothing")
	}
}

func TestRedacted(t *testing.T) {
	t.Parallel()
	if got := Redacted("redis://:s3cret@127.0.0.1:1"); strings.Contains(got, "s3cret") {
		t.Errorf("Redacted = %q", got)
	}
}
