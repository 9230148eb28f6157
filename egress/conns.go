package egress

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// clientLimit is the listener [Proxy.Serve] serves: it accepts and at
// once closes, with a 503, each connection beyond [Config.MaxClientConns]
// in total or [Config.MaxClientConnsPerSource] from its source, so a flood
// of connections holds at most the caps' worth of the process's files.
type clientLimit struct {
	net.Listener
	max, perSource int
	log            zerolog.Logger
	logs           logLimit

	mu       sync.Mutex
	open     int
	bySource map[netip.Addr]int // by sourceKey
}

func newClientLimit(ln net.Listener, max, perSource int, log zerolog.Logger) *clientLimit {
	return &clientLimit{Listener: ln, max: max, perSource: perSource, log: log, bySource: map[netip.Addr]int{}}
}

// Accept returns the next connection within the caps.
func (l *clientLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceKey(c.RemoteAddr())
		if why := l.take(src); why != "" {
			l.refuse(c, src, why)
			continue
		}
		return &clientConn{Conn: c, release: func() { l.give(src) }}, nil
	}
}

// take counts a connection from src, or says which cap it would pass.
func (l *clientLimit) take(src netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.open >= l.max:
		return "too many client connections (max " + strconv.Itoa(l.max) + ")"
	case l.bySource[src] >= l.perSource:
		return "too many connections from one source (max " + strconv.Itoa(l.perSource) + ")"
	}
	l.open++
	l.bySource[src]++
	return ""
}

func (l *clientLimit) give(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.bySource[src]--; l.bySource[src] <= 0 {
		delete(l.bySource, src)
	}
}

// refuse answers 503 and closes c. The write cannot wait: the connection
// is new, so its send buffer is empty.
func (l *clientLimit) refuse(c net.Conn, src netip.Addr, why string) {
	body := "bottleq egress: " + why + "\n"
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = io.WriteString(c, fmt.Sprintf("HTTP/1.1 503 Service Unavailable\r\n"+
		"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
	_ = c.Close()
	l.logs.gate(l.log.Warn()).Str("source", src.String()).Str("reason", why).Msg("egress: connection refused")
}

// sourceKey is what the per-source cap counts by: the IPv4 address, or
// the IPv6 /64, which one host usually holds whole.
func sourceKey(addr net.Addr) netip.Addr {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Addr{}
	}
	a := ap.Addr().Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// clientConn gives its slot back when it is first closed, whether by
// net/http or, for a tunnel, by the handler that hijacked it.
type clientConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *clientConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite half-closes the connection, as a tunnel does when the
// upstream is done sending.
func (c *clientConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
