package egress

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/tasks"
)

// Defaults of [Config]'s client connection limits.
const (
	DefaultHeaderTimeout           = 10 * time.Second
	DefaultMaxClientConns          = 1024
	DefaultMaxClientConnsPerSource = 256
)

// Config configures a [Proxy]. The zero value is a working production
// configuration.
type Config struct {
	// AllowPrivate lets tasks reach private ranges (10/8, 172.16/12,
	// 192.168/16, 100.64/10 CGNAT, fc00::/7, fec0::/10) when their
	// policy lists them. Default false: refused.
	AllowPrivate bool
	// AllowLoopback lets tasks reach loopback addresses (127/8, ::1).
	// It exists for tests only, whose servers listen on 127.0.0.1; in
	// production it would let a VM reach every service on the proxy's
	// host. Default false: refused.
	AllowLoopback bool
	// Deny lists ranges no task may reach, whatever its policy,
	// AllowPrivate and AllowLoopback say: the operator's own networks,
	// say. [Prefixes] reads them from a flag. Default: none.
	Deny []netip.Prefix
	// LocalAddrs returns this host's addresses, which no task may reach
	// on any port; loopback addresses are left to AllowLoopback. It is
	// called for every request, so addresses gained later count; an error
	// refuses the request. Default: every address of every interface
	// (net.InterfaceAddrs).
	LocalAddrs func() ([]netip.Addr, error)
	// Resolver resolves a host name once per request. Default
	// net.DefaultResolver.LookupNetIP with network "ip".
	Resolver func(ctx context.Context, host string) ([]netip.Addr, error)
	// Dial connects to a checked address ("IP:port"). Default a
	// net.Dialer; tests set it to watch dials.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// DialTimeout bounds each name resolution and each dial. Default 10s.
	DialTimeout time.Duration
	// IdleTimeout closes a tunnel or upstream connection that moved no
	// byte either way for this long. Default 5m.
	IdleTimeout time.Duration
	// HeaderTimeout closes a client connection that takes longer than
	// this to send a request's header, which carries its credentials, or
	// that sends no request for this long after its last one. An open
	// tunnel has IdleTimeout instead. Default [DefaultHeaderTimeout].
	HeaderTimeout time.Duration
	// MaxClientConns caps the client connections [Proxy.Serve] holds at
	// once, authenticated or not: it answers 503 to those beyond and
	// closes them at once. Default [DefaultMaxClientConns].
	MaxClientConns int
	// MaxClientConnsPerSource caps them per source address (per /64 for
	// IPv6), so one client cannot take them all. VMs on one host may
	// reach the proxy from one address: keep it above the worker's
	// concurrency times each task's [Policy.MaxConns]. Default
	// [DefaultMaxClientConnsPerSource].
	MaxClientConnsPerSource int
	// ShutdownTimeout is how long [Proxy.Serve] waits, once its context
	// ends, for requests and tunnels to finish before closing them.
	// Default 10s.
	ShutdownTimeout time.Duration
	// Logger gets one line per decision, without tokens. Default: none.
	Logger zerolog.Logger
}

// Proxy is the egress proxy, an [http.Handler]. Create it with [New].
type Proxy struct {
	cfg Config
	log zerolog.Logger

	mu      sync.Mutex
	byToken map[[sha256.Size]byte]*task // by hash, so lookups leak no timing about tokens
	byVM    map[string]*task
	self    map[netip.AddrPort]bool
}

// New returns a Proxy with cfg's defaults filled in.
func New(cfg Config) *Proxy {
	if cfg.Resolver == nil {
		cfg.Resolver = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if cfg.LocalAddrs == nil {
		cfg.LocalAddrs = interfaceAddrs
	}
	deny := make([]netip.Prefix, len(cfg.Deny))
	for i, d := range cfg.Deny {
		deny[i] = normPrefix(d)
	}
	cfg.Deny = deny
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = DefaultHeaderTimeout
	}
	if cfg.MaxClientConns <= 0 {
		cfg.MaxClientConns = DefaultMaxClientConns
	}
	if cfg.MaxClientConnsPerSource <= 0 {
		cfg.MaxClientConnsPerSource = DefaultMaxClientConnsPerSource
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	p := &Proxy{
		cfg:     cfg,
		log:     cfg.Logger,
		byToken: map[[sha256.Size]byte]*task{},
		byVM:    map[string]*task{},
		self:    map[netip.AddrPort]bool{},
	}
	return p
}

// Register installs a task's policy for its VM, named vm (the worker
// registers each attempt's VM by its name; log lines about its requests
// carry it as "vm"), and returns a new random 128-bit token, which the VM
// sends as its proxy password; see [ProxyURL]. It fails on an invalid
// policy or a VM already registered.
func (p *Proxy) Register(vm string, pol Policy) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("egress: token: %w", err)
	}
	tok := hex.EncodeToString(b[:])
	return tok, p.RegisterToken(vm, tok, pol)
}

