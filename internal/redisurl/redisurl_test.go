package redisurl

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/internal/testredis"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want asynq.RedisConnOpt // TLSConfig compared as set or not
		tls  bool
	}{
		{in: "redis://127.0.0.1:6380", want: asynq.RedisClientOpt{Addr: "127.0.0.1:6380"}},
		{in: "redis://localhost", want: asynq.RedisClientOpt{Addr: "localhost:6379"}},
		{in: "redis://[::1]/1", want: asynq.RedisClientOpt{Addr: "[::1]:6379", DB: 1}},
		{in: "redis://:pw@127.0.0.1:1/2", want: asynq.RedisClientOpt{Addr: "127.0.0.1:1", Password: "pw", DB: 2}},
		{in: "redis://app:pw@127.0.0.1:1", want: asynq.RedisClientOpt{Addr: "127.0.0.1:1", Username: "app", Password: "pw"}},
		{in: "redis://default:pw@127.0.0.1:1", want: asynq.RedisClientOpt{Addr: "127.0.0.1:1", Password: "pw"}},
		{in: "rediss://cache.internal:6380", want: asynq.RedisClientOpt{Addr: "cache.internal:6380"}, tls: true},
		// asynq's Sentinel form: the URL's password is the sentinels'.
		{in: "redis-sentinel://10.0.0.1:26379?master=mymaster",
			want: asynq.RedisFailoverClientOpt{MasterName: "mymaster", SentinelAddrs: []string{"10.0.0.1:26379"}}},
		{in: "redis-sentinel://:pw@10.0.0.1:26379,10.0.0.2:26380,[::1]:26381/3?master=mymaster",
			want: asynq.RedisFailoverClientOpt{MasterName: "mymaster", SentinelAddrs: []string{"10.0.0.1:26379", "10.0.0.2:26380", "[::1]:26381"}, SentinelPassword: "pw", DB: 3}},
		{in: "redis-sentinel://watcher:p%40w@s1:26379/?master=m",
			want: asynq.RedisFailoverClientOpt{MasterName: "m", SentinelAddrs: []string{"s1:26379"}, SentinelUsername: "watcher", SentinelPassword: "p@w"}},
		// go-redis's failover form: the URL's credentials are the
		// sentinels', the query's the master's.
		{in: "redis://s1:26379?master_name=m&addr=s2:26379&addr=[::1]:26380",
			want: asynq.RedisFailoverClientOpt{MasterName: "m", SentinelAddrs: []string{"s1:26379", "s2:26379", "[::1]:26380"}}},
		{in: "rediss://watcher:spw@s1:26379/4?master_name=m&username=app&password=mpw&dial_timeout=3&read_timeout=6s&write_timeout=1s&pool_size=7",
			want: asynq.RedisFailoverClientOpt{MasterName: "m", SentinelAddrs: []string{"s1:26379"}, SentinelUsername: "watcher", SentinelPassword: "spw",
				Username: "app", Password: "mpw", DB: 4, DialTimeout: 3 * time.Second, ReadTimeout: 6 * time.Second, WriteTimeout: time.Second, PoolSize: 7},
			tls: true},
		{in: "redis://s1:26379?master_name=m&db=5", want: asynq.RedisFailoverClientOpt{MasterName: "m", SentinelAddrs: []string{"s1:26379"}, DB: 5}},
	}
	for _, tt := range tests {
		t.Run(Redacted(tt.in), func(t *testing.T) {
			t.Parallel()
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			var cfgSet bool
			switch o := got.(type) {
			case asynq.RedisClientOpt:
				cfgSet, o.TLSConfig = o.TLSConfig != nil, nil
				got = o
			case asynq.RedisFailoverClientOpt:
				if o.TLSConfig != nil && o.TLSConfig.ServerName != "" {
					t.Errorf("a Sentinel TLS config names server %q: the master's certificate would be checked against it", o.TLSConfig.ServerName)
				}
				cfgSet, o.TLSConfig = o.TLSConfig != nil, nil
				got = o
			}
			if !reflect.DeepEqual(got, tt.want) || cfgSet != tt.tls {
				t.Errorf("Parse = %#v (TLS %v), want %#v (TLS %v)", got, cfgSet, tt.want, tt.tls)
			}
		})
	}
}

