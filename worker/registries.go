package worker

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// DefaultRegistries is Config.Registries's default, in the form of
// [ParseRegistries]: the public registries most images come from. An image
// reference that names no registry, such as "alpine:3", is on docker.io
// (docker.io/library/alpine:3), as Docker and smolvm read it.
const DefaultRegistries = "docker.io,ghcr.io,quay.io"

// AnyRegistry, as an entry of Config.Registries, lets tasks pull images
// from any registry.
const AnyRegistry = "*"

// dockerHub is the registry of a reference that names none.
const dockerHub = "docker.io"

// The grammar of an image reference, after github.com/distribution/reference
// (the one Docker, containerd and OCI clients such as smolvm's share):
//
//	reference := name [ ":" tag ] [ "@" digest ]
//	name      := [ domain "/" ] path-component [ "/" path-component ]*
//	domain    := host [ ":" port ]
var (
	reDomainPart = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
	reHost       = `(?:` + reDomainPart + `(?:\.` + reDomainPart + `)*|\[[0-9a-fA-F:.]+\])`
	reDomain     = reHost + `(?::[0-9]{1,5})?`
	rePathPart   = `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
	reTag        = `[\w][\w.-]{0,127}`
	reDigest     = `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`
	reName       = `(?:` + reDomain + `/)?` + rePathPart + `(?:/` + rePathPart + `)*`

	referenceRE = regexp.MustCompile(`^(` + reName + `)(?::` + reTag + `)?(?:@` + reDigest + `)?$`)
	domainRE    = regexp.MustCompile(`^` + reDomain + `$`)
)

// maxNameLen bounds the name part of a reference, as Docker does.
const maxNameLen = 255

// imageRegistry returns the registry an OCI image reference pulls from, as
// HOST or HOST:PORT in lower case: "ghcr.io" for "ghcr.io/org/agent:1",
// "localhost:5000" for "localhost:5000/agent", and docker.io for a
// reference that names no registry ("alpine:3", "org/agent"). The first
// component of the name is a registry when it holds a '.' or a ':', is
// "localhost", or has upper-case letters; index.docker.io is docker.io. A
// reference that does not follow the grammar is an error.
func imageRegistry(ref string) (string, error) {
	m := referenceRE.FindStringSubmatch(ref)
	if m == nil {
		return "", errors.New("not an image reference of the form [REGISTRY[:PORT]/]NAME[:TAG][@DIGEST]")
	}
	name := m[1]
	if len(name) > maxNameLen {
		return "", fmt.Errorf("its name is %d bytes, more than %d", len(name), maxNameLen)
	}
	first, _, ok := strings.Cut(name, "/")
	if !ok || (!strings.ContainsAny(first, ".:") && first != "localhost" && strings.ToLower(first) == first) {
		return dockerHub, nil
	}
	return normalRegistry(first)
}

// normalRegistry checks one HOST[:PORT] and returns it in lower case, with
// index.docker.io as docker.io.
func normalRegistry(s string) (string, error) {
	if !domainRE.MatchString(s) {
		return "", fmt.Errorf("%q is not a registry HOST or HOST:PORT", s)
	}
	if strings.HasPrefix(s, "[") {
		host := s[1:strings.IndexByte(s, ']')]
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return "", fmt.Errorf("%q is not a registry: [%s] is not an IPv6 address", s, host)
		}
	}
	s = strings.ToLower(s)
	if s == "index.docker.io" {
		s = dockerHub
	}
	return s, nil
}

// ParseRegistries reads a comma-separated list of registries, HOST or
// HOST:PORT each (a port must be named to match), or AnyRegistry alone.
// Names are compared in lower case; index.docker.io is docker.io.
func ParseRegistries(s string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if part == AnyRegistry {
			out = append(out, part)
			continue
		}
		r, err := normalRegistry(part)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	switch {
	case len(out) == 0:
		return nil, fmt.Errorf("%q names no registry (%s allows any)", s, AnyRegistry)
	case len(out) > 1 && slices.Contains(out, AnyRegistry):
		return nil, fmt.Errorf("%q: %s stands alone", s, AnyRegistry)
	}
	return out, nil
}

// imageAllowed checks that image pulls from one of the registries allowed:
// the reason a task's image is refused, or "".
func imageAllowed(image string, allowed []string) string {
	reg, err := imageRegistry(image)
	if err != nil {
		return fmt.Sprintf("%q: %v", image, err)
	}
	if slices.Contains(allowed, AnyRegistry) || slices.Contains(allowed, reg) {
		return ""
	}
	how := ""
	if first, _, _ := strings.Cut(image, "/"); reg == dockerHub && !strings.EqualFold(first, dockerHub) && !strings.EqualFold(first, "index.docker.io") {
		how = " (a reference naming no registry is on docker.io)"
	}
	return fmt.Sprintf("%q is on registry %s%s, which this worker does not pull from; it pulls from %s",
		image, reg, how, strings.Join(allowed, ", "))
}
