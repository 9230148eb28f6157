package worker

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/egress"
)

// Config configures a [Handler]. Zero values have working defaults except
// where a field says it is required.
type Config struct {
	// Smolvm runs smolvm. Required.
	Smolvm Smolvm
	// DataDir holds packs (packs/) and commits (commits/). Required.
	DataDir string
	// Host names this host in results. Default: os.Hostname.
	Host string
	// ProxyURL is the address of the egress proxy as VMs reach it,
	// "http://IP:PORT" (see [ParseProxyAddr]). VMs may then reach that
	// address only, and get HTTP(S)_PROXY pointing at it. Default: none,
	// and VMs get no network at all.
	ProxyURL string
	// AllowUnenforcedEgress lets a ProxyURL be used with a smolvm older than
	// 1.8.0, which ignores --allow-cidr for machines created from a pack,
	// so VMs get unrestricted egress. Default false: refuse.
	AllowUnenforcedEgress bool
	// PackTTL is how long the pack of a tagged (not digest-pinned) image is
	// reused before it is packed again. Zero means the default, 24h;
	// negative: forever.
	PackTTL time.Duration
	// ReadyTimeout bounds the wait for exec to work after start.
	// Default 60s.
	ReadyTimeout time.Duration
	// TeardownTimeout bounds deleting the VM, which runs even when the task
	// was cancelled. Default 2m.
	TeardownTimeout time.Duration
	// Commits finds earlier tasks' commits. Default: this host's data
	// directory only.
	Commits Commits
	// HostOfTask, with the default Commits, names the host of a commit that
	// is not here. Default: none.
	HostOfTask HostOfTask
	// BundledProxy is the egress proxy server this process runs. When set,
	// ProxyURL must be its address as VMs reach it; each task registers its
	// allow_hosts with it and gets credentials of its own, and the task's
	// egress record goes into its result. Default: none, and a task with
	// allow_hosts is refused.
	BundledProxy *egress.Proxy
	// Busy reports whether another live worker process is using a VM of
	// this name: the same task attempt delivered twice (asynq is
	// at-least-once). A leftover VM is deleted only when it is not busy.
	// Default: never busy.
	Busy func(ctx context.Context, vm string) (bool, error)
	// MaxFilesBytes caps the total content of a task's files. A task over
	// it is archived without retry before any smolvm call. Default
	// tasks.DefaultMaxFilesBytes; at most tasks.MaxFilesBytesLimit.
	MaxFilesBytes int64
	// MaxArtifactBytes caps one artifact: a bigger file is deleted and
	// recorded as over the cap. Default DefaultMaxArtifactBytes.
	MaxArtifactBytes int64
	// MaxArtifactsBytes caps the artifacts of one task together: an
	// artifact that would pass it is deleted and recorded as over the cap.
	// Default DefaultMaxArtifactsBytes.
	MaxArtifactsBytes int64
	// Logger gets the handler's lines. Default: none.
	Logger zerolog.Logger
	// Hooks observe the pipeline, for metrics. Default: none.
	Hooks Hooks
}

// Hooks are called by the handler as tasks run. Any may be nil.
type Hooks struct {
	// Phase is called after each phase with its duration and error.
	Phase func(phase string, d time.Duration, err error)
	// Outcome is called once per task attempt with one of the Outcome
	// constants and the phase it ended in.
	Outcome func(outcome, phase string)
	// PackCache is called with whether an image pack was reused.
	PackCache func(hit bool)
	// VMs is called with +1 when a VM is created and -1 when it is deleted.
	VMs func(delta int)
	// DeleteFailed is called when a VM could not be deleted after retries.
	DeleteFailed func(vm string)
}

// Defaults of the artifact caps in [Config].
const (
	DefaultMaxArtifactBytes  = 64 << 20
	DefaultMaxArtifactsBytes = 256 << 20
)
