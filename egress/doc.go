// Package egress is bottleq's egress proxy: the one address a task's microVM
// may reach, which lets each task reach only the hosts its payload lists in
// allow_hosts.
//
// A [Proxy] is an [net/http.Handler]. The worker embeds it in-process: it
// calls [Proxy.Register] when a task starts, which returns a random token
// for the VM's HTTP_PROXY and HTTPS_PROXY (see [ProxyURL]), and
// [Proxy.Unregister] when the task ends, which returns the task's egress
// record, a [tasks.EgressRecord] for its result. cmd/egress-proxy runs one standalone with a static policy.
//
// Each request must carry Proxy-Authorization: Basic with the task's token
// as the password. HTTPS goes through CONNECT host:port and is spliced
// unchanged: there is no TLS interception. Plain HTTP is forwarded from
// absolute-form requests (GET http://host/...). For both, the proxy checks
// the host against the task's [Policy], resolves the name once, checks
// every address against a floor no policy can lift (loopback, link-local
// including cloud metadata, unspecified, multicast, reserved, every
// address of the proxy's own host on every port, the operator's
// [Config.Deny] ranges, and private ranges unless [Config.AllowPrivate]),
// and dials the checked address, never the name, so a second DNS answer
// cannot rebind the connection elsewhere.
//
// [Proxy.Serve] holds its clients to caps, in total and per source
// address, and closes a connection that is slow to send a request's
// header, credentials included, or answered 407, so a flood of idle
// connections cannot take the process's files. A task's record and the
// log lines about its requests are bounded too: a host that is not a
// valid name is refused before it is recorded or logged.
//
// The package uses net/http from the standard library rather than a proxy
// framework such as goproxy: CONNECT plus plain forwarding is a small
// handler, and per-request authentication and a dial-time policy check
// are simpler to get right where every step is in view.
//
// The package must not decide which hosts a task may reach: the policy
// comes from the task's payload. It does not log tokens, does not intercept
// TLS, and does not cache DNS answers across requests.
package egress