var tokenRE = regexp.MustCompile(`^[A-Za-z0-9._~-]{16,256}$`)

// RegisterToken is [Proxy.Register] with a token chosen by the caller, as
// cmd/egress-proxy's static token: 16 to 256 characters of A-Z a-z 0-9 and
// ._~- so it needs no escaping in a URL. Prefer Register.
func (p *Proxy) RegisterToken(vm, token string, pol Policy) error {
	if vm == "" {
		return errors.New("egress: VM name is empty")
	}
	if !tokenRE.MatchString(token) {
		return errors.New("egress: token must be 16 to 256 characters of A-Z a-z 0-9 . _ ~ -")
	}
	if pol.MaxConns < 0 {
		return fmt.Errorf("egress: max conns %d is negative", pol.MaxConns)
	}
	rules, err := parseHosts(pol.Hosts)
	if err != nil {
		return err
	}
	max := pol.MaxConns
	if max == 0 {
		max = DefaultMaxConns
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &task{vm: vm, rules: rules, max: max, ctx: ctx, cancel: cancel, entries: map[entryKey]*entry{}, kept: map[bool]int{}}
	key := sha256.Sum256([]byte(token))
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.byVM[vm]; ok {
		cancel()
		return fmt.Errorf("egress: VM %q is already registered", vm)
	}
	if _, ok := p.byToken[key]; ok {
		cancel()
		return errors.New("egress: token is already in use")
	}
	p.byVM[vm], p.byToken[key] = t, t
	t.token = key
	p.log.Debug().Str("vm", vm).Strs("allow_hosts", pol.Hosts).Int("max_conns", max).Msg("egress: registered")
	return nil
}

// unregisterWait bounds how long Unregister waits for the task's
// connections to close after it closes them.
const unregisterWait = 5 * time.Second

// Unregister removes the policy of the task whose VM is named vm, so later
// requests with its token get 407, closes the task's open tunnels and
// requests, and returns its egress record. An unknown VM gets an empty
// record.
func (p *Proxy) Unregister(vm string) tasks.EgressRecord {
	p.mu.Lock()
	t := p.byVM[vm]
	if t != nil {
		delete(p.byVM, vm)
		delete(p.byToken, t.token)
	}
	p.mu.Unlock()
	if t == nil {
		return tasks.EgressRecord{}
	}
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(unregisterWait):
		p.log.Warn().Str("vm", vm).Msg("egress: connections still open after unregister; record may be short")
	}
	rec := t.record()
	if n := t.logs.flush(); n > 0 {
		p.log.Info().Str("vm", vm).Int("suppressed", n).Msg("egress: lines about this task's requests were suppressed")
	}
	p.log.Debug().Str("vm", vm).Int("entries", len(rec.Entries)).Msg("egress: unregistered")
	return rec
}

// ProxyURL returns what a task's VM gets in HTTP_PROXY and HTTPS_PROXY:
// base, "http://IP:PORT" as the worker's -proxy takes it, with the user
// "task" and the token as password. A base that does not parse as a URL
// with a host is returned unchanged, and the VM's requests then get 407.
func ProxyURL(base string, token string) string {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return base
	}
	u.User = url.UserPassword("task", token)
	return u.String()
}

// task is one registered task, known by its VM's name.
type task struct {
	vm     string
	token  [sha256.Size]byte
	rules  []HostRule
	max    int
	ctx    context.Context // ends at Unregister
	cancel context.CancelFunc

	mu        sync.Mutex
	active    int
	closed    bool
	wg        sync.WaitGroup // connections holding a slot
	entries   map[entryKey]*entry
	kept      map[bool]int // entries, allowed and refused
	truncated int
	invalid   int

	logs logLimit // the task's lines about single requests
}

