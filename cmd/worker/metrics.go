package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
)

// defaultMetricsAddr is -metrics-addr's default: the first free port of
// ten, so that up to ten workers share a host with no flag each, on ports
// a static Prometheus scrape config can list.
const defaultMetricsAddr = "127.0.0.1:9400-9409"

// metricsAddr is -metrics-addr read: a host and the ports to try, in
// order. A single port is a range of one.
type metricsAddr struct {
	host        string
	first, last int
}

// parseMetricsAddr reads HOST:PORT or HOST:FIRST-LAST.
func parseMetricsAddr(s string) (metricsAddr, error) {
	host, ports, err := net.SplitHostPort(s)
	if err != nil {
		return metricsAddr{}, fmt.Errorf("%q is not HOST:PORT or HOST:FIRST-LAST", s)
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	a := metricsAddr{host: host}
	a.first, err = strconv.Atoi(lo)
	a.last = a.first
	if err == nil && isRange {
		a.last, err = strconv.Atoi(hi)
	}
	switch {
	case err != nil || a.first < 0 || a.last > 65535:
		return metricsAddr{}, fmt.Errorf("%q has no port number 0 to 65535, or range FIRST-LAST of them", s)
	case isRange && (a.first < 1 || a.last < a.first):
		return metricsAddr{}, fmt.Errorf("%q: a range FIRST-LAST needs 1 <= FIRST <= LAST", s)
	}
	return a, nil
}

// String returns a as parseMetricsAddr reads it.
func (a metricsAddr) String() string {
	ports := strconv.Itoa(a.first)
	if a.last != a.first {
		ports += "-" + strconv.Itoa(a.last)
	}
	return net.JoinHostPort(a.host, ports)
}

// listen listens on the first port of a's range that is free. Only a port
// in use moves on to the next: any other failure is a's.
func (a metricsAddr) listen() (net.Listener, error) {
	for port := a.first; ; port++ {
		ln, err := net.Listen("tcp", net.JoinHostPort(a.host, strconv.Itoa(port)))
		switch {
		case err == nil:
			return ln, nil
		case !errors.Is(err, syscall.EADDRINUSE):
			return nil, err
		case port == a.last && a.first != a.last:
			return nil, fmt.Errorf("every port of %s is in use (by other workers?): give this worker a range of its own, or off: %w", a, err)
		case port == a.last:
			return nil, err
		}
	}
}

// listenMetrics listens on -metrics-addr's first free port.
func listenMetrics(addr string) (net.Listener, error) {
	a, err := parseMetricsAddr(addr)
	if err != nil {
		return nil, err
	}
	return a.listen()
}

// checkMetricsAddr checks -metrics-addr's form.
func checkMetricsAddr(addr string) error {
	_, err := parseMetricsAddr(addr)
	return err
}
