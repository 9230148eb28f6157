package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var (
	flagName    = flagSpec{long: "name", short: 'n', value: "NAME"}
	flagStorage = flagSpec{long: "storage", value: "STORAGE"}
	flagOverlay = flagSpec{long: "overlay", value: "OVERLAY"}
)

func (a *app) createFlags() []flagSpec {
	f := []flagSpec{
		{long: "image", short: 'I', value: "IMAGE"}, {long: "from", value: "FROM"},
		flagCPUs, flagMem, flagStorage, flagOverlay,
		{long: "volume", short: 'v', value: "VOLUME", multi: true},
		{long: "port", short: 'p', value: "PORT", multi: true},
		{long: "net"}, {long: "net-backend", value: "NET_BACKEND"},
		{long: "allow-cidr", value: "CIDR", multi: true},
		{long: "allow-host", value: "HOST", multi: true},
		{long: "outbound-localhost-only"}, {long: "gpu"}, {long: "gpu-vram", value: "GPU_VRAM"},
		{long: "init", value: "INIT", multi: true},
		{long: "env", short: 'e', value: "ENV", multi: true},
		{long: "workdir", short: 'w', value: "WORKDIR"},
		{long: "ssh-agent"}, {long: "smolfile", short: 's', value: "SMOLFILE"},
	}
	if a.named() {
		f = append(f, flagName)
	}
	if a.ver.atLeast(1, 8, 0) {
		f = append(f, flagSpec{long: "label", value: "LABEL", multi: true})
	}
	return f
}

