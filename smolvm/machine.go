package smolvm

import (
	"context"
	"encoding/json"
	"fmt"
)

// Machine states as `machine ls --json` reports them, probed live by smolvm.
const (
	StateCreated     = "created"
	StateRunning     = "running"
	StateStopped     = "stopped"
	StateFailed      = "failed"
	StateUnreachable = "unreachable" // the VM runs but its agent does not answer
)

// Machine is one entry of `machine ls --json` or `machine status --json`.
// Only the fields bottleq reads, or checks in its conformance suite (PID,
// Labels), are decoded.
type Machine struct {
	// Name is the machine's name.
	Name string `json:"name"`
	// State is one of the State constants, probed live by smolvm.
	State string `json:"state"`
	// PID is the VM process, when it runs.
	PID int `json:"pid"`
	// CPUs and MemoryMiB are the resources the machine really has: for a
	// machine created --from a pack, the pack's unless create asked for
	// values other than smolvm's defaults (see [CreateOptions.CPUs]).
	CPUs      int `json:"cpus"`
	MemoryMiB int `json:"memory_mib"`
	// CreatedAt is when the machine was created, in unix seconds.
	CreatedAt int64 `json:"created_at"`
	// Network tells whether the machine has a network device: true when
	// create gave it --net, an allow-list or --outbound-localhost-only, or
	// its pack's manifest says network. smolvm does not show the
	// allow-list, so true does not say whether egress is restricted; false
	// says the machine has no egress at all.
	Network bool `json:"network"`
	// Labels are the machine's --label KEY=VALUE pairs. smolvm reports
	// them from 1.8.0, as an empty object when there are none; before, the
	// field is absent and Labels is nil. Nil thus means the release does
	// not report labels; an empty map, that the machine has none.
	Labels map[string]string `json:"labels"`
}

// List runs `machine ls --json`.
func (c *Client) List(ctx context.Context) ([]Machine, error) {
	p, err := c.callWhole(ctx, "machine ls", "", lsArgv())
	if err != nil {
		return nil, err
	}
	var ms []Machine
	if err := json.Unmarshal(p.stdout, &ms); err != nil {
		return nil, &Error{Op: "machine ls", ExitCode: p.exitCode, Message: "decode --json output: " + err.Error()}
	}
	return ms, nil
}

// Status runs `machine status --name NAME --json`. An unknown machine is an
// error matching [ErrNotFound].
func (c *Client) Status(ctx context.Context, name string) (Machine, error) {
	if err := ValidateName(name); err != nil {
		return Machine{}, err
	}
	p, err := c.callWhole(ctx, "machine status", name, statusArgv(name))
	if err != nil {
		return Machine{}, err
	}
	var m Machine
	if err := json.Unmarshal(p.stdout, &m); err != nil {
		return Machine{}, &Error{Op: "machine status", Machine: name, ExitCode: p.exitCode, Message: "decode --json output: " + err.Error()}
	}
	return m, nil
}

// wholeOutputLimit bounds the JSON of ls and status, which must be read
// whole: the head and tail of a long listing do not decode.
const wholeOutputLimit = 128 << 20

// callWhole is call for output that is parsed: it keeps up to
// wholeOutputLimit and fails rather than cut it.
func (c *Client) callWhole(ctx context.Context, op, machine string, argv []string) (proc, error) {
	p, err := c.callLimit(ctx, op, machine, argv, wholeOutputLimit)
	if err == nil && p.stdoutDropped > 0 {
		err = &Error{Op: op, Machine: machine, ExitCode: p.exitCode, Message: fmt.Sprintf("output over %d bytes", wholeOutputLimit)}
	}
	return p, err
}
