// Command smolvm-sim is a TEST DOUBLE for the smolvm CLI (smol-machines/smolvm).
//
// It gives NO isolation: there is no VM, no kernel, no network policy. A
// "guest" command run by `machine exec` is a plain host process running as
// the calling user, with its working directory inside a per-machine directory
// that stands in for the VM's filesystem. Never use it to contain untrusted
// code. It exists so that bottleq's wrapper, worker and end-to-end tests can
// run on machines where smolvm cannot be installed.
//
// The simulator implements docs/smolvm.md, the smolvm contract bottleq
// relies on: the same argv grammar per version (positional names up to
// 1.0.1, --name from 1.0.2), the same stdout/stderr lines, the same exit
// codes (2 for parse errors, 1 for `Error: ...` failures, the guest's code
// for exec, 124 for --timeout).
//
// # Environment
//
//	SMOLVM_SIM_VERSION   version to impersonate, X.Y.Z (default 1.9.3)
//	SMOLVM_SIM_STATE     state directory (default $HOME/.smolvm-sim)
//	SMOLVM_SIM_FAULTS    ';'-separated rules OP:WHEN:EXIT[:MESSAGE]
//	                     OP   pack|pack-image|pack-vm|create|start|stop|delete|
//	                          exec|cp|ls|status|* (pack matches both pack kinds)
//	                     WHEN N (the Nth call), N+ (Nth and later), pF (probability F)
//	                     EXIT exit code; MESSAGE printed as "Error: MESSAGE"
//	                     (default "agent operation failed: injected fault (OP call N)")
//	SMOLVM_SIM_SEED      integer seed for pF rules (default: random)
//	SMOLVM_SIM_DELAY     comma-separated OP=DURATION (Go syntax), e.g. start=250ms,pack=1s
//	SMOLVM_SIM_NOT_READY Go duration D: exec fails "not running" for D after a start
//	SMOLVM_SIM_PACK_BYTES byte count N: `pack create --image` adds N bytes of
//	                     filler to the .smolmachine, as big as a real image's
//	                     pack (hundreds of MB), for benchmarks of moving packs
//
// Call counters for fault rules are kept in the state directory, so the Nth
// call is counted across every process sharing it. Calls that fail argv
// parsing are not counted. A faulted call changes no state.
//
// # State
//
// STATE/machines/NAME.json holds one record per machine, STATE/roots/NAME/ is
// the guest root, STATE/counters.json the fault counters and STATE/calls.jsonl
// one JSON line per invocation (op, machine name, image, exit code, duration;
// for a successful create, the machine's cpus, memory, network, allow-list
// and DNS; never environment values). Every read-modify-write of state happens under
// an exclusive flock on STATE/lock; the lock is never held while a guest
// command runs or while sleeping for injected latency.
//
// # Guest view
//
// A guest command sees the host filesystem. Its working directory is
// ROOT/WORKDIR and SMOLVM_SIM_ROOT names ROOT, so a guest that wants "/x"
// should use "$SMOLVM_SIM_ROOT/x". `machine cp` maps guest paths into ROOT.
// `.smolmachine` files are tar archives holding manifest.json and rootfs/.
//
// # What it accepts
//
// Only the argv bottleq sends (smolvm/argv.go), in each release's dialect
// (create's --cpus, --mem, --allow-cidr, --outbound-localhost-only, --dns
// and --label included), and pack create's --cpus and --mem, with which a
// test writes a pack whose manifest asks for more than a worker allows; a
// pack with network on is a commit of a machine created with --net, as in
// smolvm. A machine created --from a pack inherits its manifest as
// docs/smolvm.md says. smolvm's other flags and forms (volumes, ports, exec
// -i/-t/-d, a command without --name, delete without -f, ls without --json,
// …) are parse errors here, so that a flag new to bottleq fails loudly
// until the simulator learns it. The conformance suite
// (smolvm/conformance_test.go) runs the same checks against the simulator
// and against a real smolvm.
package main
