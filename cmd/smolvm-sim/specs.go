package main

// The argv each subcommand accepts: what bottleq sends (smolvm/argv.go), in
// the releases that have it, plus pack create's --cpus and --mem, which
// tests use to write a pack whose manifest asks for more than a worker
// allows. smolvm has many more flags and forms; here they are parse errors
// (exit 2), so that a flag new to bottleq's argv fails loudly until the
// simulator learns it.

var (
	flagName    = flagSpec{long: "name", value: "NAME"}
	flagEnv     = flagSpec{long: "env", short: 'e', value: "ENV", multi: true}
	flagCPUs    = flagSpec{long: "cpus", value: "CPUS"}
	flagMem     = flagSpec{long: "mem", value: "MEM"}
	flagJSON    = flagSpec{long: "json"}
	flagForce   = flagSpec{long: "force", short: 'f'}
	flagLabel   = flagSpec{long: "label", value: "LABEL", multi: true}
	flagDNS     = flagSpec{long: "dns", value: "DNS"}
	flagLocal   = flagSpec{long: "outbound-localhost-only"}
	flagTimeout = flagSpec{long: "timeout", value: "TIMEOUT"}
	flagMode    = flagSpec{long: "mode", value: "MODE"}
)

// packFlags: `pack create (--image IMAGE | --from-vm NAME) [--cpus N]
// [--mem MIB] -o OUT`. bottleq never sends --cpus or --mem here; they set
// the resources the pack's manifest asks for.
var packFlags = []flagSpec{
	{long: "image", value: "IMAGE"},
	{long: "from-vm", value: "VM_NAME"},
	{long: "output", short: 'o', value: "OUTPUT"},
	flagCPUs, flagMem,
}

// createFlags: `machine create [--name NAME] [--from FILE] [--cpus N]
// [--mem MIB] [--net] [--allow-cidr CIDR]... [--outbound-localhost-only]
// [--dns IPV4] [--label K=V]... [-e K=V]... [NAME]`, the name positional up
// to 1.0.1 and --name from 1.0.2. --outbound-localhost-only exists in every
// release read (what it does on the --from path changed at 1.8.0).
func (a *app) createFlags() []flagSpec {
	f := []flagSpec{
		{long: "from", value: "FROM"}, flagCPUs, flagMem, {long: "net"},
		{long: "allow-cidr", value: "CIDR", multi: true}, flagLocal, flagEnv,
	}
	if a.named() {
		f = append(f, flagName)
	}
	if a.ver.atLeast(1, 8, 0) {
		f = append(f, flagLabel)
	}
	// smolvm's source has --dns at 1.9.3 and not at 1.8.0; no release
	// between was read, so the simulator takes it from 1.9.3.
	if a.ver.atLeast(1, 9, 3) {
		f = append(f, flagDNS)
	}
	return f
}

// deleteFlags: `machine delete -f NAME` up to 1.0.1, `machine delete
// --name NAME -f` from 1.0.2.
func (a *app) deleteFlags() []flagSpec {
	if a.named() {
		return []flagSpec{flagName, flagForce}
	}
	return []flagSpec{flagForce}
}

// execFlags: `machine exec --name NAME [-e K=V]... [-w DIR] [--timeout DUR]
// [--stream] -- COMMAND...`. --name has no -n short in any release.
var execFlags = []flagSpec{
	flagName, flagEnv, {long: "workdir", short: 'w', value: "WORKDIR"}, flagTimeout, {long: "stream"},
}

// cpFlags: `machine cp [--mode OCTAL] SRC DST`. smolvm's source has --mode
// at 1.9.3 and not at 1.8.0; no release between was read, so the simulator
// takes it from 1.9.3 (as bottleq's argv does).
func (a *app) cpFlags() []flagSpec {
	if a.ver.atLeast(1, 9, 3) {
		return []flagSpec{flagMode}
	}
	return nil
}

// `machine start|stop --name NAME`, `machine ls --json` and
// `machine status --name NAME --json`.
var (
	nameFlags   = []flagSpec{flagName}
	lsFlags     = []flagSpec{flagJSON}
	statusFlags = []flagSpec{flagName, flagJSON}
)

// machineName returns the machine a create or delete names: the --name
// value from 1.0.2, the one positional NAME before. none is the error for
// a missing positional.
func (a *app) machineName(p *parsed, none error) (string, error) {
	if a.named() {
		if err := noPositionals(p); err != nil {
			return "", err
		}
		if !p.has("name") {
			return "", missing("--name <NAME>")
		}
		return p.get("name"), nil
	}
	switch pos := append(p.pos, p.rest...); len(pos) {
	case 0:
		return "", none
	case 1:
		return pos[0], nil
	default:
		return "", usagef("unexpected argument '%s' found", pos[1])
	}
}

// nameFlag returns --name. smolvm falls back to a machine called "default";
// bottleq always names its machine, so the simulator requires the flag.
func nameFlag(p *parsed) (string, error) {
	if !p.has("name") {
		return "", notSimulated("a command without --name (the machine 'default')")
	}
	return p.get("name"), nil
}
