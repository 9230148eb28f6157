// Package composecheck holds the tests that validate the repository's
// docker-compose.yml and Dockerfile without a Docker engine. The compose
// file is read strictly, with Compose's variable interpolation and short
// forms, by a small reader built on the YAML module the Prometheus client
// already brings in (load_test.go), then checked for what bottleq relies on
// (loopback-only ports, a healthy Redis before the workers, /dev/kvm, named
// volumes, a read-only dashboard, environment variables bottleq reads, no
// bind mount that Docker would create as a directory, each worker's egress
// proxy on an address with nothing else on it, metrics a scraper can
// reach, a pool of two workers and the API on one store whose keys come
// from variables compose requires, other images pinned). The
// same goes for .env.example against the variables the file reads
// (envfile_test.go). Where Debian's docker-compose is installed (CI
// installs it), it validates the file against the Compose schema, and the
// reader must resolve the file exactly as docker-compose does.
//
// It has no code of its own and must not be imported.
package composecheck
