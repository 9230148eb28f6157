package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/egress"
	"github.com/bot-bottle/bottleq/store"
)

// Config configures a [Handler]. Zero values have working defaults except
// where a field says it is required.
type Config struct {
	// Smolvm runs smolvm. Required.
	Smolvm Smolvm
	// DataDir holds the cache of what the worker takes from the store
	// (cache/: image packs and commits), artifacts (artifacts/TENANT/KEY/),
	// task input files while they are copied in (tmp/) and, by default,
	// the store itself (store/), private to this user. Required.
	DataDir string
	// Store keeps commits, artifacts and image packs where every worker of
	// the pool finds them (see package store): the keys are commits/TENANT/
	// KEY.smolmachine with KEY.owner.json, artifacts/TENANT/KEY/RUN/N-NAME,
	// packs/pinned/IMAGEKEY.smolmachine and packs/tagged/IMAGEKEY/
	// GENERATION.smolmachine. A task's whole output goes there too
	// (outputs/TENANT/…; its result keeps the tail and the keys,
	// tasks.Result.StdoutKey), and a payload's files by reference
	// (tasks.FileRef, inputs/TENANT/…) come from there. Default: a file
	// store in DATA/store, this host's alone.
	Store store.Store
	// Retention is how long commits and artifacts stay in the store; the
	// sweep [Serve] runs deletes older ones (see [Handler.Retain]). Zero:
	// DefaultRetention; negative is refused.
	Retention time.Duration
	// CacheMaxBytes caps the local cache (DATA/cache): past it, the least
	// recently used files are evicted, never one a running task holds.
	// Zero: DefaultCacheMaxBytes; negative is refused.
	CacheMaxBytes int64
	// PackLock is the lock the workers of a pool take to pack an image, so
	// that one of them packs it and the others download its pack from the
	// Store (see [RedisPoolLock]). Default: a lock among the processes of
	// this host sharing DataDir only.
	PackLock PoolLock
	// FromDirs are the directories an absolute payload "from" path may
	// name a pack in, after its symlinks are resolved. None may be, hold
	// or lie inside DataDir, where agents' artifacts land. Default: none,
	// and every absolute "from" path is refused.
	FromDirs []string
	// Host names this host in results. Default: os.Hostname.
	Host string
	// Deployment goes into the name of every VM (see [VMName]), so that the
	// [Reaper] of another deployment sharing this smolvm leaves them alone.
	// The workers that share a Redis database share it, and their reaper
	// must have it too. It must pass [ValidateDeployment]. Default:
	// DefaultDeployment.
	Deployment string
	// ProxyURL is the address of the egress proxy as VMs reach it,
	// "http://IP:PORT" (see [ParseProxyAddr]). VMs may then reach that
	// address only, and get HTTP(S)_PROXY pointing at it; where smolvm
	// lets the DNS server be set, an IPv4 proxy's address is it too (see
	// docs/smolvm.md, Network policy). The address must serve nothing
	// else: smolvm opens every port of it. Default: none, and VMs get no
	// network: none at all when their pack has network off, and only
	// loopback (--outbound-localhost-only) when it has network on, which
	// smolvm older than 1.8.0 cannot give: such a task is refused.
	ProxyURL string
	// AllowUnenforcedEgress lets a ProxyURL be used with a smolvm older than
	// 1.8.0, which ignores --allow-cidr for machines created from a pack,
	// so VMs get unrestricted egress. Default false: refuse.
	AllowUnenforcedEgress bool
	// VMCPUs is the most vCPUs a task's VM may have, and what it gets when
	// its payload asks for none (cpus 0); a payload asking for more is
	// refused before any smolvm call. 1 to smolvm.MaxCPUs; zero:
	// DefaultVMCPUs. smolvm's own default (smolvm.DefaultCPUs) cannot
	// override a pack's manifest: a task asking for it from a pack that
	// says more is refused after create.
	VMCPUs int
	// VMMemMiB is the most memory a task's VM may have, in MiB, and what
	// it gets when its payload asks for none (mem_mib 0), with VMCPUs's
	// rules. 1 to smolvm.MaxMemoryMiB; zero: DefaultVMMemMiB.
	VMMemMiB int
	// PackTTL is how long the pack of a tagged (not digest-pinned) image is
	// reused before it is packed again. Zero: DefaultPackTTL; negative, such
	// as PackTTLForever: reused forever, like a digest-pinned image's.
	PackTTL time.Duration
	// ReadyTimeout bounds the wait for exec to work after start. Zero or
	// negative: DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// TeardownTimeout bounds deleting the VM, which runs even when the task
	// was cancelled. Zero or negative: DefaultTeardownTimeout.
	TeardownTimeout time.Duration
	// HostOfTask tells a task of the same tenant what became of a commit
	// that is not in the store: why there is none. Default: none.
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
	// it is archived without retry before any smolvm call. Zero:
	// tasks.DefaultMaxFilesBytes; negative or over tasks.MaxFilesBytesLimit
	// is refused.
	MaxFilesBytes int64
	// MaxArtifactBytes caps one artifact: a bigger file is deleted and
	// recorded as over the cap. Zero: DefaultMaxArtifactBytes; negative is
	// refused.
	MaxArtifactBytes int64
	// MaxArtifactsBytes caps the artifacts of one task together: an
	// artifact that would pass it is deleted and recorded as over the cap.
	// Zero: DefaultMaxArtifactsBytes; negative is refused.
	MaxArtifactsBytes int64
	// Registries are the registries a task's image may come from, as
	// [ParseRegistries] returns them: HOST or HOST:PORT, or AnyRegistry.
	// `pack create --image` pulls with the network of smolvm's host, so an
	// image elsewhere is refused as bad input before any smolvm call.
	// Empty: DefaultRegistries.
	Registries []string
	// CopyTimeout bounds each `machine cp`, in and out (a FIFO named as an
	// artifact would hang it). An artifact not copied in time is recorded
	// and the task goes on; an input file not copied in time fails the
	// attempt. Zero or negative: DefaultCopyTimeout.
	CopyTimeout time.Duration
	// OutputInResult keeps a task's output in its result as without a
	// Store: the head and tail of each stream, 32 KiB each, nothing in the
	// store. For producers that read results but cannot reach the store;
	// it costs Redis that much per task for the task's retention.
	OutputInResult bool
	// Logger gets the handler's lines. Zero: no lines.
	Logger zerolog.Logger
	// Hooks observe the pipeline, for metrics. Default: none.
	Hooks Hooks
	// Warm keeps started VMs of some images waiting for their tasks (see
	// [WarmPool]). Default: none.
	Warm WarmConfig
}

