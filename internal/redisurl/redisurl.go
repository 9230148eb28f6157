// Package redisurl reads the REDIS_URL every bottleq command takes, the one
// way: redis:// or rediss:// (TLS), an optional ACL user and password, a
// database number, and an optional CA file for TLS. Its errors never quote
// the URL, which may hold a password.
package redisurl

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"

	"github.com/hibiken/asynq"
)

// Parse reads redis://[user:password@]host[:port][/db], or rediss:// for
// TLS; the port defaults to 6379.
func Parse(raw string) (asynq.RedisClientOpt, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return asynq.RedisClientOpt{}, errors.New("redis URL is not a valid URL")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return asynq.RedisClientOpt{}, fmt.Errorf("redis URL scheme %q is not redis:// or rediss://", u.Scheme)
	}
	if u.Host == "" {
		return asynq.RedisClientOpt{}, errors.New("redis URL has no host")
	}
	r, err := asynq.ParseRedisURI(raw)
	if err != nil {
		return asynq.RedisClientOpt{}, errors.New("redis URL path must be a database number, such as /0")
	}
	opt, ok := r.(asynq.RedisClientOpt)
	if !ok {
		return asynq.RedisClientOpt{}, fmt.Errorf("redis URL gives an unexpected connection type %T", r)
	}
	if u.Port() == "" {
		opt.Addr = net.JoinHostPort(u.Hostname(), "6379")
	}
	// asynq reads the password but drops the user name Redis ACLs need.
	if name := u.User.Username(); name != "" && name != "default" {
		opt.Username = name
	}
	return opt, nil
}

// WithCA makes a rediss:// connection trust the CA certificates in the PEM
// file caFile (besides the system's). An empty caFile changes nothing.
func WithCA(opt asynq.RedisClientOpt, caFile string) (asynq.RedisClientOpt, error) {
	if caFile == "" {
		return opt, nil
	}
	if opt.TLSConfig == nil {
		return opt, errors.New("a CA file needs a rediss:// URL")
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return opt, fmt.Errorf("CA file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return opt, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	cfg := opt.TLSConfig.Clone()
	cfg.RootCAs = pool
	cfg.MinVersion = tls.VersionTLS12
	opt.TLSConfig = cfg
	return opt, nil
}

// Redacted returns raw with its password replaced, for logs.
func Redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Redacted()
}
