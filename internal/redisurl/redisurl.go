// Package redisurl reads the REDIS_URL every bottleq command takes and
// opens the one Redis client a command shares among its asynq client,
// server and inspector. It reads three forms:
//
//	redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]      one server; rediss:// for TLS
//	redis-sentinel://[[USER]:PASSWORD@]S1:PORT[,S2:PORT...][/DB]?master=NAME
//	redis://[[USER]:PASSWORD@]S1:PORT[/DB]?master_name=NAME[&addr=S2:PORT...][&password=P]...
//
// The second is asynq's Sentinel form ([asynq.ParseRedisURI]): the URL's
// password is the sentinels' and the master has none. The third is
// go-redis's ([redis.ParseFailoverURL]): the URL's user and password are
// the sentinels', the query's username and password the master's, and
// rediss:// speaks TLS to both. Errors never quote the URL, which may hold
// a password.
package redisurl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// ErrCA marks an [Open] or [WithCA] error that is about the CA file rather
// than the URL.
var ErrCA = errors.New("redis CA file")

// caError is an error about the CA file: its text is err's, and it
// matches ErrCA.
type caError struct{ err error }

func (e caError) Error() string        { return e.err.Error() }
func (e caError) Unwrap() error        { return e.err }
func (e caError) Is(target error) bool { return target == ErrCA }

// failoverParams are the query parameters of go-redis's failover form that
// asynq's RedisFailoverClientOpt can carry; go-redis reads them.
var failoverParams = map[string]bool{
	"master_name": true, "addr": true, "username": true, "password": true, "db": true,
	"dial_timeout": true, "read_timeout": true, "write_timeout": true, "pool_size": true,
}

// Open reads raw as [Parse] does, trusts caFile's CA as [WithCA] does, and
// returns a client for it: a plain one, or for a Sentinel URL one that asks
// the sentinels for the master and follows it through failovers. It does
// not connect; the first command does. The caller closes it. An error about
// caFile matches ErrCA.
func Open(raw, caFile string) (redis.UniversalClient, error) {
	opt, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	if opt, err = WithCA(opt, caFile); err != nil {
		return nil, err
	}
	return opt.MakeRedisClient().(redis.UniversalClient), nil
}

// Parse reads raw in one of the package's three forms and returns an
// asynq.RedisClientOpt for one server, or an asynq.RedisFailoverClientOpt
// for a master behind Sentinel. A server's port defaults to 6379; a
// sentinel's port must be given.
func Parse(raw string) (asynq.RedisConnOpt, error) {
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, errors.New("redis URL is not a valid URL: it has no scheme://")
	}
	switch strings.ToLower(scheme) {
	case "redis-sentinel":
		return parseSentinel(raw)
	case "redis", "rediss":
	default:
		return nil, errors.New("redis URL scheme is not redis://, rediss:// or redis-sentinel://")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("redis URL is not a valid URL")
	}
	if u.Host == "" {
		return nil, errors.New("redis URL has no host")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, errors.New("redis URL query is not valid")
	}
	if q.Has("master_name") {
		return parseFailover(raw, u, q)
	}
	for k := range q {
		if k == "master" {
			return nil, errors.New("redis URL query parameter \"master\" belongs to redis-sentinel://; redis:// names a Sentinel master with master_name=")
		}
		return nil, fmt.Errorf("redis URL query parameter %s is not supported on redis:// without master_name=", paramName(k))
	}
	db, err := dbNumber(u.Path)
	if err != nil {
		return nil, err
	}
	opt := asynq.RedisClientOpt{Addr: u.Host, DB: db}
	if u.Port() == "" {
		opt.Addr = net.JoinHostPort(u.Hostname(), "6379")
	}
	opt.Username, opt.Password = credentials(u.User)
	if u.Scheme == "rediss" {
		opt.TLSConfig = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
	}
	return opt, nil
}

