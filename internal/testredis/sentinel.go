package testredis

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelConfig shapes [Sentinel]'s setup. The zero value is one sentinel
// and no passwords.
type SentinelConfig struct {
	// Sentinels is how many sentinels watch the master; zero means one.
	Sentinels int
	// Password, when set, is required by the master and the replica (and
	// used by the replica and the sentinels to talk to them).
	Password string
	// SentinelPassword, when set, is required by the sentinels.
	SentinelPassword string
	// Replicas is how many replicas the master has; zero means one.
	Replicas int
	// TLS makes every node and sentinel speak only TLS, with certificates
	// for 127.0.0.1 from one CA made for the test (Sentinels.CAFile).
	TLS bool
}

// Sentinels is a Redis master, one replica of it and the sentinels that
// monitor them, every one a redis-server process on a free loopback port.
type Sentinels struct {
	// Name is the master's name, as the sentinels know it.
	Name string
	// Nodes are the data servers: Nodes[0] starts as the master, the
	// others as its replicas. A failover changes their roles, not their
	// places.
	Nodes []*Server
	// Sentinels are the sentinel processes.
	Sentinels []*Server
	// CAFile is the PEM CA of a TLS setup's certificates.
	CAFile string

	cfg SentinelConfig
	tls *tls.Config // set for a TLS setup
}

// Timeouts of the sentinels: a master is down after downAfter without an
// answer, and a failover step that takes longer than failoverTimeout is
// given up. failoverTimeout is also how long the sentinels wait before
// they make a demoted master that still says it is one a replica.
const (
	downAfter       = time.Second
	failoverTimeout = 5 * time.Second
)

