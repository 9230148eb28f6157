package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bot-bottle/bottleq/smolvm"
)

// fakeSmolvm behaves like smolvm's CLI for the handler: machines must be
// created before they start, started before exec, stopped before pack
// --from-vm; packs are files holding the manifest fields a machine created
// from them inherits (resources unless create asks for other values than
// smolvm's defaults, and network; docs/smolvm.md, machine create), and a
// pack --from-vm records its machine's network. Options the release does
// not honour are refused as the client refuses them. Each method can be
// overridden by a function field to inject a failure. It records every
// call.
type fakeSmolvm struct {
	version smolvm.Version

	mu       sync.Mutex
	calls    []string                       // "op name"
	machines map[string]string              // name → state
	created  map[string]int64               // name → unix seconds
	boxes    map[string]fakeBox             // name → what create gave it
	files    map[string]map[string]fakeFile // name → guest path → file

	packImage func(ctx context.Context, image, out string) (smolvm.Pack, error)
	create    func(ctx context.Context, name string, o smolvm.CreateOptions) error
	start     func(ctx context.Context, name string) error
	ready     func(ctx context.Context, name string) error
	exec      func(ctx context.Context, name string, cmd []string, o smolvm.ExecOptions) (smolvm.ExecResult, error)
	stop      func(ctx context.Context, name string) error
	packVM    func(ctx context.Context, name, out string) (smolvm.Pack, error)
	delete    func(ctx context.Context, name string) error
	copyIn    func(ctx context.Context, name, host, guest string, mode fs.FileMode) error
	copyOut   func(ctx context.Context, name, guest, host string) error
	// stat stands in for the guest's `stat -L -c '%F %s' PATH`.
	stat func(ctx context.Context, name, guest string) (smolvm.ExecResult, error)

	lastCreate smolvm.CreateOptions
	creates    []smolvm.CreateOptions // every create that made a machine
	lastExec   smolvm.ExecOptions
}

// fakeBox is a machine's resources and egress.
type fakeBox struct {
	CPUs      int      `json:"cpus"`
	MemoryMiB int      `json:"mem"`
	Network   bool     `json:"network"`
	Allow     []string `json:"-"` // the allow-list, which status never shows
}

var _ Smolvm = (*fakeSmolvm)(nil)

func newFake() *fakeSmolvm {
	return &fakeSmolvm{version: smolvm.Version{Major: 1, Minor: 9, Patch: 3}, machines: map[string]string{}, created: map[string]int64{},
		boxes: map[string]fakeBox{}, files: map[string]map[string]fakeFile{}}
}

func (f *fakeSmolvm) record(op, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op+" "+name)
}

func (f *fakeSmolvm) ops() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeSmolvm) count(op string) int {
	n := 0
	for _, c := range f.ops() {
		if len(c) >= len(op) && c[:len(op)] == op {
			n++
		}
	}
	return n
}

func (f *fakeSmolvm) left() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.machines {
		out = append(out, n)
	}
	return out
}

func (f *fakeSmolvm) toolErr(op, name, msg string, cause error) error {
	return &smolvm.Error{Op: op, Machine: name, ExitCode: 1, Message: msg, Err: cause}
}

func (f *fakeSmolvm) Version() smolvm.Version { return f.version }

// writePack writes a pack as `pack create` without --cpus/--mem does:
// smolvm's default resources, network off.
func writePack(out string) (smolvm.Pack, error) {
	return writePackOf(out, fakeBox{CPUs: smolvm.DefaultCPUs, MemoryMiB: smolvm.DefaultMemoryMiB})
}

// writePackOf writes a pack whose manifest says b.
func writePackOf(out string, b fakeBox) (smolvm.Pack, error) {
	p := smolvm.Pack{Stub: out, Machine: out + ".smolmachine"}
	if err := os.WriteFile(p.Stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		return p, err
	}
	data, err := json.Marshal(b)
	if err != nil {
		return p, err
	}
	return p, os.WriteFile(p.Machine, data, 0o644)
}

func (f *fakeSmolvm) PackImage(ctx context.Context, image, out string) (smolvm.Pack, error) {
	f.record("pack-image", image)
	if f.packImage != nil {
		return f.packImage(ctx, image, out)
	}
	return writePack(out)
}

