// Package tasks defines bottleq's one task type, agent:run: its payload, the
// constructor producers call, the validation the worker repeats, and the
// result the worker writes back.
//
// It holds data and rules only. It must not talk to Redis or smolvm, so that
// a producer can import it without pulling in the worker: of bottleq it
// imports only internal/validate, the rules it shares with the smolvm client
// and the egress proxy (enqueue's TestProducerDeps checks it).
package tasks

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/validate"
)

// TypeAgentRun is the asynq task type of an agent run.
const TypeAgentRun = "agent:run"

// PayloadVersion is the payload schema this package writes and the newest
// it reads.
const PayloadVersion = 1

// Defaults and limits of a payload.
const (
	// DefaultTimeout is the agent command's timeout when the payload has none.
	DefaultTimeout = 10 * time.Minute
	// MaxTimeout is the longest agent command timeout accepted.
	MaxTimeout = 24 * time.Hour
	// PipelineOverhead is added to the command's timeout to make the asynq
	// task's own timeout: it covers packing the image, booting the VM,
	// committing and deleting it.
	PipelineOverhead = 20 * time.Minute
	// DefaultMaxRetry is how often a smolvm failure is retried.
	DefaultMaxRetry = 5
	// DefaultRetention is how long asynq keeps a finished task and its
	// result readable.
	DefaultRetention = 7 * 24 * time.Hour
	// DefaultQueue is the queue agent runs go to unless told otherwise.
	DefaultQueue = "default"

	// DefaultMaxFilesBytes caps the total size of a payload's Files (their
	// decoded content and the sizes of their Refs) in NewAgentRun (NewAgentRunWithMaxFilesBytes takes another
	// cap) and, by default, in the worker (its -max-files-bytes).
	DefaultMaxFilesBytes = 1 << 20
	// MaxFilesBytesLimit is the hard limit on the total size of a
	// payload's Files, content and Refs: Decode refuses more whatever a worker's cap says,
	// and no worker may be configured above it.
	MaxFilesBytesLimit = 16 << 20
	// DefaultFileMode is a File's mode when the payload gives none.
	DefaultFileMode = "0644"
	// MaxFiles and MaxArtifacts bound the number of Files and Artifacts.
	MaxFiles     = 256
	MaxArtifacts = 256

	// DefaultTenant is the tenant of a payload that names none.
	DefaultTenant = "default"
	// MaxTenantLen is the longest tenant name, in bytes.
	MaxTenantLen = 63
	// MaxCPUs is the most vCPUs a payload may ask for (smolvm takes a
	// u8). A worker caps it lower with its own limit.
	MaxCPUs = 255
	// MaxMemMiB is the most memory a payload may ask for, in MiB: 1 TiB.
	// A worker caps it lower with its own limit.
	MaxMemMiB = 1 << 20

	maxArgs       = 4096
	maxEnv        = 256
	maxAllowHosts = 256
	maxFieldBytes = 64 << 10  // any single string
	maxPayload    = 256 << 10 // the encoded payload without the files' content
	// maxEncoded bounds the whole encoded payload before it is decoded:
	// the rest plus MaxFilesBytesLimit of content in base64.
	maxEncoded = maxPayload + (MaxFilesBytesLimit+2)/3*4
)

// FromTaskPrefix marks a payload's From as the commit of an earlier task:
// "task:ID".
const FromTaskPrefix = "task:"

