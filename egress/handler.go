package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/internal/validate"
)

// refusal is a request the proxy will not carry out.
type refusal struct {
	status int
	reason string // short, for the record
	msg    string // one line, for the client
}

func refuse(status int, reason, format string, args ...any) *refusal {
	return &refusal{status: status, reason: reason, msg: "bottleq egress: " + fmt.Sprintf(format, args...)}
}

// ServeHTTP implements [http.Handler]: CONNECT host:port tunnels and
// absolute-form plain HTTP requests, for registered tasks only.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := p.lookup(r)
	if t == nil {
		p.unauthorized(w, r)
		return
	}
	var hostport string
	switch {
	case r.Method == http.MethodConnect:
		hostport = r.Host
	case r.URL.IsAbs() && r.URL.Scheme == "http" && r.URL.Host != "":
		hostport = r.URL.Host
		if r.URL.Port() == "" {
			hostport = net.JoinHostPort(r.URL.Hostname(), "80")
		}
	case r.URL.IsAbs():
		p.reply(w, r, refuse(http.StatusBadRequest, "", "scheme %q is not proxied; use CONNECT for https", r.URL.Scheme))
		return
	default:
		p.reply(w, r, refuse(http.StatusBadRequest, "", "this is a proxy; send CONNECT host:port or an absolute http:// URL"))
		return
	}
	h, ps, err := net.SplitHostPort(hostport)
	port, perr := strconv.Atoi(ps)
	if err != nil || perr != nil || port < 1 || port > 65535 || h == "" {
		p.reply(w, r, refuse(http.StatusBadRequest, "", "target %q is not host:port", hostport))
		return
	}
	host, isIP := canonicalHost(h)
	if !isIP {
		// Before the host is recorded or logged: a name can be as long
		// as the request line.
		if _, reason := validate.HostName(host); reason != "" {
			t.noteInvalid()
			t.logs.gate(p.log.Info()).Str("vm", t.vm).Int("len", len(h)).Str("method", r.Method).
				Msg("egress: refused a host that is not a valid name")
			p.reply(w, r, refuse(http.StatusBadRequest, "", "the target host (%d bytes) %s", len(h), reason))
			return
		}
	}
	log := t.hostFields(p.log.With().Str("vm", t.vm), host, port).Int("port", port).Str("method", r.Method).Logger()

	addrs, ref := p.check(r.Context(), t, host, port)
	if ref == nil {
		ok, closed := t.acquire()
		if closed {
			p.unauthorized(w, r)
			return
		}
		if !ok {
			ref = refuse(http.StatusTooManyRequests, fmt.Sprintf("too many concurrent connections (max %d)", t.max),
				"task has too many concurrent connections (max %d)", t.max)
		}
	}
	if ref != nil {
		if ref.reason != "" {
			t.note(host, port, false, ref.reason)
		}
		t.logs.gate(log.Info()).Int("status", ref.status).Str("reason", ref.reason).Msg("egress: refused")
		p.reply(w, r, ref)
		return
	}
	defer t.release()
	e := t.note(host, port, true, "")
	log.Debug().Msg("egress: allowed")

	// The request ends when the client goes, the server shuts down, or
	// the task is unregistered.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(t.ctx, cancel)()
	if r.Method == http.MethodConnect {
		p.tunnel(ctx, w, r, addrs, e, log, &t.logs)
		return
	}
	p.forward(ctx, w, r, addrs, e, log, &t.logs)
}

// unauthorized answers 407 and closes the connection, which has no
// business staying open without credentials.
func (p *Proxy) unauthorized(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Proxy-Authenticate", `Basic realm="bottleq"`)
	w.Header().Set("Connection", "close")
	p.reply(w, r, refuse(http.StatusProxyAuthRequired, "", "proxy authentication required: Basic, with the task's token as password"))
}

