package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// defaultVersion is the smolvm version impersonated when SMOLVM_SIM_VERSION is unset.
const defaultVersion = "1.9.3"

// app is one invocation of the simulator.
type app struct {
	ver      semver
	env      []string
	stdout   io.Writer
	stderr   io.Writer
	stateDir string
	st       *store
	faults   []faultRule
	delays   map[string]time.Duration
	notReady time.Duration
	seed     *uint64
	// packBytes is how many bytes of filler `pack create --image` adds.
	packBytes int64
	call      callRecord
}

// callRecord is one line of STATE/calls.jsonl. It must never hold env values.
type callRecord struct {
	Time  string `json:"time"`
	PID   int    `json:"pid"`
	Op    string `json:"op"`
	Name  string `json:"name"`
	Image string `json:"image"`
	Exit  int    `json:"exit"`
	MS    int64  `json:"ms"`
	Fault bool   `json:"fault,omitempty"`
	// Created is what a successful `machine create` made.
	Created *createdRecord `json:"created,omitempty"`
}

// createdRecord is the part of a created machine that says what it may use:
// its resources and its egress, the allow-list included (which `status
// --json` never shows). Tests read it to check what a worker asked for.
type createdRecord struct {
	CPUs         int      `json:"cpus"`
	MemoryMiB    int      `json:"memory_mib"`
	Network      bool     `json:"network"`
	AllowedCIDRs []string `json:"allowed_cidrs,omitempty"`
	DNS          string   `json:"dns,omitempty"`
}

// run is the whole program; main only wires it to the process.
func run(args []string, env []string, stdout, stderr io.Writer) int {
	start := time.Now()
	a := &app{env: env, stdout: stdout, stderr: stderr}
	code := a.exit(a.main(args))
	a.logCall(code, time.Since(start))
	return code
}

func (a *app) main(args []string) error {
	if err := a.configure(args[0]); err != nil {
		return err
	}
	return a.dispatch(args[1:])
}

// configure reads the SMOLVM_SIM_* environment and prints the v1.7.0+ note line.
func (a *app) configure(exe string) error {
	a.stateDir = a.getenv("SMOLVM_SIM_STATE")
	if a.stateDir == "" {
		if home := a.getenv("HOME"); home != "" {
			a.stateDir = filepath.Join(home, ".smolvm-sim")
		}
	}
	v := a.getenv("SMOLVM_SIM_VERSION")
	if v == "" {
		v = defaultVersion
	}
	var err error
	if a.ver, err = parseSemver(v); err != nil {
		return usagef("invalid SMOLVM_SIM_VERSION: %v", err)
	}
	stem := strings.TrimSuffix(filepath.Base(exe), filepath.Ext(exe))
	// v1.7.0 printed the note for every executable name; later versions only
	// for names other than smolvm/smolvm-bin.
	if a.ver.atLeast(1, 7, 0) && (!a.ver.atLeast(1, 7, 1) || (stem != "smolvm" && stem != "smolvm-bin")) {
		fmt.Fprintf(a.stderr, "note: no packed assets found for '%s'\n", stem)
	}
	if a.faults, err = parseFaults(a.getenv("SMOLVM_SIM_FAULTS")); err != nil {
		return usagef("invalid SMOLVM_SIM_FAULTS: %v", err)
	}
	if a.delays, err = parseDelays(a.getenv("SMOLVM_SIM_DELAY")); err != nil {
		return usagef("invalid SMOLVM_SIM_DELAY: %v", err)
	}
	if s := a.getenv("SMOLVM_SIM_NOT_READY"); s != "" {
		if a.notReady, err = time.ParseDuration(s); err != nil {
			return usagef("invalid SMOLVM_SIM_NOT_READY: %v", err)
		}
	}
	if s := a.getenv("SMOLVM_SIM_PACK_BYTES"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return usagef("invalid SMOLVM_SIM_PACK_BYTES: %q is not a byte count (a whole number, 0 or more)", s)
		}
		a.packBytes = n
	}
	if s := a.getenv("SMOLVM_SIM_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return usagef("invalid SMOLVM_SIM_SEED: %v", err)
		}
		u := uint64(n)
		a.seed = &u
	}
	return nil
}

func (a *app) getenv(key string) string {
	v, _ := a.lookupEnv(key)
	return v
}