// AgentRun is the payload of an agent:run task. Its JSON is the wire format
// producers in any language write; unknown fields are rejected.
type AgentRun struct {
	// Version is the payload schema version; 0 reads as PayloadVersion.
	Version int `json:"version,omitempty"`
	// Tenant names whose task this is: 1 to 63 bytes of lower-case
	// letters, digits and '-', not starting with '-'
	// (^[a-z0-9][a-z0-9-]{0,62}$). Empty means DefaultTenant; read it with
	// TenantName. A task's commit belongs to its tenant.
	Tenant string `json:"tenant,omitempty"`
	// Image is an OCI image reference to pack and boot. Exactly one of
	// Image and From is set.
	Image string `json:"image,omitempty"`
	// From boots an existing pack instead: an absolute path to a
	// .smolmachine file on the worker host, or "task:ID", the commit an
	// earlier task left. "task:ID" resolves only to a commit of the same
	// tenant (TenantName): another tenant's task reads as no commit at all.
	From string `json:"from,omitempty"`
	// Command is the agent's argv; it is never run through a shell.
	Command []string `json:"command"`
	// Env is set for the command. Every value is treated as a secret:
	// bottleq never logs it nor puts it in a result or an error.
	Env map[string]string `json:"env,omitempty"`
	// Workdir is the command's absolute working directory in the VM.
	Workdir string `json:"workdir,omitempty"`
	// CPUs is how many vCPUs the VM gets, 1 to MaxCPUs; 0 means the
	// worker's default. A payload may ask for less than the worker's cap,
	// never more: the worker refuses more.
	CPUs int `json:"cpus,omitempty"`
	// MemMiB is the VM's memory in MiB, 1 to MaxMemMiB; 0 means the
	// worker's default. Like CPUs, it may be below the worker's cap, never
	// above it.
	MemMiB int `json:"mem_mib,omitempty"`
	// Timeout bounds the command, as a Go duration string ("90s") or a
	// number of seconds. Zero means DefaultTimeout.
	Timeout Duration `json:"timeout,omitempty"`
	// Commit packs the VM's end state for later tasks to start from.
	// Unset means true.
	Commit *bool `json:"commit,omitempty"`
	// AllowHosts lists where the agent may connect through the worker's
	// bundled egress proxy: exact hosts ("api.example.com"), sub-domain
	// wildcards ("*.example.com"), each with an optional ":port". Empty
	// means nowhere. A worker without the bundled proxy refuses a task
	// that sets it.
	AllowHosts []string `json:"allow_hosts,omitempty"`
	// Files are written into the VM before the command runs. Their total
	// size, content and Refs, is capped (DefaultMaxFilesBytes unless the worker says
	// otherwise). A directory travels as a tar file the command unpacks.
	Files []File `json:"files,omitempty"`
	// Artifacts are absolute guest paths of regular files copied out of
	// the VM after the command, whether it exited 0 or not. The result
	// lists each one; see Result.Artifacts.
	Artifacts []string `json:"artifacts,omitempty"`
}

// File is one input file of a payload. Its bytes travel either in the
// payload (Content) or in the pool's object store (Ref), never both.
type File struct {
	// Path is where the file goes in the VM: absolute and clean, without
	// ':' or a NUL byte, not "/". Missing parent directories are created.
	Path string `json:"path"`
	// Content is the file's bytes, base64 in JSON. It must be empty when
	// Ref is set.
	Content []byte `json:"content,omitempty"`
	// Ref names the file's bytes in the object store the workers share
	// (see package store) instead of Content, so that a big file does not
	// sit in Redis with the task: package enqueue uploads a file over
	// enqueue.DefaultInlineFileBytes when its Options name a store. The
	// worker downloads it and checks its size and SHA-256 before it copies
	// it in. Its Size counts toward the files' caps as Content's length
	// does.
	Ref *FileRef `json:"ref,omitempty"`
	// Mode is the file's permission bits as an octal string, "0644" (the
	// default when empty) or "0755"; at most "0777".
	Mode string `json:"mode,omitempty"`
}

// InputKeyPrefix starts the store key of every input file: a FileRef's Key
// is InputKeyPrefix + TENANT + "/" + NAME (see InputKey).
const InputKeyPrefix = "inputs/"

// maxInputNameLen bounds the NAME part of an input file's key.
const maxInputNameLen = 128

// InputKey returns the store key of the input file name of tenant:
// "inputs/TENANT/NAME". A FileRef of a payload must name a key of the
// payload's own tenant (TenantName), so that a task cannot read another
// tenant's inputs, nor anything else in the store.
func InputKey(tenant, name string) string { return InputKeyPrefix + tenant + "/" + name }

// FileRef is where a File's bytes wait in the store, and what they are.
type FileRef struct {
	// Key is the object's key in the store, InputKey(TENANT, NAME) of the
	// payload's tenant; NAME is 1 to 128 of A-Z a-z 0-9 '.' '_' '-', not
	// starting with '.'.
	Key string `json:"key"`
	// SHA256 is the lowercase hex SHA-256 of the file's bytes.
	SHA256 string `json:"sha256"`
	// Size is the file's length in bytes.
	Size int64 `json:"size"`
}