// parseSentinel reads asynq's form. url.Parse cannot read a list of
// bracketed IPv6 hosts, so the host list is cut out first.
func parseSentinel(raw string) (asynq.RedisConnOpt, error) {
	_, rest, _ := strings.Cut(raw, "://")
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	userinfo, hosts := "", authority
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		userinfo, hosts = authority[:at+1], authority[at+1:]
	}
	u, err := url.Parse("redis-sentinel://" + userinfo + "sentinels" + tail)
	if err != nil {
		return nil, errors.New("redis URL is not a valid URL")
	}
	if hosts == "" {
		return nil, errors.New("redis URL has no sentinel address")
	}
	var addrs []string
	for i, h := range strings.Split(hosts, ",") {
		if err := checkAddr(h); err != nil {
			return nil, fmt.Errorf("redis URL sentinel address %d %w", i+1, err)
		}
		addrs = append(addrs, h)
	}
	db, err := dbNumber(u.Path)
	if err != nil {
		return nil, err
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, errors.New("redis URL query is not valid")
	}
	for k := range q {
		if k != "master" {
			return nil, fmt.Errorf("redis URL query parameter %s is not supported on redis-sentinel:// (only master=)", paramName(k))
		}
	}
	if q.Get("master") == "" {
		return nil, errors.New("redis URL has no master=NAME, the name the sentinels know the master by")
	}
	opt := asynq.RedisFailoverClientOpt{MasterName: q.Get("master"), SentinelAddrs: addrs, DB: db}
	opt.SentinelUsername, opt.SentinelPassword = credentials(u.User)
	return opt, nil
}

