package tasks

import (
	"time"
)

// Phases of the pipeline, in order, as they appear in a Result.
const (
	PhasePack   = "pack"
	PhaseCreate = "create"
	PhaseStart  = "start"
	PhaseReady  = "ready"
	// PhaseFiles copies the payload's files in; only tasks with files
	// have it.
	PhaseFiles = "files"
	PhaseExec  = "exec"
	// PhaseArtifacts copies the payload's artifacts out; only tasks with
	// artifacts have it.
	PhaseArtifacts = "artifacts"
	PhaseStop      = "stop"
	PhaseCommit    = "commit"
	PhaseDelete    = "delete"
)

// Result states.
const (
	// StateRunning marks a progress report written while the task runs.
	StateRunning = "running"
	// StateDone marks the final result: the command ran to an exit code.
	StateDone = "done"
	// StateCancelled marks the final result of a task a user cancelled
	// (enqueue cancel, the dashboard's cancel): it was not retried, its VM
	// was deleted, and Error says who cancelled it. The task itself is
	// archived. A worker's shutdown is no cancel: it puts the task back
	// in its queue.
	StateCancelled = "cancelled"
)

// Result is what the worker writes with asynq's ResultWriter, as JSON: a
// progress report at each phase, then the final result. A command that
// exits non-zero still completes the task; its exit_code says how it went.
type Result struct {
	// State is StateRunning while the task runs, StateDone at the end, or
	// StateCancelled when a user cancelled it.
	State string `json:"state"`
	// Phase is the phase in progress (running) or the last one (done).
	Phase string `json:"phase"`
	// ExitCode is the agent command's exit code; 124 when it timed out.
	ExitCode int `json:"exit_code"`
	// TimedOut is true when the command's timeout killed it.
	TimedOut bool `json:"timed_out,omitempty"`
	// Stdout and Stderr are the command's output as the result keeps it:
	// the head and tail of each stream, or, from a worker with a store,
	// the last bytes of each (at most OutputTailBytes as JSON) while the
	// whole stream is in the store under StdoutKey and StderrKey.
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	// StdoutOmitted and StderrOmitted count the bytes of each stream that
	// Stdout and Stderr leave out: cut from the middle, or, with a key,
	// everything before the tail. Where bytes were cut, a marker
	// ("[… N bytes omitted …]") stands in their place.
	StdoutOmitted int64 `json:"stdout_omitted,omitempty"`
	StderrOmitted int64 `json:"stderr_omitted,omitempty"`
	// StdoutKey and StderrKey name each whole stream in the worker's store
	// (see package store): "outputs/TENANT/TASK/ATTEMPT-RANDOM/stdout" and
	// ".../stderr". A stream that fits in its tail has no key; neither has
	// any stream of a worker with -output-in-result. A stream over the worker's
	// cap for a stored stream (MaxStoredOutputBytes) is stored up to
	// the cap, its tail here still the stream's true end. The store's
	// retention deletes them, with the task's commit and artifacts.
	StdoutKey string `json:"stdout_key,omitempty"`
	StderrKey string `json:"stderr_key,omitempty"`
	// Commit is the path of the committed .smolmachine in Host's cache,
	// if any. Later tasks start from it, on any host of the pool, with
	// from "task:<this task's ID>", which finds it by CommitKey.
	Commit string `json:"commit,omitempty"`
	// CommitKey is the commit's key in the worker's store (see package
	// store), where any host of the pool finds it; empty without a commit.
	CommitKey string `json:"commit_key,omitempty"`
	// CommitExpires is when the store's retention deletes the commit;
	// a from "task:ID" after it fails.
	CommitExpires *time.Time `json:"commit_expires,omitempty"`
	// Host is the worker host that ran the task.
	Host string `json:"host"`
	// Tenant is the tenant the task ran for (the payload's TenantName),
	// whose later tasks alone may start from its commit. Results written
	// before tenants existed have none.
	Tenant string `json:"tenant,omitempty"`
	// VM is the machine's name.
	VM string `json:"vm"`
	// SmolvmVersion is the smolvm release that ran it.
	SmolvmVersion string `json:"smolvm_version"`
	// Attempt counts deliveries of the task, from 1.
	Attempt int `json:"attempt"`
	// PackCached is true when the image's pack was reused.
	PackCached bool `json:"pack_cached,omitempty"`
	// PackSource says where the VM's pack came from: PackSourceCache,
	// PackSourceStore or PackSourcePacked for an image; PackSourceCommit
	// for from "task:ID"; PackSourcePath for an absolute from path.
	PackSource string `json:"pack_source,omitempty"`
	// Warm is true when the task ran in a VM of the worker's warm pool:
	// created and started before the task came, from the same pack and
	// with the same options as its own VM would have had, and used by
	// this task alone.
	Warm bool `json:"warm,omitempty"`
	// SkippedPhases lists the phases a warm VM spared the task (create,
	// start and ready); empty on the cold path.
	SkippedPhases []string `json:"skipped_phases,omitempty"`
	// Phases lists the finished phases with their durations.
	Phases []PhaseTime `json:"phases"`
	// Egress records where the agent connected, or tried to, through the
	// bundled egress proxy: each host with counts and bytes, allowed or
	// refused with the reason.
	Egress *EgressRecord `json:"egress,omitempty"`
	// Artifacts lists the payload's artifacts in its order, each copied to
	// Host or with the reason it was not.
	Artifacts []Artifact `json:"artifacts,omitempty"`
	// Error is the failure that will end this attempt, on a progress
	// report written just before the handler returns it; on a
	// StateCancelled result, who cancelled the task ("cancelled by enqueue
	// cancel").
	Error string `json:"error,omitempty"`
}