// fileSize is the file's length: its content's, or its Ref's Size.
func (f File) fileSize() int64 {
	if f.Ref != nil {
		return f.Ref.Size
	}
	return int64(len(f.Content))
}

// Perm returns the file's permission bits, DefaultFileMode when Mode is
// empty.
func (f File) Perm() (fs.FileMode, error) {
	m := f.Mode
	if m == "" {
		m = DefaultFileMode
	}
	if len(m) < 3 || len(m) > 4 {
		return 0, fmt.Errorf("%q must be 3 or 4 octal digits, such as \"0644\"", f.Mode)
	}
	n, err := strconv.ParseUint(m, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("%q must be 3 or 4 octal digits, such as \"0644\"", f.Mode)
	}
	if n > 0o777 {
		return 0, fmt.Errorf("%q has bits beyond the permission bits 0777", f.Mode)
	}
	return fs.FileMode(n), nil
}

// FilesBytes returns the total size of the payload's files: their
// content, and the sizes their Refs give.
func (p AgentRun) FilesBytes() int64 {
	var n int64
	for _, f := range p.Files {
		n += f.fileSize()
	}
	return n
}

// filesEncodedLen is how much of the encoded payload the files' content
// takes, in base64.
func (p AgentRun) filesEncodedLen() int {
	n := 0
	for _, f := range p.Files {
		n += base64.StdEncoding.EncodedLen(len(f.Content))
	}
	return n
}

// FormatBytes writes a size for people: "512 bytes", "64 KiB", "1.5 MiB",
// with the exact count after a rounded one: "1 MiB (1048577 bytes)".
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d bytes", n)
	}
	v, i := float64(n), -1
	for ; (v >= unit || v <= -unit) && i < 4; i++ {
		v /= unit
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	out := strings.TrimSuffix(s, ".0") + " " + [...]string{"KiB", "MiB", "GiB", "TiB", "PiB"}[i]
	if back, _ := strconv.ParseFloat(s, 64); back*math.Pow(unit, float64(i+1)) != float64(n) {
		out += fmt.Sprintf(" (%d bytes)", n) // rounded: say exactly
	}
	return out
}

// CommitEnabled reports whether the run commits its end state.
func (p AgentRun) CommitEnabled() bool { return p.Commit == nil || *p.Commit }

// CommandTimeout returns the command's timeout with the default applied.
func (p AgentRun) CommandTimeout() time.Duration {
	if p.Timeout <= 0 {
		return DefaultTimeout
	}
	return time.Duration(p.Timeout)
}

// TenantName returns the payload's tenant, DefaultTenant when Tenant is
// empty. It is the one place that default is applied.
func (p AgentRun) TenantName() string {
	if p.Tenant == "" {
		return DefaultTenant
	}
	return p.Tenant
}

// FromTask returns the task ID when From names an earlier task's commit.
// It resolves within the payload's tenant only.
func (p AgentRun) FromTask() (string, bool) {
	return strings.CutPrefix(p.From, FromTaskPrefix)
}

// Bool returns a pointer to b, for AgentRun.Commit.
func Bool(b bool) *bool { return &b }

// ValidationError is a payload that can never run. It names the field and
// never quotes an env value.
type ValidationError struct {
	// Field is the payload field at fault, as in its JSON ("env",
	// "files[0].path"), or "payload" for the payload as a whole.
	Field string
	// Reason says what is wrong with Field, without quoting an env value.
	Reason string
}

// Error returns "Field: Reason".
func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

func invalid(field, format string, a ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, a...)}
}