func (t *task) allows(host string, port int) bool {
	_, ok := t.rule(host, port)
	return ok
}

// rule returns the first of the task's rules that allows host:port.
func (t *task) rule(host string, port int) (HostRule, bool) {
	for _, r := range t.rules {
		if r.Match(host, port) {
			return r, true
		}
	}
	return HostRule{}, false
}

// hostFields adds what a log line may say of host: the host itself only
// when an exact allow_hosts entry names it (the producer wrote it), else
// the wildcard rule it matched and its length, else its length alone. A
// name the agent made up never reaches the log, since it can carry
// anything the agent knows, its env values included, as in
// "curl http://$API_KEY.example/". The task's egress record, which goes
// back to the producer, keeps the name.
func (t *task) hostFields(c zerolog.Context, host string, port int) zerolog.Context {
	r, ok := t.rule(host, port)
	switch {
	case ok && !r.Wildcard:
		return c.Str("host", host)
	case ok:
		return c.Str("host_rule", r.String()).Int("host_len", len(host))
	}
	return c.Int("host_len", len(host))
}

// acquire takes a connection slot; release gives it back. It fails when
// the task is at its cap, or was unregistered since its token was looked
// up.
func (t *task) acquire() (ok, closed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.active >= t.max {
		return false, t.closed
	}
	t.active++
	t.wg.Add(1)
	return true, false
}

func (t *task) release() {
	t.mu.Lock()
	t.active--
	t.mu.Unlock()
	t.wg.Done()
}

// lookup returns the task whose token r carries, or nil.
func (p *Proxy) lookup(r *http.Request) *task {
	h := r.Header.Get("Proxy-Authorization")
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return nil
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return nil
	}
	_, tok, ok := strings.Cut(string(raw), ":")
	if !ok || tok == "" {
		return nil
	}
	key := sha256.Sum256([]byte(tok))
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.byToken[key]
}

func (p *Proxy) isSelf(ap netip.AddrPort) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.self[ap]
}

// addSelf records a listener's address as the proxy's own; for an
// unspecified address, every local address with its port.
func (p *Proxy) addSelf(addr net.Addr) {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return
	}
	aps := []netip.AddrPort{unmapAP(ap)}
	if ap.Addr().IsUnspecified() {
		ifaddrs, _ := net.InterfaceAddrs()
		for _, ia := range ifaddrs {
			if pfx, err := netip.ParsePrefix(ia.String()); err == nil {
				aps = append(aps, netip.AddrPortFrom(pfx.Addr().Unmap(), ap.Port()))
			}
		}
		aps = append(aps, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ap.Port()),
			netip.AddrPortFrom(netip.IPv6Loopback(), ap.Port()))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range aps {
		p.self[a] = true
	}
}

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

// Serve serves the proxy on ln until ctx ends, then stops accepting,
// waits up to ShutdownTimeout for requests and tunnels to finish, and
// closes the rest. It holds the client connection caps and timeouts of
// [Config]. It returns nil after a shutdown, or the error that stopped
// serving.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	p.addSelf(ln.Addr())
	cl := newClientLimit(ln, p.cfg.MaxClientConns, p.cfg.MaxClientConnsPerSource, p.log)
	ln = cl
	defer func() {
		if n := cl.logs.flush(); n > 0 {
			p.log.Warn().Int("suppressed", n).Msg("egress: lines about refused connections were suppressed")
		}
	}()
	base, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	var inflight atomic.Int64 // handlers running, including tunnels, which Shutdown does not track
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inflight.Add(1)
			defer inflight.Add(-1)
			p.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: p.cfg.HeaderTimeout,
		IdleTimeout:       p.cfg.HeaderTimeout, // between requests
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          newStdLog(p.log),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.ShutdownTimeout)
	defer cancel()
	_ = srv.Shutdown(sctx) // stops accepting; waits for plain requests
	drained := func() bool { return inflight.Load() == 0 }
	for !drained() && sctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	stop() // ends every request's context, which closes tunnels
	_ = srv.Close()
	for end := time.Now().Add(unregisterWait); !drained() && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
