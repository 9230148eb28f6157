// Package composecheck holds the tests that validate the repository's
// docker-compose.yml and Dockerfile without a Docker engine: the file is
// loaded with the Compose Specification's own Go loader (compose-go), then
// checked for what bottleq relies on (loopback-only ports, a healthy Redis
// before the worker, /dev/kvm, environment variables bottleq reads). Where
// Debian's docker-compose is installed, it validates the file too.
//
// It has no code of its own and must not be imported.
package composecheck