// TestParseErrors: each bad URL gets a one-line error naming what is
// wrong, and no error quotes a password.
func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, err string }{
		{"::not a url s3cret", "not a valid URL"},
		{"s3cret@127.0.0.1:6379", "not a valid URL"},
		{"http://:s3cret@127.0.0.1", "scheme"},
		{"s3cret://x@127.0.0.1", "scheme"},
		{"redis://", "no host"},
		{"redis://:s3cret@127.0.0.1/x", "database number"},
		{"redis://:s3cret@127.0.0.1/1/2", "database number"},
		{"redis://:s3cret@127.0.0.1/-1", "database number"},
		{"redis://:s3cret@[::1", "not a valid URL"},
		{"redis://:s3cret@127.0.0.1?master=m", `"master" belongs to redis-sentinel://`},
		{"redis://:s3cret@127.0.0.1?dial_timeout=3", `parameter "dial_timeout" is not supported`},
		{"redis://:s3cret@127.0.0.1?s3cret", "parameter (an unknown name"},
		{"redis://:s3cret@127.0.0.1?a=%zz", "query is not valid"},
		// asynq's Sentinel form
		{"redis-sentinel://:s3cret@", "no sentinel address"},
		{"redis-sentinel://:s3cret@/0?master=m", "no sentinel address"},
		{"redis-sentinel://:s3cret@s1?master=m", "sentinel address 1 has no port"},
		{"redis-sentinel://:s3cret@s1:26379,s2?master=m", "sentinel address 2 has no port"},
		{"redis-sentinel://:s3cret@s1:26379,[::1]?master=m", "sentinel address 2 has no port"},
		{"redis-sentinel://:s3cret@s1:26379,?master=m", "sentinel address 2 is empty"},
		{"redis-sentinel://:s3cret@s1:1:2?master=m", "sentinel address 1 is not HOST:PORT"},
		{"redis-sentinel://:s3cret@:26379?master=m", "sentinel address 1 is not HOST:PORT"},
		{"redis-sentinel://:s3cret@s1:?master=m", "sentinel address 1 has no port"},
		{"redis-sentinel://:s3cret@s1:99999?master=m", "sentinel address 1 has a port that is not"},
		{"redis-sentinel://:s3cret@s1:x?master=m", "sentinel address 1 has a port that is not"},
		{"redis-sentinel://:s3cret@s1:26379", "no master=NAME"},
		{"redis-sentinel://:s3cret@s1:26379?master=", "no master=NAME"},
		{"redis-sentinel://:s3cret@s1:26379/db?master=m", "database number"},
		{"redis-sentinel://:s3cret@s1:26379?master=m&password=s3cret", `parameter "password" is not supported on redis-sentinel://`},
		{"redis-sentinel://:s3cret@s1:26379?master_name=m", `parameter "master_name" is not supported on redis-sentinel://`},
		{"redis-sentinel://:s3%zzcret@s1:26379?master=m", "not a valid URL"},
		// go-redis's failover form
		{"redis://:s3cret@s1:26379?master_name=", "master_name= is empty"},
		{"redis://:s3cret@s1?master_name=m", "sentinel address 1 has no port"},
		{"redis://:s3cret@s1:26379?master_name=m&addr=s2", "sentinel address 2 (addr=) has no port"},
		{"redis://:s3cret@s1:26379?master_name=m&addr=s2:1&addr=s3:0", "sentinel address 3 (addr=) has a port that is not"},
		{"redis://:s3cret@s1:26379/x?master_name=m", "database number"},
		{"redis://:s3cret@s1:26379?master_name=m&db=x", "database number"},
		{"redis://:s3cret@s1:26379?master_name=m&dial_timeout=soon&password=s3cret", "dial_timeout"},
		{"redis://:s3cret@s1:26379?master_name=m&pool_size=many", "pool_size"},
		{"redis://:s3cret@s1:26379?master_name=m&skip_verify=true", `parameter "skip_verify" is not supported`},
		{"redis://:s3cret@s1:26379?master_name=m&replica_only=true", `parameter "replica_only" is not supported`},
		{"redis://:s3cret@s1:26379?master_name=m&sentinel_password=s3cret", `parameter "sentinel_password" is not supported`},
	}
	for _, tt := range tests {
		_, err := Parse(tt.in)
		switch {
		case err == nil:
			t.Errorf("Parse(%s) = nil error, want one about %q", Redacted(tt.in), tt.err)
		case !strings.Contains(err.Error(), tt.err):
			t.Errorf("Parse(%s) = %q, want it to say %q", Redacted(tt.in), err, tt.err)
		case strings.Contains(err.Error(), "s3cret"), strings.Contains(err.Error(), "\n"):
			t.Errorf("Parse(%s) = %q: a password, or more than a line", Redacted(tt.in), err)
		}
		// Open reads the URL the same way.
		if _, oerr := Open(tt.in, ""); oerr == nil || errors.Is(oerr, ErrCA) || (err != nil && oerr.Error() != err.Error()) {
			t.Errorf("Open(%s) = %v, want Parse's error %v", Redacted(tt.in), oerr, err)
		}
	}
}

func TestWithCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(good, selfSignedPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, raw := range []string{"redis://127.0.0.1:1", "redis-sentinel://127.0.0.1:1?master=m", "redis://127.0.0.1:1?master_name=m"} {
		opt, _ := Parse(raw)
		if _, err := WithCA(opt, good); err == nil || !errors.Is(err, ErrCA) {
			t.Errorf("%s: a CA file without TLS = %v, want an ErrCA", raw, err)
		}
		if got, err := WithCA(opt, ""); err != nil || !reflect.DeepEqual(got, opt) {
			t.Errorf("%s: an empty CA file must change nothing", raw)
		}
	}
	for _, raw := range []string{"rediss://127.0.0.1:1", "rediss://127.0.0.1:1?master_name=m"} {
		opt, _ := Parse(raw)
		for _, f := range []string{filepath.Join(dir, "missing.pem"), bad} {
			if _, err := WithCA(opt, f); !errors.Is(err, ErrCA) {
				t.Errorf("%s with %s = %v, want an ErrCA", raw, filepath.Base(f), err)
			}
			if _, err := Open(raw, f); !errors.Is(err, ErrCA) {
				t.Errorf("Open %s with %s = %v, want an ErrCA", raw, filepath.Base(f), err)
			}
		}
		got, err := WithCA(opt, good)
		if err != nil {
			t.Fatal(err)
		}
		if cfg := tlsConfig(got); cfg == nil || cfg.RootCAs == nil || cfg == tlsConfig(opt) || tlsConfig(opt).RootCAs != nil {
			t.Errorf("%s: WithCA must set RootCAs on a copy of the TLS config", raw)
		}
	}
}

func tlsConfig(opt asynq.RedisConnOpt) *tls.Config {
	switch o := opt.(type) {
	case asynq.RedisClientOpt:
		return o.TLSConfig
	case asynq.RedisFailoverClientOpt:
		return o.TLSConfig
	}
	return nil
}

// TestOpen: a server URL opens a plain client, a Sentinel URL a failover
// client, neither connecting yet.
func TestOpen(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{
		"redis://127.0.0.1:1/2":                  "127.0.0.1:1",
		"redis-sentinel://127.0.0.1:1?master=m":  "FailoverClient",
		"redis://127.0.0.1:1?master_name=m&db=1": "FailoverClient",
	} {
		c, err := Open(raw, "")
		if err != nil {
			t.Fatal(err)
		}
		if s := c.(*redis.Client).String(); !strings.Contains(s, want) {
			t.Errorf("Open(%s) = %s, want a %s", raw, s, want)
		}
		c.Close()
	}
}

func TestRedacted(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"redis://:s3cret@127.0.0.1:1":                            "redis://:xxxxx@127.0.0.1:1",
		"redis://app:s3cret@127.0.0.1:1/2":                       "redis://app:xxxxx@127.0.0.1:1/2",
		"redis://127.0.0.1:1":                                    "redis://127.0.0.1:1",
		"redis-sentinel://:s3cret@s1:1,[::1]:2/3?master=m":       "redis-sentinel://:xxxxx@s1:1,[::1]:2/3?master=m",
		"redis://w:s3cret@s1:1?master_name=m&password=s3cret#x":  "redis://w:xxxxx@s1:1?master_name=m&password=xxxxx",
		"rediss://s1:1?sentinel_password=s3cret&password=s3cret": "rediss://s1:1?password=xxxxx&sentinel_password=xxxxx",
		"redis://s1:1?password=s3cret&a=%zz":                     "redis://s1:1?(invalid query)",
		"s3cret":                                                 "(invalid URL)",
	} {
		if got := Redacted(in); got != want || strings.Contains(got, "s3cret") {
			t.Errorf("Redacted = %q, want %q", got, want)
		}
	}
}

// TestShared: every client made from Shared(c) is c, and closing one
// leaves c open.
func TestShared(t *testing.T) {
	t.Parallel()
	c := redis.NewClient(&redis.Options{Addr: testredis.Mini(t).Addr})
	defer c.Close()
	opt := Shared(c)
	made, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		t.Fatalf("MakeRedisClient = %T, want a redis.UniversalClient", opt.MakeRedisClient())
	}
	if err := made.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Errorf("closing the shared client closed c: %v", err)
	}
	if made.(unclosable).UniversalClient != c {
		t.Error("the shared client is not c")
	}
}

// selfSignedPEM is a CA certificate in PEM, for WithCA to parse.
func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redisurl test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestWithPoolSize: the pool size reaches the client made from the URL's
// options, for one server and behind Sentinel; other options stay.
func TestWithPoolSize(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"redis://127.0.0.1:1/3", "redis-sentinel://127.0.0.1:1?master=m"} {
		t.Run(raw, func(t *testing.T) {
			t.Parallel()
			opt, err := Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			c, ok := WithPoolSize(opt, 777).MakeRedisClient().(*redis.Client)
			if !ok {
				t.Fatalf("%T, want a *redis.Client", c)
			}
			defer c.Close()
			if o := c.Options(); o.PoolSize != 777 || o.DB != 3 && raw == "redis://127.0.0.1:1/3" {
				t.Errorf("pool size %d, db %d; want 777 and the URL's db", o.PoolSize, o.DB)
			}
		})
	}
	shared := Shared(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}))
	if got := WithPoolSize(shared, 777); got != shared {
		t.Errorf("a shared client's options changed: %v", got)
	}
}