// check applies the task's policy to host:port, resolves host once, and
// checks every address against the floor. It returns the addresses to
// dial, or why not.
func (p *Proxy) check(ctx context.Context, t *task, host string, port int) ([]netip.AddrPort, *refusal) {
	if !t.allows(host, port) {
		return nil, refuse(http.StatusForbidden, "not in allow_hosts",
			"host %q is not in this task's allow_hosts", net.JoinHostPort(host, strconv.Itoa(port)))
	}
	var ips []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return nil, refuse(http.StatusForbidden, "IPv6 zone", "host %q has an IPv6 zone", host)
		}
		ips = []netip.Addr{a}
	} else {
		rctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
		defer cancel()
		ips, err = p.cfg.Resolver(rctx, host)
		if err != nil || len(ips) == 0 {
			if err == nil {
				err = errNoAddrs
			}
			// Not the resolver's error: its text quotes the name.
			l := t.hostFields(p.log.With().Str("vm", t.vm), host, port).Logger()
			t.logs.gate(l.Info()).Str("reason", resolveReason(err)).Msg("egress: cannot resolve")
			return nil, refuse(http.StatusBadGateway, resolveReason(err), "cannot resolve host %q", host)
		}
	}
	local, err := p.localAddrs()
	if err != nil {
		t.logs.gate(p.log.Warn()).Err(err).Str("vm", t.vm).Msg("egress: cannot list this host's addresses")
		return nil, refuse(http.StatusServiceUnavailable, "the proxy cannot list its own addresses",
			"cannot list this host's addresses to check %q against them", host)
	}
	aps := make([]netip.AddrPort, 0, len(ips))
	for _, a := range ips {
		ap := netip.AddrPortFrom(a.Unmap(), uint16(port))
		if why := p.forbidden(ap, local); why != "" {
			return nil, refuse(http.StatusForbidden, fmt.Sprintf("resolves to a forbidden address (%s: %s)", a.Unmap(), why),
				"host %q resolves to a forbidden address (%s: %s)", host, a.Unmap(), why)
		}
		aps = append(aps, ap)
	}
	return aps, nil
}

// upstreamReason says why a forwarded request failed without the error's
// text.
func upstreamReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "upstream closed the connection"
	case errors.As(err, new(*net.OpError)):
		return "connection failed"
	}
	return "bad upstream reply"
}

// errNoAddrs is a resolver's answer without an address.
var errNoAddrs = errors.New("no addresses")

// resolveReason is what a task's record says of a name that did not
// resolve: why, as far as the resolver's error tells, without its text
// (which names the resolver's address).
func resolveReason(err error) string {
	var dns *net.DNSError
	switch {
	case errors.Is(err, errNoAddrs):
		return "cannot resolve: no addresses"
	case errors.As(err, &dns) && dns.IsNotFound:
		return "cannot resolve: no such host"
	case errors.As(err, &dns) && dns.IsTimeout, errors.Is(err, context.DeadlineExceeded):
		return "cannot resolve: timed out"
	case errors.As(err, &dns):
		return "cannot resolve: DNS failure"
	}
	return "cannot resolve"
}

// dial connects to the first of the checked addresses that answers.
func (p *Proxy) dial(ctx context.Context, aps []netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	var errs []error
	for _, ap := range aps {
		c, err := p.cfg.Dial(ctx, "tcp", ap.String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// reply writes a refusal: its status and one line of text.
func (p *Proxy) reply(w http.ResponseWriter, r *http.Request, ref *refusal) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if r.Method == http.MethodConnect {
		w.Header().Set("Connection", "close")
	}
	w.WriteHeader(ref.status)
	_, _ = io.WriteString(w, ref.msg+"\n")
}

// tunnel dials, answers 200 and splices the client and upstream together.
func (p *Proxy) tunnel(ctx context.Context, w http.ResponseWriter, r *http.Request, aps []netip.AddrPort, e *entry, log zerolog.Logger, logs *logLimit) {
	up, err := p.dial(ctx, aps)
	if err != nil {
		logs.gate(log.Info()).Err(err).Msg("egress: dial failed")
		p.reply(w, r, refuse(http.StatusBadGateway, "", "cannot connect to %q", r.Host))
		return
	}
	defer up.Close()
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		log.Warn().Err(err).Msg("egress: hijack failed")
		p.reply(w, r, refuse(http.StatusInternalServerError, "", "cannot take over the connection"))
		return
	}
	defer client.Close()
	stop := context.AfterFunc(ctx, func() { client.Close(); up.Close() })
	defer stop()
	_ = client.SetDeadline(time.Time{})
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	// Bytes the client sent after the CONNECT request, already read.
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
		e.up.Add(int64(n))
	}
	start := time.Now()
	p.splice(client, up, e)
	log.Debug().Float64("duration_ms", float64(time.Since(start))/float64(time.Millisecond)).Int64("bytes_up", e.up.Load()).Int64("bytes_down", e.down.Load()).Msg("egress: tunnel closed")
}

