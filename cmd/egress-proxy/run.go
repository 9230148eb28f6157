package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/bot-bottle/bottleq/egress"
	"github.com/bot-bottle/bottleq/internal/cliflag"
)

// taskID names the one static policy in records and logs.
const taskID = "static"

// tokenEnv sets -token when the flag is not given; prefer it, as flags are
// visible to every user in ps.
const tokenEnv = "BOTTLEQ_EGRESS_TOKEN"

type config struct {
	listen        string
	hosts         []string
	token         string
	maxConns      int
	allowPrivate  bool
	allowLoopback bool
	deny          egress.Prefixes
	clientConns   int
	perSource     int
	headerTimeout time.Duration
	logLevel      string
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("egress-proxy", flag.ContinueOnError)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:3128", "address to listen on")
	fs.Func("allow-host", "a host the token may reach, as allow_hosts takes it: example.com, *.example.com, example.com:443 (repeatable)", func(s string) error {
		if _, err := egress.ParseHost(s); err != nil {
			return err
		}
		c.hosts = append(c.hosts, s)
		return nil
	})
	fs.StringVar(&c.token, "token", "", "the proxy password, 16+ characters of A-Z a-z 0-9 ._~- (default: a random one, printed at start)")
	fs.IntVar(&c.maxConns, "max-conns", egress.DefaultMaxConns, "concurrent connections cap")
	fs.BoolVar(&c.allowPrivate, "allow-private", false, "allow private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7)")
	fs.BoolVar(&c.allowLoopback, "allow-loopback-for-tests", false, "TESTS ONLY: allow loopback addresses, which exposes every service on this host")
	fs.Var(&c.deny, "egress-deny", "a range no client may reach, whatever else allows it: CIDR or IP, comma-separated (repeatable)")
	fs.IntVar(&c.clientConns, "max-client-conns", egress.DefaultMaxClientConns, "client connections held at once, authenticated or not; more are closed at once")
	fs.IntVar(&c.perSource, "max-client-conns-per-source", egress.DefaultMaxClientConnsPerSource, "client connections held at once from one address (one /64 for IPv6)")
	fs.DurationVar(&c.headerTimeout, "header-timeout", egress.DefaultHeaderTimeout, "close a client connection that takes longer to send a request's header, or sends no request for this long")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	envs := []cliflag.Env{
		{"token", tokenEnv},
		{"egress-deny", "BOTTLEQ_EGRESS_DENY"},
		{"max-client-conns", "BOTTLEQ_EGRESS_MAX_CLIENT_CONNS"},
		{"max-client-conns-per-source", "BOTTLEQ_EGRESS_MAX_CLIENT_CONNS_PER_SOURCE"},
		{"header-timeout", "BOTTLEQ_EGRESS_HEADER_TIMEOUT"},
		{"log-level", "BOTTLEQ_LOG_LEVEL"},
	}
	if _, err := cliflag.Parse(fs, args, envs, getenv, "Usage: egress-proxy [flags]\n\n"+
		"Runs the egress proxy with one static policy. Clients authenticate with\n"+
		"Proxy-Authorization: Basic, any user, the token as password.", stderr); err != nil {
		return c, err
	}
	if c.maxConns < 1 {
		return c, fmt.Errorf("-max-conns %d must be at least 1", c.maxConns)
	}
	if c.clientConns < 1 {
		return c, fmt.Errorf("-max-client-conns %d must be at least 1", c.clientConns)
	}
	if c.perSource < 1 {
		return c, fmt.Errorf("-max-client-conns-per-source %d must be at least 1", c.perSource)
	}
	if c.headerTimeout <= 0 {
		return c, fmt.Errorf("-header-timeout %s must be positive", c.headerTimeout)
	}
	return c, nil
}

// Run runs the proxy until ctx ends, then prints the egress record. It
// returns the exit code: 0, 1 on failure, 2 on bad usage.
func Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	c, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return cliflag.ExitCode(stderr, "egress-proxy", err)
	}
	log, err := cliflag.Logger("json", c.logLevel, stderr)
	if err != nil {
		return cliflag.ExitCode(stderr, "egress-proxy", fmt.Errorf("-log-level: %w", err))
	}
	if c.allowLoopback {
		log.Warn().Msg("egress-proxy: -allow-loopback-for-tests is set: clients can reach every service on this host")
	}
	p := egress.New(egress.Config{
		AllowPrivate:            c.allowPrivate,
		AllowLoopback:           c.allowLoopback,
		Deny:                    c.deny,
		HeaderTimeout:           c.headerTimeout,
		MaxClientConns:          c.clientConns,
		MaxClientConnsPerSource: c.perSource,
		Logger:                  log,
	})
	pol := egress.Policy{Hosts: c.hosts, MaxConns: c.maxConns}
	generated := c.token == ""
	if generated {
		c.token, err = p.Register(taskID, pol)
	} else {
		err = p.RegisterToken(taskID, c.token, pol)
	}
	if err != nil {
		fmt.Fprintf(stderr, "egress-proxy: %v\n", err)
		return 2
	}
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		fmt.Fprintf(stderr, "egress-proxy: %v\n", err)
		return 1
	}
	ev := log.Info().Str("listen", ln.Addr().String()).Strs("allow_hosts", c.hosts)
	if generated {
		ev = ev.Str("proxy_url", egress.ProxyURL("http://"+ln.Addr().String(), c.token))
	}
	ev.Msg("egress-proxy: listening")
	err = p.Serve(ctx, ln)
	log.Info().Interface("record", p.Unregister(taskID)).Msg("egress-proxy: stopped")
	if err != nil {
		fmt.Fprintf(stderr, "egress-proxy: %v\n", err)
		return 1
	}
	return 0
}
