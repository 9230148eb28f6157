package smolvm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os/exec"
	"path"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Config configures a [Client]. Every zero value has a working default.
type Config struct {
	// Bin is the smolvm binary: a path, or a name looked up on PATH.
	// Default "smolvm".
	Bin string
	// Env is added to the worker's environment for every smolvm process,
	// such as SMOLVM_DATA_DIR=/srv/smolvm. Default: the environment as is.
	Env []string
	// KillGrace is how long a cancelled smolvm process gets between SIGTERM
	// and SIGKILL. Default 10s.
	KillGrace time.Duration
	// Logger receives one debug line per smolvm call (op, machine, exit
	// code, duration; never argv or env). A logger in the call's context
	// (zerolog.Ctx) takes its place for that call. Default: no logging.
	Logger *zerolog.Logger
	// Observe, if set, is called after every smolvm call, from the calling
	// goroutine. Metrics and benchmarks use it.
	Observe func(Call)
}

// Call describes one finished smolvm invocation, for [Config.Observe].
type Call struct {
	Op       string        // "machine start", "pack create", …
	Duration time.Duration // how long the process ran
	Err      error         // nil, or the *Error the call returned
}

// Client runs smolvm. It is safe for concurrent use.
type Client struct {
	bin     string
	version Version
	log     zerolog.Logger
	observe func(Call)
	run     runFunc
}

// New returns a client for the smolvm binary cfg names, after reading its
// version with `smolvm --version`. A missing binary is an error matching
// [ErrNotInstalled].
func New(ctx context.Context, cfg Config) (*Client, error) {
	bin := cfg.Bin
	if bin == "" {
		bin = "smolvm"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, &Error{Op: "--version", ExitCode: -1, Err: fmt.Errorf("%w: %w", ErrNotInstalled, err)}
	}
	grace := cfg.KillGrace
	if grace <= 0 {
		grace = defaultKillGrace
	}
	c := &Client{
		bin:     path,
		log:     zerolog.Nop(),
		observe: cfg.Observe,
		run:     processRunner(path, cfg.Env, grace),
	}
	if cfg.Logger != nil {
		c.log = *cfg.Logger
	}
	p, err := c.call(ctx, "--version", "", []string{"--version"})
	if err != nil {
		return nil, err
	}
	if c.version, err = parseVersion(string(p.stdout)); err != nil {
		return nil, &Error{Op: "--version", ExitCode: p.exitCode, Message: err.Error()}
	}
	return c, nil
}

// Bin returns the resolved path of the smolvm binary.
func (c *Client) Bin() string { return c.bin }

// Version returns the smolvm release the client speaks to.
func (c *Client) Version() Version { return c.version }

// Pack names the two files `pack create -o OUT` writes.
type Pack struct {
	// Stub is OUT, a self-contained executable.
	Stub string
	// Machine is OUT.smolmachine, the file `machine create --from` takes.
	Machine string
}

// PackImage runs `pack create --image IMAGE -o OUT`. It pulls and packs an
// OCI image, so it can take minutes and needs smolvm's network access.
func (c *Client) PackImage(ctx context.Context, image, out string) (Pack, error) {
	if err := checkArg("image", image); err != nil {
		return Pack{}, err
	}
	if err := c.checkOut(out); err != nil {
		return Pack{}, err
	}
	_, err := c.call(ctx, "pack create", "", packImageArgv(image, out))
	return packOf(out), err
}

// PackFromVM runs `pack create --from-vm NAME -o OUT`, committing a stopped
// machine's state to a new pack.
func (c *Client) PackFromVM(ctx context.Context, name, out string) (Pack, error) {
	if err := ValidateName(name); err != nil {
		return Pack{}, err
	}
	if err := c.checkOut(out); err != nil {
		return Pack{}, err
	}
	_, err := c.call(ctx, "pack create", name, packFromVMArgv(name, out))
	return packOf(out), err
}

func packOf(out string) Pack { return Pack{Stub: out, Machine: out + ".smolmachine"} }

func (c *Client) checkOut(out string) error {
	if err := checkArg("output", out); err != nil {
		return err
	}
	if c.version.atLeast(v1_7_0) && strings.HasSuffix(out, ".smolmachine") {
		return argErr("output", "%q must not end in .smolmachine: smolvm %s writes OUT and OUT.smolmachine", out, c.version)
	}
	return nil
}