// Validate checks everything a worker needs before it starts any process.
func (p AgentRun) Validate() error {
	if p.Version < 0 || p.Version > PayloadVersion {
		return invalid("version", "%d is not supported (this build reads up to %d)", p.Version, PayloadVersion)
	}
	if p.Tenant != "" {
		if err := ValidateTenant(p.Tenant); err != nil {
			return err
		}
	}
	switch {
	case p.Image == "" && p.From == "":
		return invalid("image", "one of image and from is required")
	case p.Image != "" && p.From != "":
		return invalid("from", "must not be set together with image")
	case p.Image != "":
		if err := checkImage(p.Image); err != nil {
			return err
		}
	default:
		if err := checkFrom(p.From); err != nil {
			return err
		}
	}
	if len(p.Command) == 0 {
		return invalid("command", "must not be empty")
	}
	if len(p.Command) > maxArgs {
		return invalid("command", "has %d arguments, more than %d", len(p.Command), maxArgs)
	}
	if p.Command[0] == "" {
		return invalid("command", "the program (command[0]) must not be empty")
	}
	for i, a := range p.Command {
		if err := checkText(fmt.Sprintf("command[%d]", i), a); err != nil {
			return err
		}
	}
	if len(p.Env) > maxEnv {
		return invalid("env", "has %d entries, more than %d", len(p.Env), maxEnv)
	}
	for k, v := range p.Env {
		if err := validate.EnvKey(k); err != nil {
			return invalid("env", "%v", err) // never quotes the key: it may be a secret
		}
		if strings.ContainsRune(v, 0) || len(v) > maxFieldBytes {
			return invalid("env", "value of %s must be under %d bytes without NUL bytes", k, maxFieldBytes)
		}
	}
	if p.Workdir != "" {
		if err := checkText("workdir", p.Workdir); err != nil {
			return err
		}
		if !path.IsAbs(p.Workdir) || strings.HasPrefix(p.Workdir, "-") {
			return invalid("workdir", "%q must be an absolute path", p.Workdir)
		}
	}
	if len(p.AllowHosts) > maxAllowHosts {
		return invalid("allow_hosts", "has %d entries, more than %d", len(p.AllowHosts), maxAllowHosts)
	}
	for i, h := range p.AllowHosts {
		if _, err := validate.Host(h); err != nil {
			return invalid(fmt.Sprintf("allow_hosts[%d]", i), "%q %s", h, err)
		}
	}
	if p.CPUs < 0 || p.CPUs > MaxCPUs {
		return invalid("cpus", "%d is out of range: 1 to %d, or 0 for the worker's default", p.CPUs, MaxCPUs)
	}
	if p.MemMiB < 0 || p.MemMiB > MaxMemMiB {
		return invalid("mem_mib", "%d is out of range: 1 to %d MiB (%s), or 0 for the worker's default",
			p.MemMiB, MaxMemMiB, FormatBytes(MaxMemMiB<<20))
	}
	if err := p.checkFiles(); err != nil {
		return err
	}
	if err := p.checkArtifacts(); err != nil {
		return err
	}
	if p.Timeout < 0 {
		return invalid("timeout", "must not be negative")
	}
	if time.Duration(p.Timeout) > MaxTimeout {
		return invalid("timeout", "%s is longer than the maximum %s", time.Duration(p.Timeout), MaxTimeout)
	}
	if p.Timeout > 0 && time.Duration(p.Timeout) < time.Millisecond {
		return invalid("timeout", "%s is shorter than 1ms", time.Duration(p.Timeout))
	}
	return nil
}

func (p AgentRun) checkFiles() error {
	if len(p.Files) > MaxFiles {
		return invalid("files", "has %d entries, more than %d", len(p.Files), MaxFiles)
	}
	seen := make(map[string]int, len(p.Files))
	for i, f := range p.Files {
		field := fmt.Sprintf("files[%d].path", i)
		if err := checkGuestPath(field, f.Path); err != nil {
			return err
		}
		if j, dup := seen[f.Path]; dup {
			return invalid(field, "%q is also files[%d].path", f.Path, j)
		}
		seen[f.Path] = i
		if _, err := f.Perm(); err != nil {
			return invalid(fmt.Sprintf("files[%d].mode", i), "%s", err)
		}
		if f.Ref != nil {
			if err := p.checkRef(i, f); err != nil {
				return err
			}
		}
	}
	if n := p.FilesBytes(); n > MaxFilesBytesLimit {
		return invalid("files", "%s in total, over the hard limit of %s", FormatBytes(n), FormatBytes(MaxFilesBytesLimit))
	}
	return nil
}