// splice copies both ways until both directions end, or nothing moves
// either way for IdleTimeout.
func (p *Proxy) splice(client, up net.Conn, e *entry) {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn, n *atomic.Int64) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			_ = src.SetReadDeadline(time.Now().Add(p.cfg.IdleTimeout))
			k, err := src.Read(buf)
			if k > 0 {
				last.Store(time.Now().UnixNano())
				_ = dst.SetWriteDeadline(time.Now().Add(p.cfg.IdleTimeout))
				if _, werr := dst.Write(buf[:k]); werr != nil {
					client.Close()
					up.Close()
					return
				}
				n.Add(int64(k))
				last.Store(time.Now().UnixNano())
			}
			if err == nil {
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, last.Load())) < p.cfg.IdleTimeout {
				continue // the other direction is busy
			}
			if errors.Is(err, io.EOF) {
				closeWrite(dst)
				return
			}
			client.Close()
			up.Close()
			return
		}
	}
	wg.Add(2)
	go pipe(up, client, &e.up)
	go pipe(client, up, &e.down)
	wg.Wait()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// forward sends a plain HTTP request upstream through a connection to a
// checked address. Upstream connections are not reused: each request's
// own check decides where it goes.
func (p *Proxy) forward(ctx context.Context, w http.ResponseWriter, r *http.Request, aps []netip.AddrPort, e *entry, log zerolog.Logger, logs *logLimit) {
	var mu sync.Mutex
	var conns []*countingConn
	tr := &http.Transport{
		Proxy: nil, // never the environment's proxy
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := p.dial(ctx, aps)
			if err != nil {
				return nil, err
			}
			cc := &countingConn{Conn: c, e: e, idle: p.cfg.IdleTimeout}
			mu.Lock()
			conns = append(conns, cc)
			mu.Unlock()
			return cc, nil
		},
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 1 << 20,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.Host = "" // the URL's host, which was checked
			pr.Out.Header.Del("Proxy-Authorization")
		},
		Transport: tr,
		ErrorLog:  newStdLog(log),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// Not the error's text, which may quote the URL or the
			// upstream's reply.
			logs.gate(log.Info()).Str("reason", upstreamReason(err)).Msg("egress: upstream failed")
			p.reply(w, r, refuse(http.StatusBadGateway, "", "upstream %q failed", r.URL.Host))
		},
	}
	rp.ServeHTTP(w, r.WithContext(ctx))
	tr.CloseIdleConnections()
	// The transport's goroutines may still be inside a Read or Write;
	// wait for them so the record is complete when the slot is released.
	mu.Lock()
	defer mu.Unlock()
	for _, c := range conns {
		c.finish()
	}
}

// countingConn counts an upstream connection's bytes into an entry and
// fails a read or write that waits longer than idle.
type countingConn struct {
	net.Conn
	e    *entry
	idle time.Duration

	mu   sync.RWMutex // held for reading during each Read and Write
	done bool
}

func (c *countingConn) Read(b []byte) (int, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.done {
		return 0, net.ErrClosed
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Read(b)
	c.e.down.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.done {
		return 0, net.ErrClosed
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	n, err := c.Conn.Write(b)
	c.e.up.Add(int64(n))
	return n, err
}

// finish closes the connection and waits for Reads and Writes in progress.
func (c *countingConn) finish() {
	_ = c.Conn.Close()
	c.mu.Lock()
	c.done = true
	c.mu.Unlock()
}

// newStdLog adapts a zerolog.Logger for net/http's ErrorLog.
func newStdLog(l zerolog.Logger) *log.Logger {
	return log.New(l.With().Str("from", "net/http").Logger(), "", 0)
}