// Resources smolvm gives a machine when create does not say, and the
// largest values it takes. smolvm's --cpus is a u8 and --mem a u32 (MiB);
// 0 is refused for either.
const (
	// DefaultCPUs is smolvm's --cpus default.
	DefaultCPUs = 4
	// DefaultMemoryMiB is smolvm's --mem default.
	DefaultMemoryMiB = 8192
	// MaxCPUs is the largest --cpus smolvm parses.
	MaxCPUs = 255
	// MaxMemoryMiB is the largest --mem smolvm parses.
	MaxMemoryMiB = 1<<32 - 1
)

// CreateOptions are the optional parts of [Client.Create]. The zero value
// sends no option: the machine gets smolvm's defaults, or its pack's
// settings when From is set.
type CreateOptions struct {
	// From is a .smolmachine file to create the machine from.
	From string
	// CPUs (1..MaxCPUs) is sent as --cpus when non-zero. With From set,
	// smolvm applies it only when it differs from DefaultCPUs: asking for
	// exactly DefaultCPUs gets whatever the pack's manifest says. Read
	// [Machine.CPUs] back with [Client.Status] to know what the VM got.
	CPUs int
	// MemoryMiB (1..MaxMemoryMiB) is sent as --mem when non-zero, with the
	// same rule as CPUs: with From set, DefaultMemoryMiB cannot override
	// the pack's manifest.
	MemoryMiB int
	// AllowCIDRs restricts egress to these prefixes. When set, the machine
	// gets --net as well. DNS still gets out past the list (see DNS, and
	// docs/smolvm.md, Network policy). Check
	// [Version.EnforcesAllowCIDROnFrom] before relying on it together with
	// From: older releases drop it there and the VM's egress is
	// unrestricted.
	AllowCIDRs []netip.Prefix
	// LocalhostOnly sends --outbound-localhost-only: the allow-list is
	// 127.0.0.0/8 and ::1, and the machine gets a network device (its
	// [Machine.Network] reads true). Use it to take egress away from a
	// machine made from a pack whose manifest has network on; smolvm still
	// forwards its DNS queries unless DNS sends them nowhere. It needs
	// [FeatureFromEgress] (smolvm 1.8.0, below which it is dropped on the
	// --from path and, before 1.1.3, not enforced at all) and cannot be
	// combined with AllowCIDRs.
	LocalhostOnly bool
	// DNS, an IPv4 address, is sent as --dns: the resolver smolvm forwards
	// the guest's DNS queries to, from the host. It needs [FeatureDNS] and
	// an allow-list (AllowCIDRs or LocalhostOnly): without one smolvm's
	// --dns turns on an unrestricted network.
	DNS netip.Addr
	// Labels are sent as --label KEY=VALUE, sorted by key, and read back
	// in [Machine.Labels]. They need [FeatureLabels]. A key is 1 to
	// 128 bytes of ASCII letters, digits, '.', '_', '-' and
	// '/', starting with a letter or digit; a value may hold anything but
	// a NUL byte.
	Labels map[string]string
	// Env is set in the machine for every command. Keys must be valid names.
	Env map[string]string
}

// Create runs `machine create` for a new machine named name. Every option
// is checked before smolvm runs: a bad value is an [*ArgError], an option
// the release does not honour an [*UnsupportedError] (see
// [Client.Supports]); both match [ErrInvalid].
func (c *Client) Create(ctx context.Context, name string, o CreateOptions) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := checkCreate(c.version, o); err != nil {
		return err
	}
	_, err := c.call(ctx, "machine create", name, createArgv(c.version.Dialect(), name, o))
	return err
}

// Supports reports whether the client's smolvm release has feature f.
func (c *Client) Supports(f Feature) bool { return c.version.Supports(f) }

// Start runs `machine start --name NAME`. smolvm returns once the machine's
// agent answers, which can take up to 30 s.
func (c *Client) Start(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	_, err := c.call(ctx, "machine start", name, startArgv(name))
	return err
}

// Stop runs `machine stop --name NAME`. Stopping a machine that is not
// running succeeds.
func (c *Client) Stop(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	_, err := c.call(ctx, "machine stop", name, stopArgv(name))
	return err
}