// OutputKeyPrefix starts the store key of every stored output stream (see
// Result.StdoutKey). The store's retention sweeps it as it does commits and
// artifacts.
const OutputKeyPrefix = "outputs/"

// OutputTailBytes is the most a result keeps of each output stream, as
// JSON (escapes included), when the worker stores the whole streams: the
// stream's last bytes, so that the result of a loud agent stays small in
// Redis. See Result.StdoutKey.
const OutputTailBytes = 512

// MaxStoredOutputBytes caps each output stream a worker stores: past it,
// the stored object ends and the rest of the stream is only counted
// (StdoutOmitted still counts it, and the result's tail is the stream's
// true end).
const MaxStoredOutputBytes = 256 << 20

// Values of Result.PackSource.
const (
	// PackSourceCache: the pack was already in this host's cache.
	PackSourceCache = "cache"
	// PackSourceStore: another host packed the image; this one
	// downloaded the pack from the store.
	PackSourceStore = "store"
	// PackSourcePacked: this host packed the image and uploaded the pack.
	PackSourcePacked = "packed"
	// PackSourceCommit: the VM started from an earlier task's commit.
	PackSourceCommit = "commit"
	// PackSourcePath: the VM started from a pack file the payload named.
	PackSourcePath = "path"
)

// ArtifactMissing is Artifact.Error for a guest file that was not there.
const ArtifactMissing = "missing"

// Artifact is one file copied out of the VM after the command.
type Artifact struct {
	// Path is the guest path the payload named.
	Path string `json:"path"`
	// Host is the worker host whose data directory holds HostPath.
	Host string `json:"host,omitempty"`
	// HostPath is where the file is on Host; empty when Error is set.
	HostPath string `json:"host_path,omitempty"`
	// Key is the file's key in the worker's store, where a producer on
	// any machine fetches it (enqueue.FetchArtifact); empty when Error is
	// set.
	Key string `json:"key,omitempty"`
	// Size is the file's size in bytes (also set for a file over a cap).
	Size int64 `json:"size"`
	// SHA256 is the hex SHA-256 digest of the file's content.
	SHA256 string `json:"sha256,omitempty"`
	// Error says why the file was not kept: ArtifactMissing, "over the
	// cap …", or smolvm's message.
	Error string `json:"error,omitempty"`
}

// MaxEgressEntries caps an EgressRecord's allowed entries, and separately
// its refused entries; attempts beyond it are only counted in
// EgressRecord.Truncated.
const MaxEgressEntries = 256

// MaxEgressRecordBytes caps an EgressRecord's JSON encoding; refused
// entries are dropped first to stay within it, and counted in Truncated.
const MaxEgressRecordBytes = 16 << 10

// EgressRecord is what a task reached, and tried to reach, through the
// worker's bundled egress proxy. As JSON it is at most
// MaxEgressRecordBytes long.
type EgressRecord struct {
	// Entries has one entry per host:port and outcome, sorted by host,
	// then port, allowed first.
	Entries []EgressEntry `json:"entries"`
	// Truncated counts the attempts (tunnels, requests and refusals) of
	// entries left out of Entries: "and N more".
	Truncated int `json:"truncated,omitempty"`
	// Invalid counts requests refused because their host was neither an
	// IP address nor a valid host name (at most 253 characters); the
	// names are not kept.
	Invalid int `json:"invalid,omitempty"`
}

// EgressEntry is a task's traffic to one host:port with one outcome.
type EgressEntry struct {
	// Host is the name or IP address the task asked for, in lower case.
	Host string `json:"host"`
	// Port is the port the task asked for.
	Port int `json:"port"`
	// Allowed is true for connections the proxy carried (some may then
	// have failed to connect) and false for refusals.
	Allowed bool `json:"allowed"`
	// Reason says why the last refusal was made; empty when Allowed.
	Reason string `json:"reason,omitempty"`
	// Count is the number of CONNECT tunnels and plain HTTP requests.
	Count int `json:"count"`
	// BytesUp and BytesDown are the bytes sent to and received from the
	// host, as on the wire (TLS and HTTP framing included).
	BytesUp   int64 `json:"bytes_up"`
	BytesDown int64 `json:"bytes_down"`
}

// PhaseTime is one finished phase.
type PhaseTime struct {
	// Name is the phase, one of the Phase constants.
	Name string `json:"name"`
	// Seconds is how long the phase took.
	Seconds float64 `json:"seconds"`
}

// Add records a finished phase.
func (r *Result) Add(name string, d time.Duration) {
	r.Phases = append(r.Phases, PhaseTime{Name: name, Seconds: d.Seconds()})
}
