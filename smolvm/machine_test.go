package smolvm

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

// machine080 is one machine of `machine status --json` as smolvm 0.8.0
// prints it (docs/smolvm.md, machine ls and status): no labels.
const machine080 = `{
  "cmd": [],
  "cpus": 255,
  "created_at": 1779000000,
  "entrypoint": [],
  "ephemeral": false,
  "gpu": false,
  "gpu_vram_mib": null,
  "health_cmd": null,
  "health_interval_secs": null,
  "health_retries": null,
  "health_startup_grace_secs": null,
  "health_timeout_secs": null,
  "image": "alpine:3",
  "memory_mib": 1048576,
  "mounts": 0,
  "name": "bq-old",
  "network": true,
  "overlay_gb": 10,
  "pid": null,
  "ports": 0,
  "restart_count": 0,
  "restart_max_retries": null,
  "restart_policy": "never",
  "state": "created",
  "storage_gb": 20
}`

// machine193 is the same object as smolvm 1.9.3 prints it: labels and the
// CUDA and fork fields come in.
const machine193 = `{
  "cmd": ["sleep", "infinity"],
  "cpus": 2,
  "created_at": 1787000000,
  "cuda": false,
  "cuda_fork_pool_size": null,
  "cuda_vram_limit_mib": null,
  "entrypoint": [],
  "ephemeral": false,
  "forkable": false,
  "forkpoint_held": false,
  "gpu": false,
  "gpu_vram_mib": null,
  "health_cmd": null,
  "health_interval_secs": null,
  "health_retries": null,
  "health_startup_grace_secs": null,
  "health_timeout_secs": null,
  "image": "alpine:3",
  "labels": {"bottleq.io/deployment": "prod-1", "app": "a=b"},
  "memory_mib": 2048,
  "mounts": 0,
  "name": "bq-new",
  "network": false,
  "overlay_gb": 10,
  "pid": 4242,
  "ports": 0,
  "restart_count": 0,
  "restart_max_retries": null,
  "restart_policy": "never",
  "state": "running",
  "storage_gb": 20
}`

// machine193NoLabels is a 1.9.3 machine created without --label: smolvm
// prints an empty object, not null.
const machine193NoLabels = `{"name": "bq-bare", "state": "stopped", "cpus": 4, "memory_mib": 8192,
  "pid": null, "created_at": 1787000001, "image": null, "network": false, "ephemeral": false, "labels": {}}`

// TestMachineDecode: Status and List expose what a caller needs to check a
// machine after create (resources, network, labels) from the JSON of every
// release read, and tell "no labels reported" (nil) from "no labels" (empty).
func TestMachineDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		json string
		want Machine
	}{
		{"0.8.0", machine080, Machine{Name: "bq-old", State: StateCreated, CPUs: 255, MemoryMiB: 1048576,
			CreatedAt: 1779000000, Network: true}},
		{"1.9.3", machine193, Machine{Name: "bq-new", State: StateRunning, PID: 4242, CPUs: 2, MemoryMiB: 2048,
			CreatedAt: 1787000000, Network: false,
			Labels: map[string]string{"bottleq.io/deployment": "prod-1", "app": "a=b"}}},
		{"1.9.3 without labels", machine193NoLabels, Machine{Name: "bq-bare", State: StateStopped, CPUs: 4, MemoryMiB: 8192,
			CreatedAt: 1787000001, Labels: map[string]string{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			f := &fakeRun{answers: []proc{ok(tt.json), ok("[" + tt.json + "]")}}
			c := fakeClient(t, v193, f)
			m, err := c.Status(ctx, tt.want.Name)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m, tt.want) {
				t.Errorf("Status:\n got %+v\nwant %+v", m, tt.want)
			}
			if (m.Labels == nil) != (tt.want.Labels == nil) {
				t.Errorf("Labels nil = %v, want %v", m.Labels == nil, tt.want.Labels == nil)
			}
			ms, err := c.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) != 1 || !reflect.DeepEqual(ms[0], tt.want) {
				t.Errorf("List:\n got %+v\nwant [%+v]", ms, tt.want)
			}
		})
	}
}

// TestMachineDecodeFailure: JSON that does not decode is an *Error naming
// the call, not a zero Machine.
func TestMachineDecodeFailure(t *testing.T) {
	t.Parallel()
	f := &fakeRun{answers: []proc{ok(`{"cpus": "four"}`)}}
	_, err := fakeClient(t, v193, f).Status(context.Background(), "vm1")
	var e *Error
	if !errors.As(err, &e) || e.Op != "machine status" || e.Machine != "vm1" {
		t.Fatalf("err = %v, want an *Error for machine status vm1", err)
	}
}