// checkRef checks file i's Ref: alone, naming an input of the payload's
// tenant, with a digest and a size within the hard limit.
func (p AgentRun) checkRef(i int, f File) error {
	field := fmt.Sprintf("files[%d].ref", i)
	if len(f.Content) > 0 {
		return invalid(field, "is set together with content: a file has one or the other")
	}
	r := f.Ref
	prefix := InputKey(p.TenantName(), "")
	name, ok := strings.CutPrefix(r.Key, prefix)
	if !ok {
		return invalid(field+".key", "%q must start with %q: a task reads only its own tenant's input files", r.Key, prefix)
	}
	if err := checkInputName(name); err != nil {
		return invalid(field+".key", "%q: %s", r.Key, err)
	}
	if !validSHA256(r.SHA256) {
		return invalid(field+".sha256", "must be 64 lowercase hex digits")
	}
	switch {
	case r.Size < 0:
		return invalid(field+".size", "must not be negative")
	case r.Size > MaxFilesBytesLimit:
		return invalid(field+".size", "%s is over the hard limit of %s for a task's files", FormatBytes(r.Size), FormatBytes(MaxFilesBytesLimit))
	}
	return nil
}

// checkInputName checks the NAME of an input key.
func checkInputName(name string) error {
	if name == "" || len(name) > maxInputNameLen {
		return fmt.Errorf("its name after the tenant must be 1 to %d characters", maxInputNameLen)
	}
	if name[0] == '.' {
		return errors.New("its name must not start with '.'")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' {
			continue
		}
		return errors.New("its name after the tenant may hold only A-Z a-z 0-9 '.' '_' '-'")
	}
	return nil
}

// validSHA256 reports whether s is 64 lowercase hex digits.
func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func (p AgentRun) checkArtifacts() error {
	if len(p.Artifacts) > MaxArtifacts {
		return invalid("artifacts", "has %d entries, more than %d", len(p.Artifacts), MaxArtifacts)
	}
	seen := make(map[string]int, len(p.Artifacts))
	for i, a := range p.Artifacts {
		field := fmt.Sprintf("artifacts[%d]", i)
		if err := checkGuestPath(field, a); err != nil {
			return err
		}
		if j, dup := seen[a]; dup {
			return invalid(field, "%q is also artifacts[%d]", a, j)
		}
		seen[a] = i
	}
	return nil
}

