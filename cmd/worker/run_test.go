package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bottleq/internal/redisurl"
	"github.com/bot-bottle/bottleq/tasks"
	"github.com/bot-bottle/bottleq/worker"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestListenersDefaultToLoopback: every listener the worker opens binds
// 127.0.0.1 unless told otherwise.
func TestListenersDefaultToLoopback(t *testing.T) {
	t.Parallel()
	c, err := parseFlags(nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	for name, addr := range map[string]string{"embedded redis": c.embeddedRedis, "metrics": c.metricsAddr} {
		host, _, err := net.SplitHostPort(addr)
		if err != nil || host != "127.0.0.1" {
			t.Errorf("%s listens on %q by default, want 127.0.0.1", name, addr)
		}
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	c, err := parseFlags([]string{"-concurrency", "8", "-vm-cpus", "3"}, env(map[string]string{
		"BOTTLEQ_CONCURRENCY": "2", "BOTTLEQ_POLL_INTERVAL": "25ms", "REDIS_URL": "redis://127.0.0.1:7000", "BOTTLEQ_QUEUES": "hi=3,lo=1",
		"BOTTLEQ_VM_CPUS": "1", "BOTTLEQ_VM_MEM": "1024",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.concurrency != 8 || c.pollInterval != 25*time.Millisecond || c.redisURL != "redis://127.0.0.1:7000" || c.queues != "hi=3,lo=1" ||
		c.vmCPUs != 3 || c.vmMemMiB != 1024 {
		t.Errorf("config = %+v: flags must beat env, env must fill the rest", c)
	}
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-concurrency", "0"}, nil, "-concurrency"},
		{nil, map[string]string{"BOTTLEQ_SHUTDOWN_TIMEOUT": "soon"}, "BOTTLEQ_SHUTDOWN_TIMEOUT"},
		{[]string{"-queues", "a=0"}, nil, "-queues"},
		{[]string{"-proxy", "http://10.0.0.1"}, nil, "proxy"},
		{[]string{"stray"}, nil, "unexpected argument"},
		{[]string{"-max-files-bytes", "17MiB"}, nil, "-max-files-bytes"},
		{[]string{"-max-files-bytes", "0"}, nil, "-max-files-bytes"},
		{nil, map[string]string{"BOTTLEQ_MAX_ARTIFACT_BYTES": "lots"}, "BOTTLEQ_MAX_ARTIFACT_BYTES"},
		{[]string{"-max-artifacts-bytes", "1TiB"}, nil, "max-artifacts-bytes"},
		{[]string{"-registries", "ghcr.io/org"}, nil, "-registries"},
		{nil, map[string]string{"BOTTLEQ_CP_TIMEOUT": "1"}, "BOTTLEQ_CP_TIMEOUT"},
		{nil, map[string]string{"BOTTLEQ_REGISTRIES": " , "}, "BOTTLEQ_REGISTRIES"},
		{[]string{"-deployment", "prod-eu"}, nil, "-deployment"},
		{nil, map[string]string{"BOTTLEQ_DEPLOYMENT": "Prod"}, "BOTTLEQ_DEPLOYMENT"},
		{[]string{"-redis", "http://127.0.0.1:6379"}, nil, "-redis"},
		{[]string{"-redis-wait", "-1s"}, nil, "-redis-wait"},
		{nil, map[string]string{"BOTTLEQ_REDIS_WAIT": "-1s"}, "BOTTLEQ_REDIS_WAIT"},
		{[]string{"-vm-cpus", "0"}, nil, "-vm-cpus"},
		{[]string{"-vm-cpus", "256"}, nil, "-vm-cpus"},
		{nil, map[string]string{"BOTTLEQ_VM_MEM": "0"}, "-vm-mem"},
		{nil, map[string]string{"BOTTLEQ_VM_MEM": "2GiB"}, "BOTTLEQ_VM_MEM"},
		{nil, map[string]string{"BOTTLEQ_LIVE_OUTPUT_BYTES": "65MiB"}, "BOTTLEQ_LIVE_OUTPUT_BYTES"},
		{[]string{"-live-output-bytes", "-1"}, nil, "-live-output-bytes"},
		{[]string{"-store", "ftp://host/dir"}, nil, "-store: store: scheme"},
		{nil, map[string]string{"BOTTLEQ_STORE": "s3://Bad_Bucket/p"}, "BOTTLEQ_STORE: store: bucket"},
		{[]string{"-store", "s3://AKIA:secret@bucket/p"}, nil, "-store: store: url"},
		{[]string{"-store", "file://relative/dir"}, nil, "-store: store: dir"},
		{[]string{"-retention", "0"}, nil, "-retention"},
		{[]string{"-retention", "7x"}, nil, "-retention"},
		{nil, map[string]string{"BOTTLEQ_RETENTION": "-1d"}, "BOTTLEQ_RETENTION"},
		{[]string{"-cache-max-bytes", "0"}, nil, "-cache-max-bytes"},
		{nil, map[string]string{"BOTTLEQ_STORE": "file://relative/dir"}, "BOTTLEQ_STORE: store: dir"},
	} {
		_, err := parseFlags(tt.args, env(tt.env), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("parseFlags(%q, %v) = %v, want one line naming %s", tt.args, tt.env, err, tt.want)
		}
	}
}

// TestFlagDefaultsAreTheLibrarys: a flag left unset gives the worker
// package's default, so the two cannot drift apart.
func TestFlagDefaultsAreTheLibrarys(t *testing.T) {
	t.Parallel()
	c, err := parseFlags(nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		flag      string
		got, want any
	}{
		{"concurrency", c.concurrency, worker.DefaultConcurrency},
		{"queues", c.queues, tasks.DefaultQueue + "=1"},
		{"poll-interval", c.pollInterval, worker.DefaultPollInterval},
		{"redis-wait", c.redisWait, redisurl.DefaultWait},
		{"shutdown-timeout", c.shutdown, worker.DefaultShutdownTimeout},
		{"ready-timeout", c.readyTimeout, worker.DefaultReadyTimeout},
		{"cp-timeout", c.cpTimeout, worker.DefaultCopyTimeout},
		{"retry-base", c.retryBase, worker.DefaultRetryBase},
		{"retry-max", c.retryMax, worker.DefaultRetryMax},
		{"pack-ttl", c.packTTL, worker.DefaultPackTTL},
		{"reap-interval", c.reapInterval, worker.DefaultReapInterval},
		{"reap-min-age", c.reapMinAge, worker.DefaultReapMinAge},
		{"max-files-bytes", int64(c.maxFiles), int64(tasks.DefaultMaxFilesBytes)},
		{"max-artifact-bytes", int64(c.maxArtifact), int64(worker.DefaultMaxArtifactBytes)},
		{"max-artifacts-bytes", int64(c.maxArtifacts), int64(worker.DefaultMaxArtifactsBytes)},
		{"live-output-bytes", int64(c.liveOutput), int64(worker.DefaultLiveOutputBytes)},
		{"registries", c.registries.String(), worker.DefaultRegistries},
		{"vm-cpus", c.vmCPUs, worker.DefaultVMCPUs},
		{"vm-mem", c.vmMemMiB, worker.DefaultVMMemMiB},
		{"retention", time.Duration(c.retention), worker.DefaultRetention},
		{"cache-max-bytes", int64(c.cacheMax), int64(worker.DefaultCacheMaxBytes)},
		{"store", c.store, ""},
	} {
		if tt.got != tt.want {
			t.Errorf("-%s defaults to %v, want %v", tt.flag, tt.got, tt.want)
		}
	}
}

// TestLiveOutputFlag: -live-output-bytes 0 turns live output off, which
// the worker package reads as a negative cap; any other value is the cap.
func TestLiveOutputFlag(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"0": -1, "64KiB": 64 << 10, "64MiB": 64 << 20} {
		c, err := parseFlags([]string{"-live-output-bytes", in}, env(nil), &bytes.Buffer{})
		if err != nil || liveOutputBytes(c.liveOutput) != want {
			t.Errorf("-live-output-bytes %s = %d, %v; want %d", in, liveOutputBytes(c.liveOutput), err, want)
		}
	}
}

// TestPackTTLFlag: -pack-ttl passes 0 (the default) and negative values
// (forever) to the worker package, which gives them those meanings.
func TestPackTTLFlag(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"0": 0, "-1s": -time.Second, "2h": 2 * time.Hour} {
		c, err := parseFlags([]string{"-pack-ttl", in}, env(nil), &bytes.Buffer{})
		if err != nil || c.packTTL != want {
			t.Errorf("-pack-ttl %s = %v, %v; want %v", in, c.packTTL, err, want)
		}
	}
}

func TestByteSizeFlags(t *testing.T) {
	t.Parallel()
	c, err := parseFlags(nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.maxFiles != 1<<20 || c.maxArtifact != 64<<20 || c.maxArtifacts != 256<<20 {
		t.Errorf("defaults = %d %d %d, want 1 MiB, 64 MiB, 256 MiB", c.maxFiles, c.maxArtifact, c.maxArtifacts)
	}
	c, err = parseFlags([]string{"-max-files-bytes", "4MiB", "-max-artifact-bytes", "1000"}, env(map[string]string{
		"BOTTLEQ_MAX_FILES_BYTES": "2M", "BOTTLEQ_MAX_ARTIFACTS_BYTES": "1G",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.maxFiles != 4<<20 || c.maxArtifact != 1000 || c.maxArtifacts != 1<<30 {
		t.Errorf("sizes = %d %d %d", c.maxFiles, c.maxArtifact, c.maxArtifacts)
	}
	for in, want := range map[string]string{"1048576": "1MiB", "512KiB": "512KiB", "1000": "1000", "3 GiB": "3GiB"} {
		var b byteSize
		if err := b.Set(in); err != nil || b.String() != want {
			t.Errorf("Set(%q) = %v, String %q; want %q", in, err, b.String(), want)
		}
	}
	for _, bad := range []string{"", "-1", "1.5MiB", "1TiB", "MiB", "1 MB", "99999999999G"} {
		var b byteSize
		if err := b.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

// TestFlagError: a worker.ConfigError, however wrapped, is reported under
// the flag that sets its field; one of a field no flag sets is left as is.
func TestFlagError(t *testing.T) {
	t.Parallel()
	var usage bytes.Buffer
	if _, err := parseFlags([]string{"-h"}, env(nil), &usage); err == nil {
		t.Fatal("-h did not stop parsing")
	}
	fields := reflect.TypeFor[worker.Config]()
	for field, flag := range flagOfField {
		if _, ok := fields.FieldByName(field); !ok {
			t.Errorf("flagOfField names %s, which is no worker.Config field", field)
		}
		if !strings.Contains(usage.String(), "  "+flag+" ") {
			t.Errorf("flagOfField maps %s to %s, which -h does not list", field, flag)
		}
		err := fmt.Errorf("wrapped: %w", &worker.ConfigError{Field: field, Err: errors.New("is wrong")})
		if got, want := flagError(err).Error(), flag+": is wrong"; got != want {
			t.Errorf("flagError(%s) = %q, want %q", field, got, want)
		}
	}
	unmapped := &worker.ConfigError{Field: "Smolvm", Err: errors.New("required")}
	if got := flagError(unmapped); got != error(unmapped) {
		t.Errorf("flagError(Smolvm) = %v, want it unchanged", got)
	}
}

// TestFromDirFlag: -from-dir repeats, each value may list several
// directories, and BOTTLEQ_FROM_DIRS lists them with the OS's separator;
// an empty name is refused; none is the default.
func TestFromDirFlag(t *testing.T) {
	t.Parallel()
	sep := string(os.PathListSeparator)
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{nil, nil, nil},
		{[]string{"-from-dir", "/a", "-from-dir", "/b" + sep + "/c"}, nil, []string{"/a", "/b", "/c"}},
		{nil, map[string]string{"BOTTLEQ_FROM_DIRS": "/x" + sep + "/y"}, []string{"/x", "/y"}},
		{[]string{"-from-dir", "/a"}, map[string]string{"BOTTLEQ_FROM_DIRS": "/x"}, []string{"/a"}},
	} {
		c, err := parseFlags(tt.args, env(tt.env), &bytes.Buffer{})
		if err != nil || !slices.Equal(c.fromDirs, tt.want) {
			t.Errorf("parseFlags(%q, %v): from dirs %q, %v; want %q", tt.args, tt.env, c.fromDirs, err, tt.want)
		}
	}
	for _, bad := range [][]string{{"-from-dir", ""}, {"-from-dir", "/a" + sep + sep + "/b"}} {
		if _, err := parseFlags(bad, env(nil), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "-from-dir") {
			t.Errorf("parseFlags(%q) = %v, want an error naming -from-dir", bad, err)
		}
	}
}

// TestRetentionFlag: -retention reads whole days or a Go duration, and
// writes whole days back as days, which -h shows for its default.
func TestRetentionFlag(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"7d": 7 * 24 * time.Hour, "1d": 24 * time.Hour, "36h": 36 * time.Hour, "90m": 90 * time.Minute} {
		c, err := parseFlags([]string{"-retention", in}, env(nil), &bytes.Buffer{})
		if err != nil || time.Duration(c.retention) != want {
			t.Errorf("-retention %s = %v, %v; want %v", in, time.Duration(c.retention), err, want)
		}
	}
	c, err := parseFlags(nil, env(map[string]string{"BOTTLEQ_RETENTION": "30d"}), &bytes.Buffer{})
	if err != nil || c.retention.String() != "30d" {
		t.Errorf("BOTTLEQ_RETENTION=30d = %v, %v", c.retention, err)
	}
	if got := days(36 * time.Hour).String(); got != "36h0m0s" {
		t.Errorf("36h writes as %q", got)
	}
	_, help := usage(t)
	if !strings.HasSuffix(help["retention"], `(default "7d")`) {
		t.Errorf("-retention's help = %q, want its default in days", help["retention"])
	}
}

// TestStoreURLDefault: with no -store, the worker's store is the file store
// in its data directory, by absolute path.
func TestStoreURLDefault(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-data-dir", "/srv/bq"}, "file:///srv/bq/store"},
		{[]string{"-data-dir", "/srv/bq", "-store", "s3://bucket/pool?region=eu-west-1"}, "s3://bucket/pool?region=eu-west-1"},
	} {
		c, err := parseFlags(tt.args, env(nil), &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := storeURL(c); err != nil || got != tt.want {
			t.Errorf("%q: store %q, %v; want %q", tt.args, got, err, tt.want)
		}
	}
}
