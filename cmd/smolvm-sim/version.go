package main

import (
	"fmt"
	"strconv"
	"strings"
)

// semver is a smolvm release version.
type semver [3]int

func parseSemver(s string) (semver, error) {
	var v semver
	parts := strings.Split(strings.TrimPrefix(s, "v"), ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("%q is not X.Y.Z", s)
	}
	for i, part := range parts {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return v, fmt.Errorf("%q is not X.Y.Z", s)
		}
		v[i] = n
	}
	return v, nil
}

func (v semver) String() string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

func (v semver) atLeast(major, minor, patch int) bool {
	o := semver{major, minor, patch}
	for i := range v {
		if v[i] != o[i] {
			return v[i] > o[i]
		}
	}
	return true
}
