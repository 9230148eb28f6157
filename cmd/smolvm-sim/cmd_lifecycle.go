package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// nameArg parses the argv of a command that takes only --name and returns
// the name.
func nameArg(args []string) (string, error) {
	p, err := parseArgs(args, nameFlags, false)
	if err != nil {
		return "", err
	}
	if err := noPositionals(p); err != nil {
		return "", err
	}
	return nameFlag(p)
}

// start handles `machine start`.
func (a *app) start(args []string) error {
	name, err := nameArg(args)
	if err != nil {
		return err
	}
	st, err := a.begin("start", name)
	if err != nil {
		return err
	}
	return st.locked(func() error {
		m, err := st.get(name)
		if err != nil {
			return err
		}
		if m == nil {
			return errNotFound(name)
		}
		if m.State == stateRunning {
			fmt.Fprintf(a.stdout, "Machine '%s' already running (PID: %d)\n", name, m.PID)
			return nil
		}
		fmt.Fprintf(a.stderr, "Starting machine '%s'...\n", name)
		if m.From != "" && !a.ver.atLeast(1, 0, 0) {
			// ≤ 0.9.0 reads the .smolmachine at every start.
			if _, err := os.Stat(m.From); err != nil {
				return agentErr("start machine", fmt.Sprintf("source .smolmachine not found: %s (was it moved or deleted?)", m.From))
			}
			if !m.StartedOnce {
				if err := extractRootfs(m.From, st.root(name)); err != nil {
					return agentErr("start machine", err.Error())
				}
			}
		}
		// There is no VMM process: the PID is this start invocation's.
		m.State, m.PID, m.StartedAt, m.StartedOnce = stateRunning, os.Getpid(), time.Now(), true
		if err := st.put(m); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "Machine '%s' running (PID: %d)\n", name, m.PID)
		return nil
	})
}

// stop handles `machine stop`.
func (a *app) stop(args []string) error {
	name, err := nameArg(args)
	if err != nil {
		return err
	}
	st, err := a.begin("stop", name)
	if err != nil {
		return err
	}
	return st.locked(func() error {
		m, err := st.get(name)
		switch {
		case err != nil:
			return err
		case m == nil && !a.ver.atLeast(0, 8, 1):
			fmt.Fprintf(a.stdout, "Machine '%s' not found or not running\n", name)
			return nil
		case m == nil:
			return errNotFound(name)
		case m.State != stateRunning:
			fmt.Fprintf(a.stdout, "Machine '%s' is not running (state: %s)\n", name, m.State)
			return nil
		}
		fmt.Fprintf(a.stdout, "Stopping machine '%s'...\n", name)
		if err := a.halt(st, m); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "Stopped machine: %s\n", name)
		return nil
	})
}

// halt stops a running machine, clearing the guest's tmpfs directories.
// Call under the lock.
func (a *app) halt(st *store, m *machine) error {
	for _, d := range []string{"tmp", "run", "dev/shm"} {
		if err := os.RemoveAll(filepath.Join(st.root(m.Name), d)); err != nil {
			return err
		}
	}
	m.State, m.PID = stateStopped, 0
	return st.put(m)
}

// delete handles `machine delete`. Without -f smolvm asks for confirmation
// on stdin; bottleq always passes -f, so the simulator requires it.
func (a *app) delete(args []string) error {
	p, err := parseArgs(args, a.deleteFlags(), false)
	if err != nil {
		return err
	}
	name, err := a.machineName(p, missing("<NAME>"))
	if err != nil {
		return err
	}
	if !p.has("force") {
		return notSimulated("'machine delete' without -f (a confirmation prompt)")
	}
	st, err := a.begin("delete", name)
	if err != nil {
		return err
	}
	return st.locked(func() error {
		m, err := st.get(name)
		if err != nil {
			return err
		}
		if m == nil {
			return errNotFound(name)
		}
		// 0.8.0 deletes without stopping (its VMM is orphaned); 0.8.1+ stops first.
		if m.State == stateRunning && a.ver.atLeast(0, 8, 1) {
			if err := a.halt(st, m); err != nil {
				return err
			}
		}
		fmt.Fprintf(a.stdout, "Cleaning up data directory for vm: %s\n", name)
		if err := st.remove(name); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "Deleted machine: %s\n", name)
		return nil
	})
}