// Sentinel starts a master, its replicas (--replicaof) and the sentinels
// cfg asks for, monitoring the master as "bottleq" with a quorum of one and
// short timeouts. It returns once the master's writes reach every replica
// and every sentinel knows them, so that SENTINEL FAILOVER can pick one. Like
// [Real] it skips the test when redis-server is missing, except under CI.
// Everything is stopped at cleanup.
func Sentinel(t testing.TB, cfg SentinelConfig) *Sentinels {
	t.Helper()
	if cfg.Sentinels <= 0 {
		cfg.Sentinels = 1
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	bin := binaryOrSkip(t)
	s := &Sentinels{Name: "bottleq", cfg: cfg}
	var tf *tlsFiles
	if cfg.TLS {
		dir := t.TempDir()
		ca, err := writeCerts(dir)
		if err != nil {
			t.Fatal(err)
		}
		tf = &tlsFiles{dir: dir, ca: ca}
		s.tls = &tls.Config{RootCAs: ca, ServerName: "127.0.0.1"}
		s.CAFile = filepath.Join(dir, "ca.pem")
	}
	// Either node may be the master: both start a replica's sync at once
	// instead of after Redis's default 5 s.
	node := []string{"--repl-diskless-sync-delay", "0"}
	if cfg.Password != "" {
		node = append(node, "--requirepass", cfg.Password, "--masterauth", cfg.Password)
	}
	if cfg.TLS {
		node = append(node, "--tls-replication", "yes") // a replica's link to its master
	}
	master := startReal(t, tf, node...)
	s.Nodes = []*Server{master}
	for range cfg.Replicas {
		s.Nodes = append(s.Nodes, startReal(t, tf, append(node, "--replicaof", "127.0.0.1", master.port())...))
	}
	s.waitUntil(t, "the master's writes reach its replicas", func(ctx context.Context) error {
		for _, r := range s.Nodes[1:] {
			if err := s.replicates(ctx, master, r); err != nil {
				return err
			}
		}
		return nil
	})

	for i := 0; i < cfg.Sentinels; i++ {
		sen := &Server{Kind: "redis-sentinel", dir: t.TempDir(), tls: s.tls, CAFile: s.CAFile}
		sen.launch(t, bin, func(port int) ([]string, error) {
			// A sentinel rewrites its configuration file, so each gets its own.
			conf := filepath.Join(sen.dir, "sentinel.conf")
			listen := []string{fmt.Sprintf("port %d", port)}
			if tf != nil {
				listen = []string{
					"port 0",
					fmt.Sprintf("tls-port %d", port),
					"tls-cert-file " + filepath.Join(tf.dir, "server.pem"),
					"tls-key-file " + filepath.Join(tf.dir, "server.key"),
					"tls-ca-cert-file " + filepath.Join(tf.dir, "ca.pem"),
					"tls-auth-clients no",
					"tls-replication yes", // the sentinel's links to the nodes
				}
			}
			lines := []string{
				"bind 127.0.0.1",
				"daemonize no",
				"dir " + sen.dir,
				"sentinel resolve-hostnames no",
				fmt.Sprintf("sentinel monitor %s 127.0.0.1 %s 1", s.Name, master.port()),
				fmt.Sprintf("sentinel down-after-milliseconds %s %d", s.Name, downAfter.Milliseconds()),
				fmt.Sprintf("sentinel failover-timeout %s %d", s.Name, failoverTimeout.Milliseconds()),
				fmt.Sprintf("sentinel parallel-syncs %s 1", s.Name),
			}
			lines = append(listen, lines...)
			if cfg.Password != "" {
				lines = append(lines, fmt.Sprintf("sentinel auth-pass %s %s", s.Name, cfg.Password))
			}
			if cfg.SentinelPassword != "" {
				lines = append(lines, "requirepass "+cfg.SentinelPassword)
			}
			return []string{conf, "--sentinel"}, os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
		})
		s.Sentinels = append(s.Sentinels, sen)
	}
	s.waitUntil(t, "every sentinel knows the replicas", func(ctx context.Context) error {
		for _, sen := range s.Sentinels {
			for _, r := range s.Nodes[1:] {
				if err := s.knowsReplica(ctx, sen, r); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return s
}

// URL returns asynq's form, redis-sentinel://[:SENTINELPASSWORD@]S1,S2,...?master=NAME.
// It carries no master password and no TLS: asynq's form has no place for
// them.
func (s *Sentinels) URL() string {
	var addrs []string
	for _, sen := range s.Sentinels {
		addrs = append(addrs, sen.Addr)
	}
	user := ""
	if s.cfg.SentinelPassword != "" {
		user = ":" + url.QueryEscape(s.cfg.SentinelPassword) + "@"
	}
	return "redis-sentinel://" + user + strings.Join(addrs, ",") + "?master=" + s.Name
}

// FailoverURL returns go-redis's form,
// redis://[:SENTINELPASSWORD@]S1?master_name=NAME&addr=S2...&password=PASSWORD,
// rediss:// for TLS.
func (s *Sentinels) FailoverURL() string {
	u := url.URL{Scheme: "redis", Host: s.Sentinels[0].Addr}
	if s.tls != nil {
		u.Scheme = "rediss"
	}
	if s.cfg.SentinelPassword != "" {
		u.User = url.UserPassword("", s.cfg.SentinelPassword)
	}
	q := url.Values{"master_name": {s.Name}}
	for _, sen := range s.Sentinels[1:] {
		q.Add("addr", sen.Addr)
	}
	if s.cfg.Password != "" {
		q.Set("password", s.cfg.Password)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Master returns the node every sentinel names as the master now.
func (s *Sentinels) Master(t testing.TB) *Server {
	t.Helper()
	var m *Server
	s.waitUntil(t, "the sentinels agree on a master", func(ctx context.Context) (err error) {
		m, err = s.agreedMaster(ctx)
		return err
	})
	return m
}

// Failover runs SENTINEL FAILOVER on the first sentinel and returns the
// new master, a former replica, once every sentinel names it and it acts
// as a master. The former master may still act as one for the failover
// timeout (5 s) and up to 10 s more before the sentinels make it a
// replica of the new one.
func (s *Sentinels) Failover(t testing.TB) *Server {
	t.Helper()
	old := s.Master(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc := s.sentinelClient(s.Sentinels[0])
	defer sc.Close()
	if err := sc.Failover(ctx, s.Name).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER %s: %v", s.Name, err)
	}
	var m *Server
	s.waitUntil(t, "the failover completes", func(ctx context.Context) (err error) {
		if m, err = s.agreedMaster(ctx); err != nil {
			return err
		}
		if m == old {
			return fmt.Errorf("the sentinels still name %s", old.Addr)
		}
		return s.role(ctx, m, "master")
	})
	return m
}

// waitUntil polls ok for up to 30 s (a failover takes a few) and fails the
// test with what it waited for and ok's last error.
func (s *Sentinels) waitUntil(t testing.TB, what string, ok func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := ok(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting until %s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Sentinels) sentinelClient(sen *Server) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: sen.Addr, Password: s.cfg.SentinelPassword, TLSConfig: s.tls, MaxRetries: -1})
}

func (s *Sentinels) nodeClient(n *Server) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: n.Addr, Password: s.cfg.Password, TLSConfig: s.tls, MaxRetries: -1})
}

// agreedMaster returns the node every sentinel names as the master.
func (s *Sentinels) agreedMaster(ctx context.Context) (*Server, error) {
	var addr string
	for _, sen := range s.Sentinels {
		sc := s.sentinelClient(sen)
		hp, err := sc.GetMasterAddrByName(ctx, s.Name).Result()
		sc.Close()
		if err != nil {
			return nil, fmt.Errorf("sentinel %s: %w", sen.Addr, err)
		}
		a := hp[0] + ":" + hp[1]
		if addr != "" && a != addr {
			return nil, fmt.Errorf("sentinels disagree: %s and %s", addr, a)
		}
		addr = a
	}
	for _, n := range s.Nodes {
		if n.Addr == addr {
			return n, nil
		}
	}
	return nil, fmt.Errorf("the sentinels name %s, no node of this setup", addr)
}

// knowsReplica checks that sen lists r as a healthy replica.
func (s *Sentinels) knowsReplica(ctx context.Context, sen, r *Server) error {
	sc := s.sentinelClient(sen)
	defer sc.Close()
	reps, err := sc.Replicas(ctx, s.Name).Result()
	if err != nil {
		return fmt.Errorf("sentinel %s: %w", sen.Addr, err)
	}
	for _, rep := range reps {
		if rep["name"] == r.Addr && rep["flags"] == "slave" && rep["master-link-status"] == "ok" {
			return nil
		}
	}
	return fmt.Errorf("sentinel %s does not list %s as a healthy replica: %v", sen.Addr, r.Addr, reps)
}

// replicates checks that a write on m reaches r. A replica that has just
// loaded the master's snapshot reads as in sync and online, yet the master
// streams nothing to it until its first acknowledgement, up to a second
// later: a failover then would promote a replica without the writes
// since.
func (s *Sentinels) replicates(ctx context.Context, m, r *Server) error {
	mc, rc := s.nodeClient(m), s.nodeClient(r)
	defer mc.Close()
	defer rc.Close()
	mark := "testredis:replicates:" + r.Addr
	// The first write may reach r in the snapshot; once r has it, the
	// second can only come through the stream.
	for range 2 {
		n, err := mc.Incr(ctx, mark).Result()
		if err != nil {
			return err // such as NOREPLICAS, until the replicas count
		}
		deadline := time.Now().Add(time.Second)
		for {
			got, err := rc.Get(ctx, mark).Int64()
			if err == nil && got >= n {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("a write on %s did not reach %s within a second (%v)", m.Addr, r.Addr, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// role checks that n says it is a master or a slave (want).
func (s *Sentinels) role(ctx context.Context, n *Server, want string) error {
	c := s.nodeClient(n)
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if got := infoFields(info)["role"]; got != want {
		return fmt.Errorf("%s is a %s, not a %s", n.Addr, got, want)
	}
	return nil
}

func infoFields(info string) map[string]string {
	f := map[string]string{}
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			f[k] = v
		}
	}
	return f
}

// port is the server's port, as a string.
func (s *Server) port() string {
	return s.Addr[strings.LastIndex(s.Addr, ":")+1:]
}
