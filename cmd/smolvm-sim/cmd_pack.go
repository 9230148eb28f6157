package main

import (
	"fmt"
	"io"
	"strings"
)

// pack handles `pack create`.
func (a *app) pack(args []string) error {
	if len(args) == 0 {
		return usagef("'smolvm pack' requires a subcommand but one was not provided")
	}
	if args[0] != "create" {
		return usagef("unrecognized subcommand '%s'", args[0])
	}
	a.call.Op = "pack create"
	p, err := parseArgs(args[1:], packFlags, false)
	if err != nil {
		return err
	}
	if err := noPositionals(p); err != nil {
		return err
	}
	image, fromVM, out := p.get("image"), p.get("from-vm"), p.get("output")
	a.call.Image, a.call.Name = image, fromVM
	switch {
	case p.has("image") && p.has("from-vm"):
		return usagef("the argument '--image <IMAGE>' cannot be used with '--from-vm <VM_NAME>'")
	case !p.has("image") && !p.has("from-vm"):
		return missing("--image <IMAGE>")
	case !p.has("output"):
		return missing("--output <OUTPUT>")
	}
	m := &manifest{Format: manifestFormat, Image: image}
	if m.CPUs, err = uintFlag(p, flagCPUs, defaultCPUs, 255); err != nil {
		return err
	}
	if m.Mem, err = uintFlag(p, flagMem, defaultMemoryMiB, 1<<32-1); err != nil {
		return err
	}
	if m.CPUs == 0 || m.Mem == 0 {
		return notSimulated("pack create --cpus 0 or --mem 0")
	}
	if a.ver.atLeast(1, 7, 0) && strings.HasSuffix(out, ".smolmachine") {
		// From 1.7.0; smolvm's exact wording is not known.
		return configErr("pack", fmt.Sprintf("output path '%s' must not end in .smolmachine: -o names the executable and '%s.smolmachine' is written next to it", out, out))
	}
	op := "pack-image"
	if p.has("from-vm") {
		op = "pack-vm"
	}
	if err := a.gate(op); err != nil {
		return err
	}
	st, err := a.openStore()
	if err != nil {
		return err
	}
	if !p.has("from-vm") {
		if err := a.writePack(out, m, "", a.packBytes); err != nil {
			return agentErr("pack", err.Error())
		}
		return nil
	}
	// The record and the guest root are read and archived under the lock so
	// that a concurrent start/exec/delete cannot change them mid-pack.
	return st.locked(func() error {
		vm, err := st.get(fromVM)
		if err != nil {
			return err
		}
		switch {
		case vm == nil:
			return agentErr("pack from VM", fmt.Sprintf("VM '%s' not found", fromVM))
		case vm.State == stateRunning:
			return agentErr("pack from VM", fmt.Sprintf("VM '%s' is running. Stop it first with: smolvm machine stop --name %s", fromVM, fromVM))
		case !vm.StartedOnce:
			return agentErr("pack from VM", fmt.Sprintf("overlay disk not found for VM '%s' at %s. The VM may not have been started yet.", fromVM, st.root(fromVM)))
		}
		// The pack carries the machine's network flag, never its
		// allow-list; its cpus and mem are pack create's.
		m.Image, m.Network, m.Env = vm.Image, vm.Network, vm.Env
		if err := a.writePack(out, m, st.root(fromVM), 0); err != nil {
			return agentErr("pack from VM", err.Error())
		}
		return nil
	})
}

// writePack writes OUT.smolmachine (the manifest, root's files and filler
// bytes of filler) and the stub OUT.
func (a *app) writePack(out string, m *manifest, root string, filler int64) error {
	sidecar := out + ".smolmachine"
	if err := writeSmolmachine(sidecar, m, root, filler); err != nil {
		return err
	}
	if err := writeFileAtomic(out, 0o755, func(w io.Writer) error {
		_, err := io.WriteString(w, stubScript)
		return err
	}); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "Packed: %s\n  Assets: %s\n", out, sidecar)
	return nil
}
