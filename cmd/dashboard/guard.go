package main

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
)

// loopbackNames are the Host names a browser uses for a dashboard that
// listens on loopback (or on every interface, which includes loopback).
var loopbackNames = []string{"localhost", "127.0.0.1", "::1"}

// hostName returns the name part of a Host header or a host list entry,
// lower-cased, without port, IPv6 brackets or a trailing dot: "[::1]:8080"
// is "::1", "Dash.Example.com.:443" is "dash.example.com".
func hostName(hostport string) string {
	h := hostport
	if name, _, err := net.SplitHostPort(hostport); err == nil {
		h = name
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// hostList is the -allowed-hosts flag: host names, comma-separated; the flag
// may be repeated.
type hostList []string

// String returns the names, comma-separated.
func (l *hostList) String() string { return strings.Join(*l, ",") }

// Set adds the comma-separated names in s. Each is a DNS name or an IP
// address, optionally with a port (ignored); not a URL, not a pattern.
func (l *hostList) Set(s string) error {
	for _, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		name := hostName(entry)
		if _, port, err := net.SplitHostPort(entry); err == nil && !validPort(port) || !validHostName(name) {
			return fmt.Errorf("%q is not a host name: write NAME or NAME:PORT, no scheme, path or wildcard", entry)
		}
		*l = append(*l, name)
	}
	return nil
}

// validPort reports whether port is a TCP port number.
func validPort(port string) bool {
	n, err := strconv.Atoi(port)
	return err == nil && n > 0 && n < 1<<16 && port[0] != '+'
}

// validHostName reports whether name (as hostName returns it) is an IP
// address or a DNS name of letters, digits, '-' and '_' labels.
func validHostName(name string) bool {
	if net.ParseIP(name) != nil {
		return true
	}
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// hostPolicy is the set of Host names the dashboard answers to.
type hostPolicy map[string]bool

// newHostPolicy allows the host of the listen address listen, the loopback
// names when listen is on loopback or on every interface, and extra.
// Anything else in a Host header is foreign: a browser sends it when a
// name the operator never chose resolves to the dashboard, as in DNS
// rebinding.
func newHostPolicy(listen string, extra []string) hostPolicy {
	p := hostPolicy{}
	host := hostName(listen)
	ip := net.ParseIP(host)
	every := host == "" || ip != nil && ip.IsUnspecified()
	if !every {
		p[host] = true
	}
	if every || host == "localhost" || ip != nil && ip.IsLoopback() {
		for _, name := range loopbackNames {
			p[name] = true
		}
	}
	for _, name := range extra {
		p[name] = true
	}
	return p
}

// allows reports whether a request's Host header names this dashboard.
func (p hostPolicy) allows(host string) bool { return p[hostName(host)] }

// isWrite reports whether a request may change something: any method but
// GET, HEAD and OPTIONS.
func isWrite(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// crossOrigin returns why r comes from a page of another origin, or "" if
// it does not. A browser marks every write with Origin; where it leaves
// Origin out, Sec-Fetch-Site and then Referer say where the request came
// from. A request with none of them is not from a browser (curl, scripts)
// and cannot be forged by a web page.
func crossOrigin(r *http.Request) string {
	if o := r.Header.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			return fmt.Sprintf("Origin %q is not this dashboard's (Host %q)", o, r.Host)
		}
		return ""
	}
	switch s := r.Header.Get("Sec-Fetch-Site"); s {
	case "":
	case "same-origin", "none":
		return ""
	default:
		return fmt.Sprintf("Sec-Fetch-Site is %q", s)
	}
	if ref := r.Header.Get("Referer"); ref != "" {
		if u, err := url.Parse(ref); err != nil || !strings.EqualFold(u.Host, r.Host) {
			return fmt.Sprintf("Referer is not a page of this dashboard (Host %q)", r.Host)
		}
	}
	return ""
}

// notJSON returns why a write's body is not JSON, or "" if it is JSON or
// there is no body. A web page can send a cross-origin write without asking
// first only as text/plain, a form or multipart; asynqmon's UI sends its
// bodies as application/json, and its single-task actions with no body and
// no Content-Type.
func notJSON(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if ct == "" && r.ContentLength == 0 {
		return ""
	}
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return fmt.Sprintf("Content-Type %q is not application/json", ct)
	}
	return ""
}

// guard answers only requests to an allowed Host (else 421) and, of those,
// lets writes through only when writable (else 405), from this dashboard's
// own pages or from no browser at all (else 403), and with a JSON body or
// none (else 415). Each refusal is one line of text and a debug log line.
func guard(next http.Handler, hosts hostPolicy, writable bool, log zerolog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, why := 0, ""
		switch {
		case !hosts.allows(r.Host):
			code, why = http.StatusMisdirectedRequest,
				fmt.Sprintf("Host %q is not a name of this dashboard; add it with -allowed-hosts", r.Host)
		case !isWrite(r.Method):
		case !writable:
			code, why = http.StatusMethodNotAllowed,
				fmt.Sprintf("the dashboard is read-only: %s refused; start it with -writable to allow changes", r.Method)
			w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		default:
			if why = crossOrigin(r); why != "" {
				code, why = http.StatusForbidden, "cross-origin request refused: "+why
			} else if why = notJSON(r); why != "" {
				code = http.StatusUnsupportedMediaType
			}
		}
		if code == 0 {
			next.ServeHTTP(w, r)
			return
		}
		log.Debug().Str("method", r.Method).Str("path", r.URL.Path).Int("status", code).Str("reason", why).Msg("request refused")
		http.Error(w, "dashboard: "+why, code)
	})
}
