package main

import (
	"encoding/json"
	"fmt"
)

// machineView is the JSON object of `ls --json` and `status --json`,
// trimmed to the fields bottleq reads (smolvm prints about 30).
type machineView struct {
	Name      string             `json:"name"`
	State     string             `json:"state"`
	CPUs      int                `json:"cpus"`
	MemoryMiB int                `json:"memory_mib"`
	PID       *int               `json:"pid"`
	CreatedAt int64              `json:"created_at"`
	Image     *string            `json:"image"`
	Ephemeral bool               `json:"ephemeral"`
	Network   bool               `json:"network"`
	Labels    *map[string]string `json:"labels,omitempty"` // from 1.8.0, {} when there are none
}

func (a *app) view(m *machine) machineView {
	v := machineView{Name: m.Name, State: m.State, CPUs: m.CPUs, MemoryMiB: m.MemoryMiB, CreatedAt: m.CreatedAt, Network: m.Network}
	if m.State == stateRunning {
		v.PID = &m.PID
	}
	if m.Image != "" {
		v.Image = &m.Image
	}
	if a.ver.atLeast(1, 8, 0) {
		labels := m.Labels
		if labels == nil {
			labels = map[string]string{}
		}
		v.Labels = &labels
	}
	return v
}

func (a *app) printJSON(v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(a.stdout, "%s\n", data)
	return err
}

// ls handles `machine ls --json`.
func (a *app) ls(args []string) error {
	p, err := parseArgs(args, lsFlags, false)
	if err != nil {
		return err
	}
	if err := noPositionals(p); err != nil {
		return err
	}
	if !p.has("json") {
		return notSimulated("'machine ls' without --json")
	}
	if err := a.gate("ls"); err != nil {
		return err
	}
	st, err := a.openStore()
	if err != nil {
		return err
	}
	var ms []*machine
	if err := st.locked(func() (err error) { ms, err = st.list(); return err }); err != nil {
		return err
	}
	views := make([]machineView, 0, len(ms))
	for _, m := range ms {
		views = append(views, a.view(m))
	}
	return a.printJSON(views)
}

// status handles `machine status --name NAME --json`.
func (a *app) status(args []string) error {
	p, err := parseArgs(args, statusFlags, false)
	if err != nil {
		return err
	}
	if err := noPositionals(p); err != nil {
		return err
	}
	name, err := nameFlag(p)
	if err != nil {
		return err
	}
	if !p.has("json") {
		return notSimulated("'machine status' without --json")
	}
	st, err := a.begin("status", name)
	if err != nil {
		return err
	}
	var m *machine
	if err := st.locked(func() (err error) { m, err = st.get(name); return err }); err != nil {
		return err
	}
	if m == nil {
		return configErr("machine status", fmt.Sprintf("machine '%s' not found", name))
	}
	return a.printJSON(a.view(m))
}
