package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/bot-bottle/bottleq/worker"
)

// lookupFunc resolves a host name to its addresses; net.DefaultResolver's
// LookupNetIP with network "ip" in the worker, a table in tests.
type lookupFunc func(ctx context.Context, host string) ([]netip.Addr, error)

// listener is one address the worker listens on, with the flag (or
// variable) that set it.
type listener struct{ origin, addr string }

// proxyDoor returns the address VMs may reach when a proxy is configured,
// and where it came from: -proxy's host, else -egress-listen's, which must
// then be an IP a VM can reach, not a name or every address. ok is false
// when VMs get no network. c's addresses must be well-formed (parseFlags).
func proxyDoor(c config, origin map[string]string) (door netip.Addr, from string, ok bool, err error) {
	switch {
	case c.proxy != "":
		p, err := worker.ParseProxyAddr(c.proxy)
		if err != nil {
			return door, "", false, fmt.Errorf("%s: %w", origin["proxy"], err)
		}
		return p.Prefix.Addr(), origin["proxy"], true, nil
	case c.egressListen != "":
		host, _, _ := net.SplitHostPort(c.egressListen)
		a, err := netip.ParseAddr(host)
		if err != nil || a.IsUnspecified() {
			return door, "", false, fmt.Errorf("%s %s: VMs need an address to reach; listen on one IP, or say which with -proxy", origin["egress-listen"], c.egressListen)
		}
		return a.Unmap(), origin["egress-listen"], true, nil
	}
	return door, "", false, nil
}

// resolveListen turns -egress-listen's HOST:PORT into IP:PORT when HOST is
// a name (compose gives the proxy a network alias of its own), so that the
// address VMs are told is the one the proxy listens on: the name's first
// IPv4 address, else its first address. An IP is returned as it is.
func resolveListen(ctx context.Context, addr string, lookup lookupFunc) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return addr, nil // checkHostPort and proxyDoor say what is wrong
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return addr, nil
	}
	addrs, err := lookup(ctx, host)
	if err != nil || len(addrs) == 0 {
		return "", fmt.Errorf("VMs need an address to reach, and %s does not resolve", host)
	}
	pick := addrs[0]
	for _, a := range addrs {
		if a.Unmap().Is4() {
			pick = a
			break
		}
	}
	return net.JoinHostPort(pick.Unmap().String(), port), nil
}

// checkDoor refuses a configuration in which a VM could reach one of the
// worker's own listeners through the proxy's address: smolvm's
// --allow-cidr IP/32 opens every port of it, so the proxy needs an address
// with nothing else on it. The bundled proxy may be there, on the port VMs
// are told, and nowhere else of it.
func checkDoor(ctx context.Context, c config, origin map[string]string, lookup lookupFunc) error {
	door, from, ok, err := proxyDoor(c, origin)
	if err != nil || !ok {
		return err
	}
	var own []listener
	if c.redisURL == "" {
		own = append(own, listener{origin["embedded-redis"], c.embeddedRedis})
	}
	if c.metricsAddr != "off" && c.metricsAddr != "" {
		own = append(own, listener{origin["metrics-addr"], c.metricsAddr})
	}
	if c.proxy != "" && c.egressListen != "" {
		// The bundled proxy behind an explicit -proxy: on another port of
		// the door it is a second way in that VMs are not told about.
		p, _ := worker.ParseProxyAddr(c.proxy) // checked by proxyDoor
		_, want, _ := net.SplitHostPort(strings.TrimPrefix(p.URL, "http://"))
		if _, port, _ := net.SplitHostPort(c.egressListen); port != "0" && port != want {
			own = append(own, listener{origin["egress-listen"], c.egressListen})
		}
	}
	for _, l := range own {
		reachable, err := reaches(ctx, l.addr, door, lookup)
		if err != nil {
			return fmt.Errorf("%s %s: %w; cannot tell whether VMs reach it through %s's address %s", l.origin, l.addr, err, from, door)
		}
		if reachable {
			return fmt.Errorf("%s %s is reachable on %s's address %s, every port of which VMs may reach: listen elsewhere (the proxy needs an address with nothing else on it)", l.origin, l.addr, from, door)
		}
	}
	return nil
}

// reaches reports whether a listener on addr (HOST:PORT) accepts
// connections to door: it listens on door itself, or on every address of
// door's family (an empty host and "::" take IPv4 too). A host name counts
// for each address it resolves to.
func reaches(ctx context.Context, addr string, door netip.Addr, lookup lookupFunc) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, err
	}
	if host == "" {
		return true, nil
	}
	addrs := []netip.Addr{}
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = append(addrs, a)
	} else if addrs, err = lookup(ctx, host); err != nil {
		return false, err
	}
	for _, a := range addrs {
		switch a = a.Unmap(); {
		case a == door,
			a == netip.IPv6Unspecified(),
			a == netip.IPv4Unspecified() && door.Is4():
			return true, nil
		}
	}
	return false, nil
}

// checkHostPort checks that addr is HOST:PORT with a numeric port.
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has no port number 0 to 65535", addr)
	}
	return nil
}