// create handles `machine create`.
func (a *app) create(args []string) error {
	p, err := parseArgs(args, a.createFlags(), false)
	if err != nil {
		return err
	}
	m := &machine{State: stateCreated, CreatedAt: time.Now().Unix(), NetBackend: p.get("net-backend"), Labels: map[string]string{}}
	if a.named() {
		if len(p.pos) > 0 {
			return usagef("unexpected argument '%s' found", p.pos[0])
		}
		if !p.has("name") {
			return missing("--name <NAME>")
		}
		m.Name, m.Cmd = p.get("name"), p.rest
	} else {
		pos := append(p.pos, p.rest...)
		switch len(pos) {
		case 0:
			m.Name = autoName()
		case 1:
			m.Name = pos[0]
		default:
			return usagef("unexpected argument '%s' found", pos[1])
		}
	}
	a.call.Name, a.call.Image = m.Name, p.get("image")
	if p.has("from") && p.has("image") {
		return usagef("the argument '--from <FROM>' cannot be used with '--image <IMAGE>'")
	}
	if p.has("from") && p.has("smolfile") {
		return usagef("the argument '--from <FROM>' cannot be used with '--smolfile <SMOLFILE>'")
	}
	if m.CPUs, err = uintFlag(p, flagCPUs, 4, 255); err != nil {
		return err
	}
	if m.MemoryMiB, err = uintFlag(p, flagMem, 8192, 1<<32-1); err != nil {
		return err
	}
	if m.StorageGB, err = uintFlag(p, flagStorage, 20, 1<<32-1); err != nil {
		return err
	}
	if m.OverlayGB, err = uintFlag(p, flagOverlay, 10, 1<<32-1); err != nil {
		return err
	}
	if b := m.NetBackend; b != "" && b != "tsi" && b != "virtio-net" {
		return usagef("invalid value '%s' for '--net-backend <NET_BACKEND>'\n  [possible values: tsi, virtio-net]", b)
	}
	var cidrs []string
	for _, c := range p.all("allow-cidr") {
		norm, err := parseCIDR(c)
		if err != nil {
			return usagef("invalid value '%s' for '--allow-cidr <CIDR>': %v", c, err)
		}
		cidrs = append(cidrs, norm)
	}
	for _, v := range p.all("volume") {
		if host, guest, ok := strings.Cut(v, ":"); !ok || host == "" || !strings.HasPrefix(guest, "/") {
			return usagef("invalid value '%s' for '--volume <VOLUME>': expected HOST:GUEST[:ro]", v)
		}
	}
	for _, v := range p.all("port") {
		h, g, ok := strings.Cut(v, ":")
		if _, err1 := strconv.ParseUint(h, 10, 16); !ok || err1 != nil {
			return usagef("invalid value '%s' for '--port <PORT>': expected HOST:GUEST", v)
		}
		if _, err2 := strconv.ParseUint(g, 10, 16); err2 != nil {
			return usagef("invalid value '%s' for '--port <PORT>': expected HOST:GUEST", v)
		}
	}
	for _, l := range p.all("label") {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return usagef("invalid value '%s' for '--label <LABEL>': expected KEY=VALUE", l)
		}
		m.Labels[k] = v
	}

	// Tool-level validation: exit 1 with "Error: ...".
	if err := validateName(m.Name); err != nil {
		return configErr("create machine", err.Error())
	}
	if m.CPUs == 0 || m.MemoryMiB == 0 {
		return configErr("create machine", "--cpus and --mem must be greater than 0")
	}
	// --allow-host names are recorded, never resolved: the simulator does no
	// DNS. Literal IPs join the CIDR allow-list as /32 or /128.
	var hosts []string
	for _, h := range p.all("allow-host") {
		if addr, err := netip.ParseAddr(h); err == nil {
			cidrs = append(cidrs, netip.PrefixFrom(addr, addr.BitLen()).String())
			continue
		}
		if h == "" || strings.ContainsAny(h, ":/ ") {
			return configErr("create machine", fmt.Sprintf("invalid --allow-host '%s': expected a hostname (host:port is not supported)", h))
		}
		hosts = append(hosts, h)
	}
	if p.has("outbound-localhost-only") {
		cidrs = append(cidrs, "127.0.0.0/8", "::1/128")
	}
	policy := len(cidrs) > 0 || len(hosts) > 0
	var src *manifest
	if p.has("from") {
		if m.From, err = filepath.Abs(p.get("from")); err != nil {
			return err
		}
		src, err = readManifest(m.From)
		if errors.Is(err, fs.ErrNotExist) {
			return configErr("create from .smolmachine", "file not found: "+p.get("from"))
		}
		if err != nil {
			return configErr("create from .smolmachine", err.Error())
		}
		m.Manifest, m.Image, m.Entrypoint = src, src.Image, src.Entrypoint
		if len(m.Cmd) == 0 { // a `-- WORKLOAD` given at create wins over the packed cmd
			m.Cmd = src.Cmd
		}
		// cpus/mem override the manifest only when they differ from the defaults.
		if m.CPUs == 4 && src.CPUs > 0 {
			m.CPUs = src.CPUs
		}
		if m.MemoryMiB == 8192 && src.Mem > 0 {
			m.MemoryMiB = src.Mem
		}
		if a.ver.atLeast(1, 8, 0) {
			m.Network = src.Network || p.has("net") || policy
			m.AllowedCIDRs, m.AllowHosts = cidrs, hosts
		} else {
			// v0.8.0–v1.7.x: the --from path hard-codes an empty allow-list, so
			// --allow-cidr/--allow-host are silently dropped (docs/smolvm.md,
			// Network policy).
			m.Network = src.Network || p.has("net")
		}
	} else {
		m.Image, m.Workdir = p.get("image"), p.get("workdir") // --from ignores -w
		m.Network = p.has("net") || policy
		m.AllowedCIDRs, m.AllowHosts = cidrs, hosts
	}
	if a.ver.atLeast(1, 1, 3) && m.NetBackend == "tsi" && len(m.AllowedCIDRs)+len(m.AllowHosts) > 0 {
		return configErr("create machine", "egress policy requires the virtio-net backend; drop --net-backend tsi")
	}
	m.Env = a.envPairs(p.all("env"))
	m.Mounts, m.Ports, m.Init = p.all("volume"), p.all("port"), p.all("init")

	if err := a.gate("create"); err != nil {
		return err
	}
	st, err := a.openStore()
	if err != nil {
		return err
	}
	if src != nil {
		fmt.Fprintln(a.stderr, "Extracting .smolmachine assets...")
	}
	err = st.locked(func() error {
		if old, err := st.get(m.Name); err != nil || old != nil {
			if err != nil {
				return err
			}
			// smolvm's wording is known for v0.8.0 and v1.9.3 (docs/smolvm.md,
			// machine create); 1.9.0 is our chosen boundary.
			suffix := "already exists"
			if a.ver.atLeast(1, 9, 0) {
				suffix = "already exists or is being created"
			}
			return configErr("create machine", fmt.Sprintf("machine '%s' %s", m.Name, suffix))
		}
		root := st.root(m.Name)
		if err := os.RemoveAll(root); err != nil {
			return err
		}
		if err := os.MkdirAll(root, 0o755); err != nil {
			return err
		}
		if err := a.populate(m, root); err != nil {
			os.RemoveAll(root)
			return configErr("create from .smolmachine", err.Error())
		}
		return st.put(m)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "Created machine: %s\n  CPUs: %d, Memory: %d MiB\n", m.Name, m.CPUs, m.MemoryMiB)
	if n := len(m.Mounts); n > 0 {
		fmt.Fprintf(a.stdout, "  Mounts: %d\n", n)
	}
	if n := len(m.Ports); n > 0 {
		fmt.Fprintf(a.stdout, "  Ports: %d\n", n)
	}
	if n := len(m.Init); n > 0 {
		fmt.Fprintf(a.stdout, "  Init: %d commands\n", n)
	}
	fmt.Fprintf(a.stdout, "\nUse 'smolvm machine start --name %s' to start the machine.\n", m.Name)
	fmt.Fprintf(a.stdout, "Then 'smolvm machine exec --name %s -- <command>' to run commands.\n", m.Name)
	return nil
}

