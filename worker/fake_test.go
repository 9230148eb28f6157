package worker

import (
	"context"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/bot-bottle/bottleq/smolvm"
)

// fakeSmolvm behaves like smolvm's CLI for the handler: machines must be
// created before they start, started before exec, stopped before pack
// --from-vm; packs are files. Each method can be overridden by a function
// field to inject a failure. It records every call.
type fakeSmolvm struct {
	version smolvm.Version

	mu       sync.Mutex
	calls    []string          // "op name"
	machines map[string]string // name → state
	created  map[string]int64  // name → unix seconds

	packImage func(ctx context.Context, image, out string) (smolvm.Pack, error)
	create    func(ctx context.Context, name string, o smolvm.CreateOptions) error
	start     func(ctx context.Context, name string) error
	ready     func(ctx context.Context, name string) error
	exec      func(ctx context.Context, name string, cmd []string, o smolvm.ExecOptions) (smolvm.ExecResult, error)
	stop      func(ctx context.Context, name string) error
	packVM    func(ctx context.Context, name, out string) (smolvm.Pack, error)
	delete    func(ctx context.Context, name string) error

	lastCreate smolvm.CreateOptions
	lastExec   smolvm.ExecOptions
}

var _ Smolvm = (*fakeSmolvm)(nil)

func newFake() *fakeSmolvm {
	return &fakeSmolvm{version: smolvm.Version{Major: 1, Minor: 9, Patch: 3}, machines: map[string]string{}, created: map[string]int64{}}
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

func writePack(out string) (smolvm.Pack, error) {
	p := smolvm.Pack{Stub: out, Machine: out + ".smolmachine"}
	if err := os.WriteFile(p.Stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		return p, err
	}
	return p, os.WriteFile(p.Machine, []byte("pack of "+out), 0o644)
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
	}
	return writePack(out)
}

func (f *fakeSmolvm) Create(ctx context.Context, name string, o smolvm.CreateOptions) error {
	f.record("create", name)
	if f.create != nil {
		if err := f.create(ctx, name, o); err != nil {
			return err
		}
	}
	if _, err := os.Stat(o.From); err != nil {
		return f.toolErr("machine create", name, "file not found: "+o.From, nil)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.machines[name]; ok {
		return f.toolErr("machine create", name, "machine '"+name+"' already exists", smolvm.ErrExists)
	}
	f.machines[name] = smolvm.StateCreated
	f.created[name] = time.Now().Unix()
	f.lastCreate = o
	return nil
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
	switch state, ok := f.machines[name]; {
	case !ok:
		return f.toolErr("machine exec", name, "vm not found: "+name, smolvm.ErrNotFound)
	case state != smolvm.StateRunning:
		return f.toolErr("machine exec", name, "machine is not running", smolvm.ErrNotRunning)
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
	f.record("exec", name)
	f.mu.Lock()
	f.lastExec = o
	f.mu.Unlock()
	if err := f.running(name); err != nil {
		return smolvm.ExecResult{ExitCode: 1}, err
	}
	if f.exec != nil {
		return f.exec(ctx, name, cmd, o)
	}
	return smolvm.ExecResult{Stdout: []byte("ran " + cmd[0] + "\n")}, nil
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
	return nil
}

func (f *fakeSmolvm) List(context.Context) ([]smolvm.Machine, error) {
	f.record("ls", "")
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []smolvm.Machine
	for n, s := range f.machines {
		out = append(out, smolvm.Machine{Name: n, State: s, CreatedAt: f.created[n]})
	}
	return out, nil
}