// parseFailover reads go-redis's failover form, limited to the parameters
// asynq's RedisFailoverClientOpt carries.
func parseFailover(raw string, u *url.URL, q url.Values) (asynq.RedisConnOpt, error) {
	for k := range q {
		if !failoverParams[k] {
			return nil, fmt.Errorf("redis URL query parameter %s is not supported (with master_name=: addr, username, password, db, dial_timeout, read_timeout, write_timeout, pool_size)", paramName(k))
		}
	}
	if q.Get("master_name") == "" {
		return nil, errors.New("redis URL master_name= is empty: give the name the sentinels know the master by")
	}
	if err := checkAddr(u.Host); err != nil {
		return nil, fmt.Errorf("redis URL sentinel address 1 %w", err)
	}
	for i, a := range q["addr"] {
		if err := checkAddr(a); err != nil {
			return nil, fmt.Errorf("redis URL sentinel address %d (addr=) %w", i+2, err)
		}
	}
	if _, err := dbNumber(u.Path); err != nil {
		return nil, err
	}
	fo, err := redis.ParseFailoverURL(raw)
	if err != nil {
		// go-redis names the parameter and quotes its value; none of
		// these holds a password, but make sure.
		msg := err.Error()
		for _, secret := range secrets(u, q) {
			msg = strings.ReplaceAll(msg, secret, "xxxxx")
		}
		return nil, fmt.Errorf("redis URL: %s", strings.TrimPrefix(msg, "redis: "))
	}
	opt := asynq.RedisFailoverClientOpt{
		MasterName:       fo.MasterName,
		SentinelAddrs:    fo.SentinelAddrs,
		SentinelUsername: fo.SentinelUsername,
		SentinelPassword: fo.SentinelPassword,
		Username:         fo.Username,
		Password:         fo.Password,
		DB:               fo.DB,
		DialTimeout:      fo.DialTimeout,
		ReadTimeout:      fo.ReadTimeout,
		WriteTimeout:     fo.WriteTimeout,
		PoolSize:         fo.PoolSize,
	}
	if fo.TLSConfig != nil {
		// go-redis names the first sentinel as the server of every TLS
		// connection; leaving it empty checks each certificate against
		// the address dialled, the master's included.
		opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return opt, nil
}

// checkAddr checks a sentinel's HOST:PORT. Its error does not quote a,
// which is part of the URL.
func checkAddr(a string) error {
	if a == "" {
		return errors.New("is empty")
	}
	if !strings.Contains(a, ":") || strings.HasSuffix(a, "]") {
		return errors.New("has no port (Sentinel's usual one is 26379)")
	}
	host, port, err := net.SplitHostPort(a)
	switch {
	case err != nil || host == "":
		return errors.New("is not HOST:PORT")
	case port == "":
		return errors.New("has no port (Sentinel's usual one is 26379)")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return errors.New("has a port that is not a number from 1 to 65535")
	}
	return nil
}

// dbNumber reads the path /DB; an empty path is database 0.
func dbNumber(path string) (int, error) {
	p := strings.TrimPrefix(path, "/")
	if p == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 {
		return 0, errors.New("redis URL path must be a database number, such as /0")
	}
	return n, nil
}

// credentials returns the user (none for Redis's "default" user, which
// needs no name) and password of userinfo.
func credentials(ui *url.Userinfo) (user, password string) {
	if ui == nil {
		return "", ""
	}
	password, _ = ui.Password()
	if name := ui.Username(); name != "default" {
		user = name
	}
	return user, password
}

// knownParams are the query parameters go-redis and asynq know of. An
// error names a parameter only when it is one of these: any other name may
// be a secret pasted in the wrong place.
var knownParams = map[string]bool{
	"master": true, "master_name": true, "addr": true, "db": true, "network": true,
	"username": true, "password": true, "sentinel_username": true, "sentinel_password": true,
	"client_name": true, "protocol": true, "skip_verify": true,
	"route_by_latency": true, "route_randomly": true, "replica_only": true, "use_disconnected_replicas": true,
	"max_retries": true, "min_retry_backoff": true, "max_retry_backoff": true,
	"dial_timeout": true, "dialer_retries": true, "dialer_retry_timeout": true,
	"read_timeout": true, "write_timeout": true, "context_timeout_enabled": true,
	"pool_fifo": true, "pool_size": true, "pool_timeout": true, "max_concurrent_dials": true,
	"min_idle_conns": true, "max_idle_conns": true, "max_active_conns": true,
	"conn_max_lifetime": true, "conn_max_lifetime_jitter": true, "conn_max_idle_time": true,
	"disableIdentity": true, "identitySuffix": true, "unstable_resp3": true,
}

// paramName names query parameter k for an error: quoted if it is a known
// one, else without its name.
func paramName(k string) string {
	if knownParams[k] {
		return strconv.Quote(k)
	}
	return "(an unknown name, not repeated here)"
}

// secrets are the passwords in u and its query q.
func secrets(u *url.URL, q url.Values) []string {
	var s []string
	if pw, ok := u.User.Password(); ok && pw != "" {
		s = append(s, pw, url.QueryEscape(pw))
	}
	for _, k := range []string{"password", "sentinel_password"} {
		for _, v := range q[k] {
			if v != "" {
				s = append(s, v, url.QueryEscape(v))
			}
		}
	}
	return s
}

// WithCA makes a TLS connection (rediss://) trust the CA certificates in
// the PEM file caFile, besides the system's. An empty caFile changes
// nothing. Its errors match ErrCA.
func WithCA(opt asynq.RedisConnOpt, caFile string) (asynq.RedisConnOpt, error) {
	if caFile == "" {
		return opt, nil
	}
	var cfg *tls.Config
	switch o := opt.(type) {
	case asynq.RedisClientOpt:
		cfg = o.TLSConfig
	case asynq.RedisFailoverClientOpt:
		cfg = o.TLSConfig
	}
	if cfg == nil {
		return opt, caError{errors.New("a CA file needs a rediss:// URL")}
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return opt, caError{fmt.Errorf("CA file: %w", err)}
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return opt, caError{fmt.Errorf("CA file %s holds no PEM certificate", caFile)}
	}
	cfg = cfg.Clone()
	cfg.RootCAs = pool
	cfg.MinVersion = tls.VersionTLS12
	switch o := opt.(type) {
	case asynq.RedisClientOpt:
		o.TLSConfig = cfg
		return o, nil
	case asynq.RedisFailoverClientOpt:
		o.TLSConfig = cfg
		return o, nil
	}
	return opt, nil
}

// WithPoolSize sets how many connections a client made from opt keeps at
// most: for one that holds a connection per blocking read (XREAD BLOCK),
// so that such reads never wait for one another. Options of other
// kinds are returned unchanged.
func WithPoolSize(opt asynq.RedisConnOpt, n int) asynq.RedisConnOpt {
	switch o := opt.(type) {
	case asynq.RedisClientOpt:
		o.PoolSize = n
		return o
	case asynq.RedisFailoverClientOpt:
		o.PoolSize = n
		return o
	}
	return opt
}

// Shared returns an asynq.RedisConnOpt for constructors that take nothing
// else (asynqmon.New, asynq.NewServer behind worker.ServerConfig): each
// MakeRedisClient returns c itself, whose Close does nothing, so they all
// use c's one pool and leave closing it to c's owner.
func Shared(c redis.UniversalClient) asynq.RedisConnOpt {
	return sharedOpt{c}
}

type sharedOpt struct{ c redis.UniversalClient }

// MakeRedisClient returns the shared client, with a Close that does
// nothing.
func (o sharedOpt) MakeRedisClient() any { return unclosable{o.c} }

// unclosable is a client whose Close leaves the connections open.
type unclosable struct{ redis.UniversalClient }

// Close does nothing: the client's owner closes it.
func (unclosable) Close() error { return nil }

// Redacted returns raw with its passwords (the URL's, and a password= or
// sentinel_password= in its query) replaced, for logs.
func Redacted(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "(invalid URL)"
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		if user, _, hasPW := strings.Cut(authority[:at], ":"); hasPW {
			authority = user + ":xxxxx" + authority[at:]
		}
	}
	tail, _, _ = strings.Cut(tail, "#")
	if path, query, ok := strings.Cut(tail, "?"); ok {
		q, err := url.ParseQuery(query)
		if err != nil {
			return scheme + "://" + authority + path + "?(invalid query)"
		}
		for _, k := range []string{"password", "sentinel_password"} {
			if q.Has(k) {
				q.Set(k, "xxxxx")
			}
		}
		tail = path + "?" + q.Encode()
	}
	return scheme + "://" + authority + tail
}