// Delete runs `machine delete -f`, in the release's dialect. smolvm 0.8.0
// deletes a running machine's record but leaves its VM running, so on that
// release Delete stops it first.
func (c *Client) Delete(ctx context.Context, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if c.version.less(v0_8_1) {
		if err := c.Stop(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	_, err := c.call(ctx, "machine delete", name, deleteArgv(c.version.Dialect(), name))
	return err
}

// CopyIn uploads the regular file hostPath into the running machine name
// at guestPath with permission bits mode: `machine cp [--mode OCTAL] HOST
// NAME:GUEST`. smolvm creates the guest's parent directories and writes the
// file atomically. smolvm ≥ 1.9.3 sets the mode itself (--mode); on older
// releases a mode other than 0644 is set by a `chmod MODE PATH` exec after
// the copy, so the guest needs chmod.
//
// hostPath must be absolute and free of ':' (smolvm reads SRC first and a
// ':' in it would make the copy a download); guestPath must pass
// [ValidateGuestPath]; mode may hold permission bits only. Bad input is
// refused before any process starts.
func (c *Client) CopyIn(ctx context.Context, name, hostPath, guestPath string, mode fs.FileMode) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := checkHostPath("host_path", hostPath); err != nil {
		return err
	}
	if err := checkCopyGuestPath("guest_path", guestPath); err != nil {
		return err
	}
	if mode&^fs.ModePerm != 0 {
		return argErr("mode", "%s has bits beyond the permission bits 0777", mode)
	}
	if _, err := c.call(ctx, "machine cp", name, copyInArgv(c.version, name, hostPath, guestPath, mode)); err != nil {
		return err
	}
	if c.Supports(FeatureCpMode) || mode == 0o644 {
		return nil
	}
	// chmod runs in the file's directory on "./BASE": the same file, and a
	// base name starting with '-' cannot pass for an option.
	argv := []string{"chmod", formatMode(mode), "./" + path.Base(guestPath)}
	o := ExecOptions{Workdir: path.Dir(guestPath), Timeout: time.Minute}
	res, err := c.Exec(ctx, name, argv, o)
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return &Error{Op: "machine exec", Machine: name, Args: redact(execArgv(name, argv, o)), ExitCode: res.ExitCode,
			Message: fmt.Sprintf("chmod %s after machine cp failed (its stderr, the guest's, is not kept)", formatMode(mode))}
	}
	return nil
}

// CopyOut downloads the regular file guestPath from the running machine
// name to hostPath: `machine cp NAME:GUEST HOST`. A guest file that does not
// exist is an *Error matching [ErrNoSuchFile]. The paths follow the rules of
// [Client.CopyIn].
func (c *Client) CopyOut(ctx context.Context, name, guestPath, hostPath string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := checkCopyGuestPath("guest_path", guestPath); err != nil {
		return err
	}
	if err := checkHostPath("host_path", hostPath); err != nil {
		return err
	}
	_, err := c.call(ctx, "machine cp", name, copyOutArgv(name, guestPath, hostPath))
	return err
}

// call runs one smolvm invocation and turns its outcome into an *Error
// unless it exited 0. Every method but Exec goes through it.
func (c *Client) call(ctx context.Context, op, machine string, argv []string) (proc, error) {
	return c.callLimit(ctx, op, machine, argv, outputLimit)
}

// callLimit is call keeping limit bytes of each output stream.
func (c *Client) callLimit(ctx context.Context, op, machine string, argv []string, limit int) (proc, error) {
	p, err := c.invoke(ctx, op, machine, argv, outputs{limit: limit}, func(p proc) error {
		if p.exitCode == 0 {
			return nil
		}
		msg, cause, _ := classify(p.exitCode, p.stderr)
		return &Error{Op: op, Machine: machine, Args: redact(argv), ExitCode: p.exitCode, Message: msg, Err: cause}
	})
	return p, err
}

// invoke runs smolvm, lets judge decide what a finished process means, and
// reports the call to the logger and the observer.
func (c *Client) invoke(ctx context.Context, op, machine string, argv []string, o outputs, judge func(proc) error) (proc, error) {
	start := time.Now()
	p, err := c.run(ctx, argv, o)
	if err != nil {
		msg := ""
		if op != "machine exec" { // exec's stderr is the guest's
			msg = ownMessage(p)
		}
		err = &Error{Op: op, Machine: machine, Args: redact(argv), ExitCode: -1, Message: msg, Err: err}
	} else {
		err = judge(p)
	}
	d := time.Since(start)
	ev := c.log.Debug()
	if l := zerolog.Ctx(ctx); l.GetLevel() != zerolog.Disabled {
		ev = l.Debug() // the caller's, whose fields (task, vm) already say what this is about
	} else if machine != "" {
		ev = ev.Str("vm", machine)
	}
	ev.Str("op", op).Int("exit", p.exitCode).Float64("duration_ms", float64(d)/float64(time.Millisecond)).Err(err).Msg("smolvm")
	if c.observe != nil {
		c.observe(Call{Op: op, Duration: d, Err: err})
	}
	return p, err
}

// ownMessage is smolvm's own error line in p's stderr, if it printed one.
// Anything else there may be a guest's output, which must not reach an
// error message (it can hold anything, secrets included).
func ownMessage(p proc) string {
	msg, _, own := classify(1, p.stderr)
	if !own {
		return ""
	}
	return msg
}
