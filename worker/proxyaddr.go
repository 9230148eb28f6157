package worker

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
)

// ProxyAddr is where VMs reach an egress proxy, parsed from its URL. It is
// an address only; the bundled proxy server is [egress.Proxy].
type ProxyAddr struct {
	// URL is what the VM gets in HTTP_PROXY and HTTPS_PROXY.
	URL string
	// Prefix is the single address VMs may reach.
	Prefix netip.Prefix
}

// ParseProxyAddr reads "http://IP:PORT". The host must be a literal IP:
// smolvm allows egress by CIDR, and a name could resolve elsewhere later.
func ParseProxyAddr(s string) (ProxyAddr, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.User != nil {
		return ProxyAddr{}, fmt.Errorf("%q must be http://IP:PORT", s)
	}
	a, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return ProxyAddr{}, fmt.Errorf("host of %q must be an IP address, not a name", s)
	}
	if port, err := strconv.Atoi(u.Port()); err != nil || port < 1 || port > 65535 {
		return ProxyAddr{}, fmt.Errorf("port of %q is out of range", s)
	}
	return ProxyAddr{URL: "http://" + u.Host, Prefix: netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())}, nil
}

// env is what a VM gets so its tools use the proxy.
func (p *ProxyAddr) env() map[string]string { return p.envWith(p.URL) }

// envWith is env with another proxy URL, such as one carrying a task's
// credentials.
func (p *ProxyAddr) envWith(proxyURL string) map[string]string {
	const noProxy = "localhost,127.0.0.1,::1"
	return map[string]string{
		"HTTP_PROXY": proxyURL, "HTTPS_PROXY": proxyURL, "http_proxy": proxyURL, "https_proxy": proxyURL,
		"NO_PROXY": noProxy, "no_proxy": noProxy,
	}
}