func (f *fakeSmolvm) PackFromVM(ctx context.Context, name, out string) (smolvm.Pack, error) {
	f.record("pack-vm", name)
	if f.packVM != nil {
		if p, err := f.packVM(ctx, name, out); err != nil {
			return p, err
		}
	}
	f.mu.Lock()
	state, ok := f.machines[name]
	f.mu.Unlock()
	switch {
	case !ok:
		return smolvm.Pack{}, f.toolErr("pack create", name, "pack from VM: VM '"+name+"' not found", smolvm.ErrNotFound)
	case state == smolvm.StateRunning:
		return smolvm.Pack{}, f.toolErr("pack create", name, "VM is running", nil)
	case state == smolvm.StateCreated:
		return smolvm.Pack{}, f.toolErr("pack create", name, "overlay disk not found. The VM may not have been started yet.", nil)
	}
	f.mu.Lock()
	network := f.boxes[name].Network
	f.mu.Unlock()
	return writePackOf(out, fakeBox{CPUs: smolvm.DefaultCPUs, MemoryMiB: smolvm.DefaultMemoryMiB, Network: network})
}

func (f *fakeSmolvm) Create(ctx context.Context, name string, o smolvm.CreateOptions) error {
	f.record("create", name)
	if f.create != nil {
		if err := f.create(ctx, name, o); err != nil {
			return err
		}
	}
	if o.LocalhostOnly && !f.version.Supports(smolvm.FeatureFromEgress) {
		return &smolvm.UnsupportedError{Field: "outbound_localhost_only", Feature: smolvm.FeatureFromEgress, Version: f.version}
	}
	if o.DNS.IsValid() && !f.version.Supports(smolvm.FeatureDNS) {
		return &smolvm.UnsupportedError{Field: "dns", Feature: smolvm.FeatureDNS, Version: f.version}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.machines[name]; ok {
		return f.toolErr("machine create", name, "machine '"+name+"' already exists", smolvm.ErrExists)
	}
	data, err := os.ReadFile(o.From)
	if err != nil {
		return f.toolErr("machine create", name, "create from .smolmachine: file not found: "+o.From, nil)
	}
	var pack fakeBox
	if err := json.Unmarshal(data, &pack); err != nil {
		return f.toolErr("machine create", name, "create from .smolmachine: invalid .smolmachine file "+o.From, nil)
	}
	// --cpus/--mem override the pack only when they are not smolvm's
	// defaults; 0 means not sent, which is the default.
	b := pack
	if o.CPUs != 0 && o.CPUs != smolvm.DefaultCPUs {
		b.CPUs = o.CPUs
	}
	if o.MemoryMiB != 0 && o.MemoryMiB != smolvm.DefaultMemoryMiB {
		b.MemoryMiB = o.MemoryMiB
	}
	// The client sends --net with an allow-list; before 1.8.0 the --from
	// path drops the list (and the client refuses LocalhostOnly there).
	b.Network = pack.Network || len(o.AllowCIDRs) > 0 || o.LocalhostOnly
	if f.version.Supports(smolvm.FeatureFromEgress) {
		for _, p := range o.AllowCIDRs {
			b.Allow = append(b.Allow, p.String())
		}
		if o.LocalhostOnly {
			b.Allow = append(b.Allow, "127.0.0.0/8", "::1/128")
		}
	}
	f.machines[name] = smolvm.StateCreated
	f.created[name] = time.Now().Unix()
	f.boxes[name] = b
	f.lastCreate = o
	f.creates = append(f.creates, o)
	return nil
}

// box returns what create gave a machine that exists.
func (f *fakeSmolvm) box(name string) (fakeBox, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.boxes[name]
	return b, ok
}

func (f *fakeSmolvm) setState(name, want string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.machines[name]; !ok {
		return f.toolErr("machine", name, "vm not found: "+name, smolvm.ErrNotFound)
	}
	f.machines[name] = want
	return nil
}

func (f *fakeSmolvm) Start(ctx context.Context, name string) error {
	f.record("start", name)
	if f.start != nil {
		if err := f.start(ctx, name); err != nil {
			return err
		}
	}
	return f.setState(name, smolvm.StateRunning)
}

func (f *fakeSmolvm) running(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runningLocked("machine exec", name)
}

func (f *fakeSmolvm) runningLocked(op, name string) error {
	switch state, ok := f.machines[name]; {
	case !ok:
		return f.toolErr(op, name, "vm not found: "+name, smolvm.ErrNotFound)
	case state != smolvm.StateRunning:
		return f.toolErr(op, name, "machine is not running", smolvm.ErrNotRunning)
	}
	return nil
}

func (f *fakeSmolvm) WaitReady(ctx context.Context, name string, _ time.Duration) error {
	f.record("ready", name)
	if f.ready != nil {
		if err := f.ready(ctx, name); err != nil {
			return err
		}
	}
	return f.running(name)
}

func (f *fakeSmolvm) Exec(ctx context.Context, name string, cmd []string, o smolvm.ExecOptions) (smolvm.ExecResult, error) {
	if len(cmd) == 5 && cmd[0] == "stat" && o.Workdir == "/" && f.stat != nil {
		return f.stat(ctx, name, strings.TrimPrefix(cmd[4], "."))
	}
	if len(cmd) == 5 && cmd[0] == "stat" && o.Workdir == "/" {
		return f.statFile(name, strings.TrimPrefix(cmd[4], "."))
	}
	f.record("exec", name)
	f.mu.Lock()
	f.lastExec = o
	f.mu.Unlock()
	if err := f.running(name); err != nil {
		return smolvm.ExecResult{ExitCode: 1}, err
	}
	// As the real client does, the writers get every byte of the output:
	// what an exec hook writes to them itself, else what it returns.
	var wrote [2]atomic.Bool
	hooked := o
	if o.Stdout != nil {
		hooked.Stdout = noteWrites{o.Stdout, &wrote[0]}
	}
	if o.Stderr != nil {
		hooked.Stderr = noteWrites{o.Stderr, &wrote[1]}
	}
	res, err := smolvm.ExecResult{Stdout: []byte("ran " + cmd[0] + "\n")}, error(nil)
	if f.exec != nil {
		res, err = f.exec(ctx, name, cmd, hooked)
	}
	if o.Stdout != nil && !wrote[0].Load() && len(res.Stdout) > 0 {
		o.Stdout.Write(res.Stdout)
	}
	if o.Stderr != nil && !wrote[1].Load() && len(res.Stderr) > 0 {
		o.Stderr.Write(res.Stderr)
	}
	return res, err
}

// noteWrites notes that its writer was written to.
type noteWrites struct {
	w    io.Writer
	note *atomic.Bool
}

func (n noteWrites) Write(p []byte) (int, error) {
	n.note.Store(true)
	return n.w.Write(p)
}

func (f *fakeSmolvm) Stop(ctx context.Context, name string) error {
	f.record("stop", name)
	if f.stop != nil {
		if err := f.stop(ctx, name); err != nil {
			return err
		}
	}
	return f.setState(name, smolvm.StateStopped)
}

func (f *fakeSmolvm) Delete(ctx context.Context, name string) error {
	f.record("delete", name)
	if f.delete != nil {
		if err := f.delete(ctx, name); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.machines[name]; !ok {
		return f.toolErr("machine delete", name, "vm not found: "+name, smolvm.ErrNotFound)
	}
	delete(f.machines, name)
	delete(f.boxes, name)
	delete(f.files, name)
	return nil
}

// fakeFile is a file in a fake machine: a regular file, or a FIFO when
// mode has fs.ModeNamedPipe.
type fakeFile struct {
	data []byte
	mode fs.FileMode
}

// statFile answers the guest's `stat -L -c '%F %s' PATH` as busybox does.
func (f *fakeSmolvm) statFile(name, guest string) (smolvm.ExecResult, error) {
	f.record("stat", name+":"+guest)
	if err := f.running(name); err != nil {
		return smolvm.ExecResult{ExitCode: 1}, err
	}
	ff, ok := f.file(name, guest)
	switch {
	case !ok:
		return smolvm.ExecResult{ExitCode: 1, Stderr: []byte("stat: can't stat '." + guest + "': No such file or directory\n")}, nil
	case ff.mode&fs.ModeNamedPipe != 0:
		return smolvm.ExecResult{Stdout: []byte("fifo 0\n")}, nil
	case len(ff.data) == 0:
		return smolvm.ExecResult{Stdout: []byte("regular empty file 0\n")}, nil
	}
	return smolvm.ExecResult{Stdout: fmt.Appendf(nil, "regular file %d\n", len(ff.data))}, nil
}

// put writes a guest file, as a command in the machine would.
func (f *fakeSmolvm) put(name, guest string, data []byte, mode fs.FileMode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.files[name] == nil {
		f.files[name] = map[string]fakeFile{}
	}
	f.files[name][guest] = fakeFile{data: bytes.Clone(data), mode: mode}
}

// file reads a guest file.
func (f *fakeSmolvm) file(name, guest string) (fakeFile, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ff, ok := f.files[name][guest]
	return ff, ok
}

// CopyIn copies one regular host file into a running machine, as smolvm cp
// does, with the client's checks of its input.
func (f *fakeSmolvm) CopyIn(ctx context.Context, name, host, guest string, mode fs.FileMode) error {
	f.record("cp-in", name+":"+guest)
	if err := smolvm.ValidateGuestPath(guest); err != nil {
		return err
	}
	if !filepath.IsAbs(host) || strings.Contains(host, ":") || mode&^fs.ModePerm != 0 {
		return &smolvm.ArgError{Field: "host_path", Reason: "bad host path or mode"}
	}
	if f.copyIn != nil {
		if err := f.copyIn(ctx, name, host, guest, mode); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.runningLocked("machine cp", name); err != nil {
		return err
	}
	info, err := os.Stat(host)
	if err != nil {
		return f.toolErr("machine cp", name, "cp: "+err.Error(), smolvm.ErrNoSuchFile)
	}
	if !info.Mode().IsRegular() {
		return f.toolErr("machine cp", name, "cp: "+host+" is not a regular file", nil)
	}
	data, err := os.ReadFile(host)
	if err != nil {
		return f.toolErr("machine cp", name, "cp: "+err.Error(), nil)
	}
	if f.files[name] == nil {
		f.files[name] = map[string]fakeFile{}
	}
	f.files[name][guest] = fakeFile{data: data, mode: mode}
	return nil
}

// CopyOut copies one guest file out of a running machine.
func (f *fakeSmolvm) CopyOut(ctx context.Context, name, guest, host string) error {
	f.record("cp-out", name+":"+guest)
	if err := smolvm.ValidateGuestPath(guest); err != nil {
		return err
	}
	if !filepath.IsAbs(host) || strings.Contains(host, ":") {
		return &smolvm.ArgError{Field: "host_path", Reason: "bad host path"}
	}
	if f.copyOut != nil {
		if err := f.copyOut(ctx, name, guest, host); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.runningLocked("machine cp", name); err != nil {
		return err
	}
	ff, ok := f.files[name][guest]
	if !ok {
		return f.toolErr("machine cp", name, "cp: open "+guest+": No such file or directory (os error 2)", smolvm.ErrNoSuchFile)
	}
	if ff.mode&fs.ModeNamedPipe != 0 { // smolvm's cp opens a FIFO and waits for a writer
		f.mu.Unlock()
		<-ctx.Done()
		f.mu.Lock()
		return &smolvm.Error{Op: "machine cp", Machine: name, ExitCode: -1, Err: ctx.Err()}
	}
	return os.WriteFile(host, ff.data, ff.mode)
}

func (f *fakeSmolvm) List(context.Context) ([]smolvm.Machine, error) {
	f.record("ls", "")
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []smolvm.Machine
	for n := range f.machines {
		out = append(out, f.machineLocked(n))
	}
	return out, nil
}

// Status is `machine status --json`: resources and the network flag, not
// the allow-list.
func (f *fakeSmolvm) Status(_ context.Context, name string) (smolvm.Machine, error) {
	f.record("status", name)
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.machines[name]; !ok {
		return smolvm.Machine{}, f.toolErr("machine status", name, "config operation failed: machine status: machine '"+name+"' not found", smolvm.ErrNotFound)
	}
	return f.machineLocked(name), nil
}

func (f *fakeSmolvm) machineLocked(name string) smolvm.Machine {
	b := f.boxes[name]
	return smolvm.Machine{Name: name, State: f.machines[name], CreatedAt: f.created[name], CPUs: b.CPUs, MemoryMiB: b.MemoryMiB, Network: b.Network}
}