func (a *app) lookupEnv(key string) (string, bool) {
	for i := len(a.env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(a.env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// named reports whether machine names are flags (v1.0.2+) rather than positionals.
func (a *app) named() bool { return a.ver.atLeast(1, 0, 2) }

func (a *app) dispatch(args []string) error {
	if len(args) == 0 {
		return usagef("'smolvm' requires a subcommand but one was not provided")
	}
	switch args[0] {
	case "--version":
		a.call.Op = "version"
		fmt.Fprintf(a.stdout, "smolvm %s\n", a.ver)
		return nil
	case "--help", "-h":
		a.call.Op = "help"
		return errHelp
	case "machine":
		return a.machine(args[1:])
	case "pack":
		return a.pack(args[1:])
	}
	return usagef("unrecognized subcommand '%s'", args[0])
}

func (a *app) machine(args []string) error {
	if len(args) == 0 {
		return usagef("'smolvm machine' requires a subcommand but one was not provided")
	}
	cmds := map[string]func([]string) error{
		"create": a.create, "start": a.start, "stop": a.stop, "delete": a.delete,
		"exec": a.exec, "cp": a.cp, "ls": a.ls, "status": a.status,
	}
	f, ok := cmds[args[0]]
	if !ok {
		return usagef("unrecognized subcommand '%s'", args[0])
	}
	a.call.Op = "machine " + args[0]
	return f(args[1:])
}

// exit prints err the way smolvm does and returns the exit code.
func (a *app) exit(err error) int {
	var ue usageError
	var fe *faultError
	var es exitStatus
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errHelp):
		fmt.Fprint(a.stdout, helpText)
		return 0
	case errors.As(err, &ue):
		// clap 4's shape: the error, a usage line, the --help hint.
		fmt.Fprintf(a.stderr, "error: %s\n\nUsage: smolvm [OPTIONS] <COMMAND>\n\nFor more information, try '--help'.\n", ue)
		return 2
	case errors.As(err, &fe):
		fmt.Fprintf(a.stderr, "Error: %s\n", fe.msg)
		return fe.code
	case errors.As(err, &es):
		return int(es)
	}
	fmt.Fprintf(a.stderr, "Error: %s\n", err)
	return 1
}

// logCall appends the invocation to STATE/calls.jsonl with one O_APPEND write.
// It is best effort: logging must never change the outcome of a call.
func (a *app) logCall(code int, d time.Duration) {
	if a.stateDir == "" {
		return
	}
	a.call.Time = time.Now().UTC().Format(time.RFC3339Nano)
	a.call.PID = os.Getpid()
	a.call.Exit = code
	a.call.MS = d.Milliseconds()
	line, err := json.Marshal(a.call)
	if err != nil || os.MkdirAll(a.stateDir, 0o755) != nil {
		return
	}
	f, err := os.OpenFile(filepath.Join(a.stateDir, "calls.jsonl"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write(append(line, '\n'))
}

// begin starts a command about machine name: it records the name in the
// calls log, applies injected latency and faults for op, and opens the
// store.
func (a *app) begin(op, name string) (*store, error) {
	a.call.Name = name
	if err := a.gate(op); err != nil {
		return nil, err
	}
	return a.openStore()
}

// openStore opens the state directory on first use.
func (a *app) openStore() (*store, error) {
	if a.st != nil {
		return a.st, nil
	}
	if a.stateDir == "" {
		return nil, errors.New("smolvm-sim: set SMOLVM_SIM_STATE or HOME")
	}
	st, err := openStore(a.stateDir)
	if err != nil {
		return nil, err
	}
	a.st = st
	return st, nil
}

const helpText = `smolvm-sim: a TEST DOUBLE of the smolvm CLI. It gives NO isolation:
"guest" commands run as plain host processes under a per-machine directory.

It accepts the argv bottleq sends (names positional up to 1.0.1):
  --version
  pack create (--image IMAGE | --from-vm NAME) [--cpus N] [--mem MIB] -o OUT
  machine create (--name NAME | NAME) [--from FILE] [--cpus N] [--mem MIB] [--net]
                 [--allow-cidr CIDR]... [--outbound-localhost-only] [--dns IPV4]
                 [--label K=V]... [-e KEY=VALUE]...
  machine start|stop --name NAME
  machine delete (--name NAME | NAME) -f
  machine exec --name NAME [-e KEY=VALUE]... [-w DIR] [--timeout DUR] [--stream] -- COMMAND...
  machine cp [--mode OCTAL] SRC DST
  machine ls --json
  machine status --name NAME --json
Other smolvm flags and forms are parse errors here.

Environment:
  SMOLVM_SIM_VERSION    version to impersonate, X.Y.Z (default 1.9.3)
  SMOLVM_SIM_STATE      state directory (default $HOME/.smolvm-sim)
  SMOLVM_SIM_FAULTS     ';'-separated OP:WHEN:EXIT[:MESSAGE]; OP in pack, pack-image,
                        pack-vm, create, start, stop, delete, exec, cp, ls, status, *;
                        WHEN is N, N+ or pF; counted across processes in the state dir
  SMOLVM_SIM_SEED       integer seed for pF fault rules
  SMOLVM_SIM_DELAY      comma-separated OP=DURATION, e.g. start=250ms,pack=1s
  SMOLVM_SIM_NOT_READY  duration after start during which exec fails "not running"
  SMOLVM_SIM_PACK_BYTES bytes of filler pack create --image adds to the .smolmachine
`