// ValidateTenant checks a tenant name: 1 to MaxTenantLen bytes of
// lower-case ASCII letters, digits and '-', not starting with '-'. A bad
// one is a *ValidationError for the field "tenant". The empty name, which
// a payload reads as DefaultTenant, is refused here: callers that allow it
// check for it first.
func ValidateTenant(name string) error {
	if name == "" {
		return invalid("tenant", "must not be empty")
	}
	if len(name) > MaxTenantLen {
		return invalid("tenant", "is %d bytes, more than %d", len(name), MaxTenantLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 {
			continue
		}
		if c == '-' {
			return invalid("tenant", "%q must not start with '-'", name)
		}
		return invalid("tenant", "%q may hold only lower-case letters a-z, digits and '-'", name)
	}
	return nil
}

// ValidateGuestPath checks a guest path of a File or an artifact: absolute,
// clean, without ':' or a NUL byte, not "/", valid UTF-8. A bad one is a
// *ValidationError for field, such as "files[0].path".
func ValidateGuestPath(field, p string) error { return checkGuestPath(field, p) }

// checkGuestPath applies smolvm's rules for a path smolvm cp can carry.
func checkGuestPath(field, p string) error {
	if err := checkText(field, p); err != nil {
		return err
	}
	if err := validate.GuestPath(p); err != nil {
		return invalid(field, "%s", err)
	}
	return nil
}

func checkText(field, s string) error {
	switch {
	case strings.ContainsRune(s, 0):
		return invalid(field, "must not contain a NUL byte")
	case len(s) > maxFieldBytes:
		return invalid(field, "is %d bytes, more than %d", len(s), maxFieldBytes)
	case !utf8.ValidString(s):
		return invalid(field, "must be valid UTF-8")
	}
	return nil
}

func checkImage(image string) error {
	if err := checkText("image", image); err != nil {
		return err
	}
	switch {
	case strings.HasPrefix(image, "-"):
		return invalid("image", "%q must not start with '-'", image)
	case strings.ContainsAny(image, " \t\r\n"):
		return invalid("image", "%q must not contain white space", image)
	case len(image) > 512:
		return invalid("image", "is %d bytes, more than 512", len(image))
	}
	return nil
}

func checkFrom(from string) error {
	if err := checkText("from", from); err != nil {
		return err
	}
	if id, ok := strings.CutPrefix(from, FromTaskPrefix); ok {
		if id == "" || len(id) > 256 || strings.ContainsAny(id, " \t\r\n") {
			return invalid("from", "%q must name a task ID after %q", from, FromTaskPrefix)
		}
		return nil
	}
	if !path.IsAbs(from) || path.Clean(from) != from || !strings.HasSuffix(from, ".smolmachine") {
		return invalid("from", "%q must be %q or an absolute, clean path to a .smolmachine file", from, FromTaskPrefix+"ID")
	}
	return nil
}

// Decode reads and validates a payload. Any error is a *ValidationError:
// the payload can never run and must not be retried.
func Decode(data []byte) (AgentRun, error) {
	var p AgentRun
	if len(data) > maxEncoded {
		return p, invalid("payload", "is %d bytes, more than %d", len(data), maxEncoded)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		var de *durationError
		if errors.As(err, &de) {
			return AgentRun{}, invalid("timeout", "%s", de.reason)
		}
		return AgentRun{}, invalid("payload", "is not a valid agent:run JSON object: %s", jsonReason(err))
	}
	if dec.More() {
		return AgentRun{}, invalid("payload", "has data after the JSON object")
	}
	if n := len(data) - p.filesEncodedLen(); n > maxPayload {
		return AgentRun{}, invalid("payload", "is %d bytes without its files' content, more than %d", n, maxPayload)
	}
	if err := p.Validate(); err != nil {
		return AgentRun{}, err
	}
	return p, nil
}

// jsonReason keeps a decode error to one line that quotes no value.
func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %s must be %s", te.Field, te.Type)
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

// NewAgentRun validates p and returns the task to enqueue, with defaults
// a producer should not have to think about: the task's asynq timeout covers
// the whole pipeline (the command's timeout plus PipelineOverhead; asynq's
// own default is 30 minutes and a sub-second value silently becomes that
// default), DefaultMaxRetry retries of smolvm failures, DefaultQueue, and
// DefaultRetention so the result stays readable. opts come after the
// defaults and override them. The files' total content is capped at
// DefaultMaxFilesBytes; [NewAgentRunWithMaxFilesBytes] takes another cap.
func NewAgentRun(p AgentRun, opts ...asynq.Option) (*asynq.Task, error) {
	return NewAgentRunWithMaxFilesBytes(p, DefaultMaxFilesBytes, opts...)
}

// NewAgentRunWithMaxFilesBytes is [NewAgentRun] with the payload's files
// capped at maxFilesBytes in total instead of DefaultMaxFilesBytes (zero or
// less keeps that default). Raise it only for workers whose
// -max-files-bytes is as high; no cap lifts MaxFilesBytesLimit.
func NewAgentRunWithMaxFilesBytes(p AgentRun, maxFilesBytes int64, opts ...asynq.Option) (*asynq.Task, error) {
	filesCap := maxFilesBytes
	if filesCap <= 0 {
		filesCap = DefaultMaxFilesBytes
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if n := p.FilesBytes(); n > filesCap {
		return nil, invalid("files", "%s in total, over the cap of %s (tasks.NewAgentRunWithMaxFilesBytes raises it for workers whose -max-files-bytes allows more)",
			FormatBytes(n), FormatBytes(filesCap))
	}
	if p.Version == 0 {
		p.Version = PayloadVersion
	}
	data, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	if n := len(data) - p.filesEncodedLen(); n > maxPayload {
		return nil, invalid("payload", "is %d bytes without its files' content, more than %d", n, maxPayload)
	}
	defaults := []asynq.Option{
		asynq.Timeout(p.CommandTimeout() + PipelineOverhead),
		asynq.MaxRetry(DefaultMaxRetry),
		asynq.Queue(DefaultQueue),
		asynq.Retention(DefaultRetention),
	}
	return asynq.NewTask(TypeAgentRun, data, append(defaults, opts...)...), nil
}