// ConfigError is a [Config] that [NewHandler] refuses: the field at fault
// and what is wrong with it. A program that fills Config from its own flags
// can name the flag instead with Field.
type ConfigError struct {
	// Field is the Config field at fault, such as "ProxyURL".
	Field string
	// Err says what is wrong with it.
	Err error
}

// Error returns "worker: Config.FIELD: what is wrong".
func (e *ConfigError) Error() string { return "worker: Config." + e.Field + ": " + e.Err.Error() }

// Unwrap returns Err.
func (e *ConfigError) Unwrap() error { return e.Err }

func configErr(field, format string, a ...any) error {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, a...)}
}

// Hooks are called by the handler as tasks run. Any may be nil.
type Hooks struct {
	// Phase is called after each phase with its duration and error.
	Phase func(phase string, d time.Duration, err error)
	// Attempt is called once per task attempt with how it ended; on the
	// task's last attempt, its Final is set.
	Attempt func(Attempt)
	// PackCache is called with whether an image pack was reused: from
	// this host's cache or the store, rather than packed here.
	PackCache func(hit bool)
	// VMs is called with +1 when a VM is created and -1 when it is deleted.
	VMs func(delta int)
	// DeleteFailed is called when a VM could not be deleted after retries.
	DeleteFailed func(vm string)
}

// Defaults of [Config], [ServerConfig] and [Reaper]: a field left zero gets
// its constant, and cmd/worker's flags default to the same constants.
const (
	// DefaultPackTTL is Config.PackTTL's default.
	DefaultPackTTL = 24 * time.Hour
	// PackTTLForever, or any negative Config.PackTTL, reuses a tagged
	// image's pack forever. It is not a default.
	PackTTLForever time.Duration = -1
	// DefaultVMCPUs is Config.VMCPUs's default.
	DefaultVMCPUs = 2
	// DefaultVMMemMiB is Config.VMMemMiB's default: 2 GiB.
	DefaultVMMemMiB = 2048
	// DefaultReadyTimeout is Config.ReadyTimeout's default.
	DefaultReadyTimeout = 60 * time.Second
	// DefaultTeardownTimeout is Config.TeardownTimeout's default.
	DefaultTeardownTimeout = 2 * time.Minute
	// DefaultCopyTimeout is Config.CopyTimeout's default.
	DefaultCopyTimeout = 3 * time.Minute
	// DefaultMaxArtifactBytes is Config.MaxArtifactBytes's default.
	DefaultMaxArtifactBytes = 64 << 20
	// DefaultMaxArtifactsBytes is Config.MaxArtifactsBytes's default.
	DefaultMaxArtifactsBytes = 256 << 20
	// DefaultRetention is Config.Retention's default: 7 days.
	DefaultRetention = 7 * 24 * time.Hour
	// DefaultCacheMaxBytes is Config.CacheMaxBytes's default: 20 GiB.
	DefaultCacheMaxBytes = 20 << 30

	// DefaultConcurrency is ServerConfig.Concurrency's default.
	DefaultConcurrency = 4
	// DefaultShutdownTimeout is ServerConfig.ShutdownTimeout's default.
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultPollInterval is ServerConfig.PollInterval's default.
	DefaultPollInterval = 100 * time.Millisecond
	// DefaultRetryBase is ServerConfig.RetryBase's default.
	DefaultRetryBase = 2 * time.Second
	// DefaultRetryMax is ServerConfig.RetryMax's default.
	DefaultRetryMax = 5 * time.Minute

	// DefaultReapInterval is Reaper.Interval's default.
	DefaultReapInterval = time.Minute
	// DefaultReapMinAge is Reaper.MinAge's default.
	DefaultReapMinAge = 30 * time.Second
	// DefaultReapConfirm is Reaper.Confirm's default.
	DefaultReapConfirm = 15 * time.Second
)