// ErrNotReplicated: fewer replicas than asked for confirmed a write of a
// [Replicated] client in time. The write may still be on the master, and
// may be lost if a failover follows.
var ErrNotReplicated = errors.New("write not confirmed by enough Redis replicas")

// replicationMark is the key a Replicated client writes after each script,
// so that WAIT covers what the script read as well as what it wrote.
const replicationMark = "bottleq:replication-mark"

// Replicated returns a client like rc whose Lua scripts (asynq writes
// everything through them) return only once n replicas confirm them:
// each script runs in a pipeline, on one connection, with a write of a
// mark key and Redis's WAIT n timeout. If fewer confirm, the script's
// command fails with an error matching ErrNotReplicated. A script that
// wrote nothing (such as an enqueue whose task ID exists) is confirmed
// too: the replicas then hold at least what it read. Closing it closes rc.
func Replicated(rc redis.UniversalClient, n int, timeout time.Duration) redis.UniversalClient {
	return replicated{UniversalClient: rc, n: n, timeout: timeout}
}

type replicated struct {
	redis.UniversalClient
	n       int
	timeout time.Duration
}

// Eval runs the script and waits for the replicas.
func (r replicated) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return r.confirm(ctx, func(p redis.Pipeliner) *redis.Cmd { return p.Eval(ctx, script, keys, args...) })
}

// EvalSha runs the script and waits for the replicas.
func (r replicated) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return r.confirm(ctx, func(p redis.Pipeliner) *redis.Cmd { return p.EvalSha(ctx, sha1, keys, args...) })
}

func (r replicated) confirm(ctx context.Context, script func(redis.Pipeliner) *redis.Cmd) *redis.Cmd {
	var cmd *redis.Cmd
	var mark *redis.StatusCmd
	var wait *redis.IntCmd
	// A pipeline's commands share one connection, which WAIT needs: it
	// waits for that connection's last write.
	_, _ = r.UniversalClient.Pipelined(ctx, func(p redis.Pipeliner) error {
		cmd = script(p)
		mark = p.Set(ctx, replicationMark, 1, time.Minute)
		// Pipeliner lacks Wait; the command is the same. Its timeout
		// must stay below the connection's read timeout (3 s by default).
		wait = redis.NewIntCmd(ctx, "wait", r.n, r.timeout.Milliseconds())
		return p.Process(ctx, wait)
	})
	if cmd.Err() != nil {
		return cmd
	}
	switch got, err := wait.Result(); {
	case mark.Err() != nil:
		cmd.SetErr(fmt.Errorf("%w: %w", ErrNotReplicated, mark.Err()))
	case err != nil:
		cmd.SetErr(fmt.Errorf("%w: %w", ErrNotReplicated, err))
	case got < int64(r.n):
		cmd.SetErr(fmt.Errorf("%w: %d of %d within %s", ErrNotReplicated, got, r.n, r.timeout))
	}
	return cmd
}