// populate fills a new guest root: packed files (v1.0.0+ extracts at create)
// and volume mounts, simulated as symlinks to the host directories.
func (a *app) populate(m *machine, root string) error {
	if m.From != "" && a.ver.atLeast(1, 0, 0) {
		if err := extractRootfs(m.From, root); err != nil {
			return err
		}
	}
	for _, v := range m.Mounts {
		host, guest, _ := strings.Cut(v, ":")
		guest, _, _ = strings.Cut(guest, ":")
		link, err := guestPath(root, guest)
		if err != nil {
			return err
		}
		if abs, err := filepath.Abs(host); err == nil {
			host = abs
		}
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return err
		}
		if err := os.Symlink(host, link); err != nil {
			return err
		}
	}
	return nil
}

func autoName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "vm-" + hex.EncodeToString(b)
}

// nameArg returns the -n/--name value or def, rejecting positionals.
func nameArg(args []string, extra []flagSpec, def string) (*parsed, string, error) {
	p, err := parseArgs(args, append([]flagSpec{flagName}, extra...), false)
	if err != nil {
		return nil, "", err
	}
	if err := noPositionals(p); err != nil {
		return nil, "", err
	}
	if p.has("name") {
		def = p.get("name")
	}
	return p, def, nil
}

// start handles `machine start`.
func (a *app) start(args []string) error {
	_, name, err := nameArg(args, nil, "default")
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
		if m == nil && name == "default" {
			m = &machine{Name: name, State: stateCreated, CPUs: 4, MemoryMiB: 8192, StorageGB: 20, OverlayGB: 10,
				CreatedAt: time.Now().Unix(), Labels: map[string]string{}}
			if err := os.MkdirAll(st.root(name), 0o755); err != nil {
				return err
			}
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
			// ≤0.9.0 re-reads the .smolmachine at every start.
			if _, err := os.Stat(m.From); err != nil {
				return agentErr("start machine", fmt.Sprintf("source .smolmachine not found: %s (was it moved or deleted?)", m.From))
			}
			if !m.StartedOnce {
				if err := extractRootfs(m.From, st.root(name)); err != nil {
					return agentErr("start machine", err.Error())
				}
			}
		}
		if m.From == "" && m.Image != "" && !m.StartedOnce {
			// Image machines pull inside the guest at first start: no network, no pull.
			if !m.Network {
				return agentErr("pull image", fmt.Sprintf("failed to pull '%s': network is disabled for machine '%s' (create it with --net)", m.Image, name))
			}
			fmt.Fprintf(a.stderr, "Pulling %s...\n", m.Image)
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
	_, name, err := nameArg(args, nil, "default")
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

// halt stops a running machine: detached guests are killed and the
// tmpfs-like directories are cleared. Call under the lock.
func (a *app) halt(st *store, m *machine) error {
	for _, pgid := range m.GuestPGIDs {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	for _, d := range []string{"tmp", "run", "dev/shm"} {
		if err := os.RemoveAll(filepath.Join(st.root(m.Name), d)); err != nil {
			return err
		}
	}
	m.State, m.PID, m.GuestPGIDs = stateStopped, 0, nil
	return st.put(m)
}

// delete handles `machine delete` / `machine rm`.
func (a *app) delete(args []string) error {
	force := flagSpec{long: "force", short: 'f'}
	var name string
	if a.named() {
		p, n, err := nameArg(args, []flagSpec{force}, "")
		if err != nil {
			return err
		}
		if !p.has("name") {
			return missing("--name <NAME>")
		}
		if err := a.deleteMachine(n, p.has("force")); err != nil {
			return err
		}
		return nil
	}
	p, err := parseArgs(args, []flagSpec{force}, false)
	if err != nil {
		return err
	}
	pos := append(p.pos, p.rest...)
	switch len(pos) {
	case 0:
		return missing("<NAME>")
	case 1:
		name = pos[0]
	default:
		return usagef("unexpected argument '%s' found", pos[1])
	}
	return a.deleteMachine(name, p.has("force"))
}

func (a *app) deleteMachine(name string, force bool) error {
	st, err := a.begin("delete", name)
	if err != nil {
		return err
	}
	exists := func() error {
		m, err := st.get(name)
		if err == nil && m == nil {
			err = errNotFound(name)
		}
		return err
	}
	if !force {
		if err := st.locked(exists); err != nil {
			return err
		}
		if a.ver.atLeast(1, 17, 0) && !isTerminal(a.stdin) {
			// v1.17.0+ (documented only); smolvm's exact wording is not known.
			return configErr("delete machine", fmt.Sprintf("confirmation required to delete '%s' but stdin is not a terminal; pass --force", name))
		}
		fmt.Fprintf(a.stderr, "Delete machine '%s'? [y/N] ", name)
		line, _ := bufio.NewReader(a.stdin).ReadString('\n')
		if ans := strings.ToLower(strings.TrimSpace(line)); ans != "y" && ans != "yes" {
			fmt.Fprintln(a.stdout, "Cancelled")
			return nil
		}
	}
	return st.locked(func() error {
		m, err := st.get(name)
		if err != nil {
			return err
		}
		if m == nil {
			return errNotFound(name)
		}
		// v0.8.0 deleted without stopping (the VMM was orphaned); v0.8.1+ stops first.
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

// machineView is the JSON object of `ls --json` and `status --json`
// (docs/smolvm.md, machine ls and status).
type machineView struct {
	Name                   string   `json:"name"`
	State                  string   `json:"state"`
	CPUs                   int      `json:"cpus"`
	MemoryMiB              int      `json:"memory_mib"`
	PID                    *int     `json:"pid"`
	Mounts                 int      `json:"mounts"`
	Ports                  int      `json:"ports"`
	CreatedAt              int64    `json:"created_at"`
	StorageGB              int      `json:"storage_gb"`
	OverlayGB              int      `json:"overlay_gb"`
	Image                  *string  `json:"image"`
	Entrypoint             []string `json:"entrypoint"`
	Cmd                    []string `json:"cmd"`
	Ephemeral              bool     `json:"ephemeral"`
	GPU                    bool     `json:"gpu"`
	GPUVRAMMiB             *int     `json:"gpu_vram_mib"`
	RestartPolicy          string   `json:"restart_policy"`
	RestartMaxRetries      int      `json:"restart_max_retries"`
	RestartCount           int      `json:"restart_count"`
	HealthCmd              []string `json:"health_cmd"`
	HealthIntervalSecs     *int     `json:"health_interval_secs"`
	HealthTimeoutSecs      *int     `json:"health_timeout_secs"`
	HealthRetries          *int     `json:"health_retries"`
	HealthStartupGraceSecs *int     `json:"health_startup_grace_secs"`
	Network                bool     `json:"network"`
	*v19View
}

// v19View holds the fields v1.9.x added to the machine JSON.
type v19View struct {
	CUDA             bool              `json:"cuda"`
	Forkable         bool              `json:"forkable"`
	CUDAForkPoolSize *int              `json:"cuda_fork_pool_size"`
	CUDAVRAMLimitMiB *int              `json:"cuda_vram_limit_mib"`
	ForkpointHeld    bool              `json:"forkpoint_held"`
	Labels           map[string]string `json:"labels"`
}

func (a *app) view(m *machine) machineView {
	v := machineView{
		Name: m.Name, State: m.State, CPUs: m.CPUs, MemoryMiB: m.MemoryMiB,
		Mounts: len(m.Mounts), Ports: len(m.Ports), CreatedAt: m.CreatedAt,
		StorageGB: m.StorageGB, OverlayGB: m.OverlayGB,
		Entrypoint: nonNil(m.Entrypoint), Cmd: nonNil(m.Cmd), RestartPolicy: "never", Network: m.Network,
	}
	if m.State == stateRunning {
		v.PID = &m.PID
	}
	if m.Image != "" {
		v.Image = &m.Image
	}
	if a.ver.atLeast(1, 9, 0) {
		labels := m.Labels
		if labels == nil {
			labels = map[string]string{}
		}
		v.v19View = &v19View{Labels: labels}
	}
	return v
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (a *app) printJSON(v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(a.stdout, "%s\n", data)
	return err
}

// ls handles `machine ls` / `machine list`.
func (a *app) ls(args []string) error {
	p, err := parseArgs(args, []flagSpec{{long: "json"}, {long: "verbose", short: 'v'}}, false)
	if err != nil {
		return err
	}
	if err := noPositionals(p); err != nil {
		return err
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
	if p.has("json") {
		views := make([]machineView, 0, len(ms))
		for _, m := range ms {
			views = append(views, a.view(m))
		}
		return a.printJSON(views)
	}
	if len(ms) == 0 {
		fmt.Fprintln(a.stdout, "No machines found")
		return nil
	}
	row := "%-18s  %-8s  %-4s  %-9s  %-6s  %-5s  %-7s  %s\n"
	fmt.Fprintf(a.stdout, row, "NAME", "STATE", "CPUS", "MEMORY", "MOUNTS", "PORTS", "STORAGE", "OVERLAY")
	for _, m := range ms {
		name := m.Name
		if len(name) > 18 {
			name = name[:18]
		}
		fmt.Fprintf(a.stdout, row, name, m.State, strconv.Itoa(m.CPUs), fmt.Sprintf("%d MiB", m.MemoryMiB),
			strconv.Itoa(len(m.Mounts)), strconv.Itoa(len(m.Ports)), fmt.Sprintf("%d GiB", m.StorageGB), fmt.Sprintf("%d GiB", m.OverlayGB))
		if p.has("verbose") {
			fmt.Fprintf(a.stdout, "  image: %s, network: %t\n", m.Image, m.Network)
		}
	}
	return nil
}

// status handles `machine status`.
func (a *app) status(args []string) error {
	p, name, err := nameArg(args, []flagSpec{{long: "json"}}, "default")
	if err != nil {
		return err
	}
	st, err := a.begin("status", name)
	if err != nil {
		return err
	}
	var m *machine
	if err := st.locked(func() (err error) { m, err = st.get(name); return err }); err != nil {
		return err
	}
	switch {
	case m == nil && p.has("json"):
		return configErr("machine status", fmt.Sprintf("machine '%s' not found", name))
	case m == nil:
		return errNotFound(name)
	case p.has("json"):
		return a.printJSON(a.view(m))
	case m.State == stateRunning:
		fmt.Fprintf(a.stdout, "Machine '%s': running (PID: %d)\n", name, m.PID)
	case !a.ver.atLeast(0, 8, 1):
		fmt.Fprintf(a.stdout, "Machine '%s': not running\n", name)
	default:
		fmt.Fprintf(a.stdout, "Machine '%s': %s\n", name, m.State)
	}
	return nil
}

// dataDir handles `machine data-dir`: it prints the guest root.
func (a *app) dataDir(args []string) error {
	var name string
	if a.named() {
		p, n, err := nameArg(args, nil, "")
		if err != nil {
			return err
		}
		if !p.has("name") {
			return missing("--name <NAME>")
		}
		name = n
	} else {
		p, err := parseArgs(args, nil, false)
		if err != nil {
			return err
		}
		if pos := append(p.pos, p.rest...); len(pos) != 1 {
			return missing("<NAME>")
		} else {
			name = pos[0]
		}
	}
	a.call.Name = name
	st, err := a.openStore()
	if err != nil {
		return err
	}
	var m *machine
	if err := st.locked(func() (err error) { m, err = st.get(name); return err }); err != nil {
		return err
	}
	if m == nil && a.ver.atLeast(0, 8, 1) {
		return errNotFound(name)
	}
	fmt.Fprintln(a.stdout, st.root(name))
	return nil
}
