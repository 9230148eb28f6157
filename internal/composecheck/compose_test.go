package composecheck

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"

	"github.com/bot-bottle/bottleq/store"
)

// root is the repository root, where docker-compose.yml and Dockerfile are.
const root = "../.."

func readCompose(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// readEnvExample returns the repository's .env.example.
func readEnvExample(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// exampleEnv is the variables .env.example sets, as compose reads them
// from a .env copied from it.
func exampleEnv(t *testing.T) map[string]string {
	t.Helper()
	return parseEnvFile(readEnvExample(t)).set
}

// testSecret is the store's secret key a user writes into .env, which
// .env.example leaves empty.
const testSecret = "0123456789abcdef0123456789abcdef"

// userEnv is the variables of a .env copied from .env.example with what it
// leaves for the user to fill in filled in.
func userEnv(t *testing.T) map[string]string {
	t.Helper()
	env := exampleEnv(t)
	env["BOTTLEQ_STORE_SECRET_KEY"] = testSecret
	return env
}

// userDotenv is .env.example as a user fills it in, as a .env file.
func userDotenv(t *testing.T) string {
	t.Helper()
	return regexp.MustCompile(`(?m)^BOTTLEQ_STORE_SECRET_KEY=$`).ReplaceAllString(readEnvExample(t), "BOTTLEQ_STORE_SECRET_KEY="+testSecret)
}

// requiredVars are the variables docker-compose.yml requires of .env.
var requiredVars = []string{"SMOLVM_DIR_HOST", "BOTTLEQ_STORE_ACCESS_KEY", "BOTTLEQ_STORE_SECRET_KEY"}

// scratchWithEnv is scratch with dotenv written as .env beside the file,
// which docker-compose reads by itself.
func scratchWithEnv(t *testing.T, yml, dotenv string) string {
	t.Helper()
	dir := scratch(t, yml)
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(dotenv), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// scratch writes yml as docker-compose.yml, beside a copy of the
// repository's Dockerfile, into a new temporary directory and returns it.
func scratch(t *testing.T, yml string) string {
	t.Helper()
	dir := t.TempDir()
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), df, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// cmdOf maps a service's command to the bottleq command whose environment
// variables it may set.
var cmdOf = map[string]string{"worker": "worker", "dashboard": "dashboard", "api": "api"}

// awsChain are the variables of the AWS SDK's standard credential chain,
// which package store reads for an s3:// store rather than cmd/NAME: a
// service of a command that reads BOTTLEQ_STORE may set them.
var awsChain = []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_EC2_METADATA_DISABLED"}

// bottleqCommand is the bottleq command a service runs, or "" for another
// program's image (Redis, the store).
func bottleqCommand(s *service) string {
	if len(s.Command) == 0 {
		return ""
	}
	return cmdOf[s.Command[0]]
}

// workerNames returns the services that run the worker, sorted.
func workerNames(p *project) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		if bottleqCommand(p.Services[name]) == "worker" {
			out = append(out, name)
		}
	}
	return out
}

// credLine is a line of the file that sets an S3 key.
var credLine = regexp.MustCompile(`(?m)^\s+((?:AWS|ROOT)_(?:ACCESS_KEY_ID|SECRET_ACCESS_KEY)):\s*(.*)$`)

// problems returns what is wrong with p for bottleq, one string each;
// text is the file as written, whose comments tell users the names they
// need.
func problems(p *project, text string, envRead map[string][]string) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	for _, name := range []string{"redis", "dashboard"} {
		if _, ok := p.Services[name]; !ok {
			bad("no service %s", name)
		}
	}
	workers := workerNames(p)
	if len(workers) < 2 {
		bad("%d worker services (%q): the file shows a pool of two", len(workers), workers)
	}
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s := p.Services[name]
		for _, port := range s.Ports {
			if port.HostIP != "127.0.0.1" {
				bad("%s publishes port %s on %q, want 127.0.0.1", name, port.Target, port.HostIP)
			}
		}
		for _, v := range s.Volumes {
			if _, ok := p.Volumes[v.Source]; v.Type == "volume" && v.Source != "" && !ok {
				bad("%s mounts volume %s, which the top-level volumes do not declare", name, v.Source)
			}
			if v.Type == "bind" {
				bad("%s bind-mounts %s, which Docker creates as an empty directory when it is missing: use a volume with the local driver's bind options", name, v.Source)
			}
		}
		for n := range s.Networks {
			if _, ok := p.Networks[n]; n != "default" && !ok {
				bad("%s joins network %s, which the top-level networks do not declare", name, n)
			}
		}
		if s.Build == nil && bottleqCommand(s) == "" {
			// Another program's image: pinned, so that an upgrade is a
			// change to this file.
			img := s.Image
			if i := strings.LastIndexByte(img, '/'); i >= 0 {
				img = img[i+1:]
			}
			if _, tag, ok := strings.Cut(img, ":"); !ok || tag == "" || tag == "latest" {
				bad("%s runs image %q, which no version tag pins", name, s.Image)
			}
			continue
		}
		if s.Build == nil || s.Build.Dockerfile != "Dockerfile" {
			bad("%s is not built from the Dockerfile", name)
		} else if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
			bad("%s: %v", name, err)
		}
		if dep, ok := s.DependsOn["redis"]; !ok || dep.Condition != "service_healthy" {
			bad("%s does not depend on redis being healthy", name)
		}
		if len(s.Command) == 0 {
			bad("%s has no command", name)
			continue
		}
		cmd, ok := cmdOf[s.Command[0]]
		if !ok {
			bad("%s runs %q, not a bottleq command", name, s.Command[0])
			continue
		}
		for k := range s.Environment {
			if !slices.Contains(envRead[cmd], k) && !(slices.Contains(awsChain, k) && slices.Contains(envRead[cmd], "BOTTLEQ_STORE")) {
				bad("%s sets %s, which cmd/%s does not read", name, k, cmd)
			}
		}
		if s.Environment["REDIS_URL"] == nil || *s.Environment["REDIS_URL"] != "redis://redis:6379" {
			bad("%s: REDIS_URL is not redis://redis:6379", name)
		}
	}
	if r, ok := p.Services["redis"]; ok {
		if r.HealthCheck == nil || !slices.Equal(r.HealthCheck.Test, healthTest{"CMD", "redis-cli", "ping"}) {
			bad("redis has no `redis-cli ping` healthcheck")
		}
		if !slices.ContainsFunc(r.Volumes, func(v *volume) bool {
			return v.Type == "volume" && v.Source != "" && v.Target == "/data"
		}) {
			bad("redis keeps /data in no named volume")
		}
	}
	if d, ok := p.Services["dashboard"]; ok {
		if _, set := d.Environment["BOTTLEQ_DASHBOARD_WRITABLE"]; set || slices.ContainsFunc(d.Command, func(a string) bool {
			f := strings.TrimLeft(a, "-")
			return f != a && (f == "writable" || strings.HasPrefix(f, "writable="))
		}) {
			bad("dashboard sets -writable or BOTTLEQ_DASHBOARD_WRITABLE: compose serves it read-only")
		}
	}
	hosts := map[string]string{} // BOTTLEQ_HOST -> the first worker with it
	for _, name := range workers {
		w := p.Services[name]
		if !slices.ContainsFunc(w.Devices, func(d string) bool { return strings.Split(d, ":")[0] == "/dev/kvm" }) {
			bad("%s does not get /dev/kvm", name)
		}
		bin := env(w, "SMOLVM_BIN")
		if !slices.ContainsFunc(w.Volumes, func(v *volume) bool {
			nv := p.Volumes[v.Source]
			return v.Type == "volume" && v.ReadOnly && strings.HasPrefix(bin, v.Target+"/") &&
				nv != nil && (nv.Driver == "" || nv.Driver == "local") && nv.DriverOpts["type"] == "none" &&
				slices.Contains(strings.Split(nv.DriverOpts["o"], ","), "bind") && strings.HasPrefix(nv.DriverOpts["device"], "/")
		}) {
			bad("%s does not mount smolvm's install directory read-only, from a volume the local driver binds, where SMOLVM_BIN (%q) points", name, bin)
		}
		data := slices.IndexFunc(w.Volumes, func(v *volume) bool {
			return v.Type == "volume" && v.Source != "" && v.Target == "/var/lib/bottleq"
		})
		if data < 0 {
			bad("%s keeps its data dir in no named volume", name)
		} else if nv := p.Volumes[w.Volumes[data].Source]; nv == nil || nv.Name == "" {
			bad("%s's data volume %s has no fixed name: users cannot find their cache and files by it", name, w.Volumes[data].Source)
		} else if !strings.Contains(text, "docker volume inspect "+nv.Name) {
			bad("the comments do not say how to find %s's data volume (docker volume inspect %s)", name, nv.Name)
		}
		if d := w.Environment["BOTTLEQ_DATA_DIR"]; d == nil || *d != "/var/lib/bottleq" {
			bad("%s: BOTTLEQ_DATA_DIR is not /var/lib/bottleq", name)
		}
		if h := env(w, "BOTTLEQ_HOST"); h == "" {
			bad("%s sets no BOTTLEQ_HOST: results and logs cannot tell the pool's workers apart", name)
		} else if first, dup := hosts[h]; dup {
			bad("%s and %s both say BOTTLEQ_HOST %s: results and logs cannot tell them apart", first, name, h)
		} else {
			hosts[h] = name
		}
		out = append(out, listenerProblems(p, name, w)...)
	}
	out = append(out, storeProblems(p, text, workers)...)
	return out
}

// storeProblems checks the pool's store: every worker and the API use one
// BOTTLEQ_STORE, a valid URL; an s3:// store has its keys, set from
// variables compose requires (no key has a default a reader of the file
// knows), and a store run here is waited for, bucket made, by a one-shot.
func storeProblems(p *project, text string, workers []string) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	users := slices.Clone(workers)
	if _, ok := p.Services["api"]; ok {
		users = append(users, "api")
	}
	first := ""
	for _, name := range users {
		s := p.Services[name]
		u := env(s, "BOTTLEQ_STORE")
		if u == "" {
			bad("%s sets no BOTTLEQ_STORE: the pool shares commits, artifacts and packs through one store", name)
			continue
		}
		if first == "" {
			first = name
		} else if v := env(p.Services[first], "BOTTLEQ_STORE"); v != u {
			bad("%s and %s use different stores (BOTTLEQ_STORE): a pool shares one", first, name)
		}
		loc, err := store.ParseURL(u)
		if err != nil {
			bad("%s: BOTTLEQ_STORE: %v", name, err)
			continue
		}
		if loc.Dir != "" {
			continue
		}
		if env(s, "AWS_ACCESS_KEY_ID") == "" || env(s, "AWS_SECRET_ACCESS_KEY") == "" {
			bad("%s: BOTTLEQ_STORE is s3:// but AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is not set", name)
		}
		host := strings.TrimPrefix(strings.TrimPrefix(loc.Endpoint, "http://"), "https://")
		host, _, _ = strings.Cut(host, ":")
		if _, here := p.Services[host]; !here {
			continue
		}
		waits := false
		for dep, d := range s.DependsOn {
			if oneShot, ok := p.Services[dep]; ok && d.Condition == "service_completed_successfully" {
				_, after := oneShot.DependsOn[host]
				waits = waits || after
			}
		}
		if !waits {
			bad("%s does not wait for the store's bucket: it must depend on a one-shot (service_completed_successfully) that makes it once %s runs", name, host)
		}
	}
	for _, m := range credLine.FindAllStringSubmatch(text, -1) {
		if !regexp.MustCompile(`^"?\$\{[A-Z0-9_]+:\?`).MatchString(m[2]) {
			bad("%s is set to %s, not from a variable compose requires (${NAME:?...}): a key in the file is a key everyone knows", m[1], m[2])
		}
	}
	return out
}

// env is the value a service sets for an environment variable, or "".
func env(s *service, name string) string {
	if v := s.Environment[name]; v != nil {
		return *v
	}
	return ""
}

// listenerProblems checks worker name's listeners: its egress proxy on an
// address with nothing else on it (a VM may reach every port of the
// proxy's address), and its metrics reachable by a scraper.
func listenerProblems(p *project, name string, w *service) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	// aliasNet is the one network on which name is an alias of the worker.
	aliasNet := func(name string) (string, bool) {
		var found []string
		for n, a := range w.Networks {
			if a != nil && slices.Contains(a.Aliases, name) {
				found = append(found, n)
			}
		}
		if len(found) != 1 {
			return "", false
		}
		return found[0], true
	}
	wildcard := func(host string) bool { return host == "" || host == "0.0.0.0" || host == "::" }

	listen := env(w, "BOTTLEQ_EGRESS_LISTEN")
	proxyHost, proxyPort, err := net.SplitHostPort(listen)
	proxyNet, ok := aliasNet(proxyHost)
	switch {
	case listen == "":
		bad("%s runs no egress proxy (BOTTLEQ_EGRESS_LISTEN): agents can reach no API", name)
	case err != nil:
		bad("%s: BOTTLEQ_EGRESS_LISTEN %q is not HOST:PORT", name, listen)
	case !ok:
		bad("%s: BOTTLEQ_EGRESS_LISTEN's host %s is not an alias of the worker on exactly one network", name, proxyHost)
	case proxyNet == "default":
		bad("%s's egress proxy listens on its default network, whose address is shared with its other listeners and reachable by the other services", name)
	default:
		if n := p.Networks[proxyNet]; n == nil || !n.Internal {
			bad("network %s, where %s's egress proxy listens, is not internal", proxyNet, name)
		}
		for _, other := range slices.Sorted(maps.Keys(p.Services)) {
			if _, joins := p.Services[other].Networks[proxyNet]; joins && p.Services[other] != w {
				bad("%s joins %s, %s's egress proxy's network", other, proxyNet, name)
			}
		}
		for _, pt := range w.Ports {
			if pt.Target == proxyPort {
				bad("%s publishes the egress proxy's port %s", name, proxyPort)
			}
		}
	}

	metrics := env(w, "BOTTLEQ_METRICS_ADDR")
	host, metricsPort, err := net.SplitHostPort(metrics)
	metricsNet, ok := aliasNet(host)
	switch {
	case metrics == "" || metrics == "off":
		bad("%s's metrics are not reachable by a scraper: BOTTLEQ_METRICS_ADDR is %q", name, metrics)
	case err != nil:
		bad("%s: BOTTLEQ_METRICS_ADDR %q is not HOST:PORT", name, metrics)
	case wildcard(host):
		bad("%s's metrics listen on every interface, so on the egress proxy's address too, where VMs reach them", name)
	case !ok:
		bad("%s: BOTTLEQ_METRICS_ADDR's host %s is not an alias of the worker on exactly one network", name, host)
	case metricsNet == proxyNet:
		bad("%s's metrics listen on the egress proxy's address, where VMs reach them", name)
	}
	if err == nil && !slices.ContainsFunc(w.Ports, func(pt *port) bool { return pt.Target == metricsPort && pt.HostIP == "127.0.0.1" }) {
		bad("%s does not publish its metrics port %s on 127.0.0.1", name, metricsPort)
	}
	return out
}

// envNamesRead returns the string constants in cmd/NAME's non-test Go files
// that look like environment variable names (REDIS_URL, BOTTLEQ_...).
func envNamesRead(t *testing.T, name string) []string {
	t.Helper()
	dir := filepath.Join(root, "cmd", name)
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s: %v", dir, err)
	}
	envName := regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$`)
	var names []string
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil && envName.MatchString(s) {
					names = append(names, s)
				}
			}
			return true
		})
	}
	return names
}

func envRead(t *testing.T) map[string][]string {
	t.Helper()
	m := map[string][]string{}
	for _, cmd := range cmdOf {
		m[cmd] = envNamesRead(t, cmd)
		if !slices.Contains(m[cmd], "REDIS_URL") {
			t.Fatalf("found no REDIS_URL in cmd/%s: %v", cmd, m[cmd])
		}
	}
	return m
}

func TestComposeFile(t *testing.T) {
	p, err := loadFile(root, userEnv(t))
	if err != nil {
		t.Fatalf("docker-compose.yml does not load with .env.example's settings, filled in: %v", err)
	}
	for _, problem := range problems(p, readCompose(t), envRead(t)) {
		t.Error(problem)
	}
	for _, name := range requiredVars {
		env := userEnv(t)
		delete(env, name)
		if _, err := loadFile(root, env); err == nil || !strings.Contains(err.Error(), name+" is required: set "+name+" in .env") {
			t.Errorf("without %s: %v, want the file to say it is required", name, err)
		}
	}
	if _, err := loadFile(root, exampleEnv(t)); err == nil || !strings.Contains(err.Error(), "BOTTLEQ_STORE_SECRET_KEY is required") {
		t.Errorf("with .env.example as it is: %v, want the empty secret refused", err)
	}
}

// TestComposeChecksCatch breaks docker-compose.yml, in a copy in a
// temporary directory, in the ways the checks are for, and expects each to
// be caught.
func TestComposeChecksCatch(t *testing.T) {
	t.Parallel()
	good := readCompose(t)
	env := envRead(t)
	settings := userEnv(t)
	for _, tt := range []struct {
		name, old, new, want string
	}{
		{"port on every interface", `"127.0.0.1:8080:8080"`, `"8080:8080"`, `dashboard publishes port 8080 on ""`},
		{"port on a public address", `"127.0.0.1:6379:6379"`, `"0.0.0.0:6379:6379"`, `redis publishes port 6379 on "0.0.0.0"`},
		{"store on a public address", `"127.0.0.1:7070:7070"`, `"7070:7070"`, `store publishes port 7070 on ""`},
		{"long-form port on a public address", `- "127.0.0.1:8080:8080"`, "- target: 8080\n        published: \"8080\"\n        host_ip: 0.0.0.0", `dashboard publishes port 8080 on "0.0.0.0"`},
		{"no healthcheck", `test: ["CMD", "redis-cli", "ping"]`, `test: ["CMD", "true"]`, "redis has no `redis-cli ping` healthcheck"},
		{"no kvm", "devices:\n      - /dev/kvm", "devices:\n      - /dev/null", "worker-1 does not get /dev/kvm"},
		{"started, not healthy", "condition: service_healthy", "condition: service_started", "worker-1 does not depend on redis being healthy"},
		{"depends_on as a list", "depends_on:\n      redis:\n        condition: service_healthy\n      store-init:\n        condition: service_completed_successfully", "depends_on: [redis, store-init]", "worker-1 does not depend on redis being healthy"},
		{"unknown variable", "BOTTLEQ_HOST:", "BOTTLEQ_HOSTNAME:", "worker-1 sets BOTTLEQ_HOSTNAME, which cmd/worker does not read"},
		{"wrong Redis", "REDIS_URL: redis://redis:6379\n      # Inside", "REDIS_URL: redis://localhost:6379\n      # Inside", "dashboard: REDIS_URL is not redis://redis:6379"},
		{"not a bottleq command", `command: ["dashboard"]`, `command: ["asynqmon"]`, `dashboard runs "asynqmon", not a bottleq command`},
		{"dashboard writable by env", "BOTTLEQ_DASHBOARD_ADDR: 0.0.0.0:8080\n", "BOTTLEQ_DASHBOARD_ADDR: 0.0.0.0:8080\n      BOTTLEQ_DASHBOARD_WRITABLE: \"true\"\n", "dashboard sets -writable"},
		{"dashboard writable by flag", `command: ["dashboard"]`, `command: ["dashboard", "-writable"]`, "dashboard sets -writable"},
		{"dashboard writable by a bare name", "      BOTTLEQ_DASHBOARD_ADDR: 0.0.0.0:8080\n", "      BOTTLEQ_DASHBOARD_ADDR: 0.0.0.0:8080\n      BOTTLEQ_DASHBOARD_WRITABLE:\n", "dashboard sets -writable"},
		{"smolvm writable", "smolvm-install:/opt/smolvm:ro", "smolvm-install:/opt/smolvm", "worker-1 does not mount smolvm's install directory read-only"},
		{"smolvm by a plain bind", "- smolvm-install:/opt/smolvm:ro", "- ${SMOLVM_DIR_HOST}:/opt/smolvm:ro", "worker-1 bind-mounts /home/you/.smolvm, which Docker creates"},
		{"smolvm by a long-form bind", "- smolvm-install:/opt/smolvm:ro", "- type: bind\n        source: ${SMOLVM_DIR_HOST}\n        target: /opt/smolvm\n        read_only: true", "worker-1 bind-mounts /home/you/.smolvm, which Docker creates"},
		{"smolvm volume not a bind", "      o: bind\n", "      o: ro\n", "worker-1 does not mount smolvm's install directory"},
		{"smolvm volume with a relative device", "      device: \"${SMOLVM_DIR_HOST", "      device: \"smolvm${SMOLVM_DIR_HOST", "worker-1 does not mount smolvm's install directory"},
		{"SMOLVM_BIN outside the mount", "SMOLVM_BIN: /opt/smolvm/smolvm", "SMOLVM_BIN: /usr/local/bin/smolvm", "worker-1 does not mount smolvm's install directory read-only, from a volume the local driver binds, where SMOLVM_BIN (\"/usr/local/bin/smolvm\")"},
		{"data volume named by the project", "    name: bottleq-data-1\n", "", "worker-1's data volume bottleq-data-1 has no fixed name"},
		{"data volume not documented", "docker volume inspect bottleq-data-1", "docker volume ls", "the comments do not say how to find worker-1's data volume (docker volume inspect bottleq-data-1)"},
		{"no egress proxy", "      BOTTLEQ_EGRESS_LISTEN: worker-1-egress:3128\n", "", "worker-1 runs no egress proxy"},
		{"egress proxy on every interface", "BOTTLEQ_EGRESS_LISTEN: worker-1-egress:3128", "BOTTLEQ_EGRESS_LISTEN: 0.0.0.0:3128", "worker-1: BOTTLEQ_EGRESS_LISTEN's host 0.0.0.0 is not an alias of the worker"},
		{"egress proxy on the default network", "BOTTLEQ_EGRESS_LISTEN: worker-1-egress:3128", "BOTTLEQ_EGRESS_LISTEN: worker-1-metrics:3128", "worker-1's egress proxy listens on its default network"},
		{"egress network not internal", "    internal: true", "    internal: false", "network vm-egress-1, where worker-1's egress proxy listens, is not internal"},
		{"another service on the egress network", "    command: [\"dashboard\"]\n", "    command: [\"dashboard\"]\n    networks: [default, vm-egress-1]\n", "dashboard joins vm-egress-1, worker-1's egress proxy's network"},
		{"workers share an egress network", "      vm-egress-2:\n        aliases: [worker-2-egress]", "      vm-egress-1:\n        aliases: [worker-2-egress]", "worker-2 joins vm-egress-1, worker-1's egress proxy's network"},
		{"egress port published", `"127.0.0.1:9400:9400"`, "\"127.0.0.1:9400:9400\"\n      - \"127.0.0.1:3128:3128\"", "worker-1 publishes the egress proxy's port 3128"},
		{"undeclared network", "      vm-egress-1:\n        aliases", "      vm-egres:\n        aliases", "worker-1 joins network vm-egres, which the top-level networks do not declare"},
		{"metrics off", "BOTTLEQ_METRICS_ADDR: worker-1-metrics:9400", "BOTTLEQ_METRICS_ADDR: \"off\"", `worker-1's metrics are not reachable by a scraper: BOTTLEQ_METRICS_ADDR is "off"`},
		{"metrics on loopback", "BOTTLEQ_METRICS_ADDR: worker-1-metrics:9400", "BOTTLEQ_METRICS_ADDR: 127.0.0.1:9400", "worker-1: BOTTLEQ_METRICS_ADDR's host 127.0.0.1 is not an alias of the worker"},
		{"metrics on every interface", "BOTTLEQ_METRICS_ADDR: worker-1-metrics:9400", "BOTTLEQ_METRICS_ADDR: 0.0.0.0:9400", "worker-1's metrics listen on every interface"},
		{"metrics on an empty host", "BOTTLEQ_METRICS_ADDR: worker-1-metrics:9400", "BOTTLEQ_METRICS_ADDR: \":9400\"", "worker-1's metrics listen on every interface"},
		{"metrics beside the proxy", "BOTTLEQ_METRICS_ADDR: worker-1-metrics:9400", "BOTTLEQ_METRICS_ADDR: worker-1-egress:9400", "worker-1's metrics listen on the egress proxy's address"},
		{"metrics not published", `"127.0.0.1:9400:9400"`, `"127.0.0.1:9400:9401"`, "worker-1 does not publish its metrics port 9400 on 127.0.0.1"},
		{"data dir in the container", "- bottleq-data-1:/var/lib/bottleq", "- /var/lib/bottleq", "worker-1 keeps its data dir in no named volume"},
		{"Redis data in the container", "- redis-data:/data", "- /data", "redis keeps /data in no named volume"},
		{"undeclared volume", "\n  bottleq-data-1:", "\n  bottleq-date-1:", "worker-1 mounts volume bottleq-data-1, which the top-level volumes do not declare"},
		{"no Dockerfile", "dockerfile: Dockerfile\n    image: bottleq:latest\n    command: [\"worker\"]", "dockerfile: Dockerfile.worker\n    image: bottleq:latest\n    command: [\"worker\"]", "worker-1 is not built from the Dockerfile"},
		{"no dashboard", "\n  dashboard:\n", "\n  dashbaord:\n", "no service dashboard"},
		{"one worker", "    command: [\"worker\"]", "    command: [\"dashboard\"]", `1 worker services (["worker-2"]): the file shows a pool of two`},
		{"two workers, one host name", "BOTTLEQ_HOST: bottleq-worker-2", "BOTTLEQ_HOST: bottleq-worker-1", "worker-1 and worker-2 both say BOTTLEQ_HOST bottleq-worker-1"},
		{"a worker without the store", "      # The pool's store (see the top of this file).\n      BOTTLEQ_STORE:", "      # The pool's store (see the top of this file).\n      BOTTLEQ_STOREX:", "worker-1 sets no BOTTLEQ_STORE: the pool shares"},
		{"a worker with another store", "BOTTLEQ_STORE: \"s3://bottleq/pool?", "BOTTLEQ_STORE: \"s3://bottleq/mine?", "worker-1 and worker-2 use different stores (BOTTLEQ_STORE)"},
		{"a bad store URL", "BOTTLEQ_STORE: \"s3://bottleq/pool?", "BOTTLEQ_STORE: \"s3://Bottleq/pool?", `worker-1: BOTTLEQ_STORE: store: bucket: "Bottleq" is not a valid bucket name`},
		{"the API without its keys", "AWS_SECRET_ACCESS_KEY: \"${BOTTLEQ_STORE_SECRET_KEY:?set BOTTLEQ_STORE_SECRET_KEY in .env to a long random secret (see .env.example)}\"\n      BOTTLEQ_LOG_FORMAT: json\n    ports:\n      - \"127.0.0.1:8090", "BOTTLEQ_LOG_FORMAT: json\n    ports:\n      - \"127.0.0.1:8090", "api: BOTTLEQ_STORE is s3:// but AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is not set"},
		{"a worker before the bucket", "      store-init:\n        condition: service_completed_successfully", "      store-init:\n        condition: service_started", "worker-1 does not wait for the store's bucket"},
		{"a key in the file", "ROOT_SECRET_ACCESS_KEY: \"${BOTTLEQ_STORE_SECRET_KEY:?set BOTTLEQ_STORE_SECRET_KEY in .env to a long random secret (see .env.example)}\"", "ROOT_SECRET_ACCESS_KEY: changeme", "ROOT_SECRET_ACCESS_KEY is set to changeme, not from a variable compose requires"},
		{"a key with a default", "ROOT_ACCESS_KEY_ID: \"${BOTTLEQ_STORE_ACCESS_KEY:?", "ROOT_ACCESS_KEY_ID: \"${BOTTLEQ_STORE_ACCESS_KEY:-admin}${BOTTLEQ_STORE_ACCESS_KEY:?", "ROOT_ACCESS_KEY_ID is set to"},
		{"store image unpinned", "image: versity/versitygw:v1.8.0", "image: versity/versitygw", `store runs image "versity/versitygw", which no version tag pins`},
		{"store-init image latest", "image: amazon/aws-cli:2.17.0", "image: amazon/aws-cli:latest", `store-init runs image "amazon/aws-cli:latest", which no version tag pins`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if !strings.Contains(good, tt.old) {
				t.Fatalf("docker-compose.yml no longer has %q: update this case", tt.old)
			}
			broken := strings.Replace(good, tt.old, tt.new, 1)
			p, err := loadFile(scratch(t, broken), settings)
			if err != nil {
				t.Fatalf("broken file does not load: %v", err)
			}
			got := problems(p, broken, env)
			if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, tt.want) }) {
				t.Errorf("problems = %q, want one starting %q", got, tt.want)
			}
		})
	}
	for _, tt := range []struct{ name, old, new, want string }{
		{"misspelt key", "    devices:", "    device:", "field device not found"},
		{"misspelt top-level key", "\nvolumes:\n", "\nvolume:\n", "field volume not found"},
		{"key twice", "    init: true\n    devices:", "    init: true\n    init: false\n    devices:", "field init already set"},
		{"lone $", "${KVM_GID:-kvm}", "$-kvm", "a $ that starts no variable"},
		{"required variable unset", "${BOTTLEQ_CONCURRENCY:-4}", "${BOTTLEQ_CONCURRENCY:?set it}", "BOTTLEQ_CONCURRENCY is required"},
		{"bad port", `"127.0.0.1:8080:8080"`, `"127.0.0.1:8080:8080:1"`, "is not [HOST_IP:][PUBLISHED:]TARGET"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if !strings.Contains(good, tt.old) {
				t.Fatalf("docker-compose.yml no longer has %q: update this case", tt.old)
			}
			_, err := loadFile(scratch(t, strings.Replace(good, tt.old, tt.new, 1)), settings)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("load: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestComposeInterpolation(t *testing.T) {
	t.Parallel()
	p, err := loadFile(root, map[string]string{
		"SMOLVM_DIR_HOST":          "/srv/smolvm",
		"KVM_GID":                  "993",
		"BOTTLEQ_STORE_ACCESS_KEY": "pool-key",
		"BOTTLEQ_STORE_SECRET_KEY": testSecret,
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range p.Services {
		for k, want := range map[string]string{"AWS_ACCESS_KEY_ID": "pool-key", "ROOT_ACCESS_KEY_ID": "pool-key", "AWS_SECRET_ACCESS_KEY": testSecret, "ROOT_SECRET_ACCESS_KEY": testSecret} {
			if v := s.Environment[k]; v != nil && *v != want {
				t.Errorf("%s: %s = %q, want %q", name, k, *v, want)
			}
		}
	}
	w := p.Services["worker-1"]
	if got := p.Volumes["smolvm-install"].DriverOpts["device"]; got != "/srv/smolvm" {
		t.Errorf("smolvm-install binds %q, want SMOLVM_DIR_HOST's /srv/smolvm:\n%s", got, dump(t, p.Volumes))
	}
	if !slices.Equal(w.GroupAdd, []string{"993"}) {
		t.Errorf("group_add = %q, want KVM_GID's [993]", w.GroupAdd)
	}
}

func TestExpand(t *testing.T) {
	t.Parallel()
	env := map[string]string{"SET": "v", "EMPTY": ""}
	for _, tt := range []struct{ in, want, err string }{
		{in: "plain", want: "plain"},
		{in: "$SET/${SET}", want: "v/v"},
		{in: "a$$b $$SET", want: "a$b $SET"},
		{in: "${UNSET}|$UNSET", want: "|"},
		{in: "${SET:-d} ${EMPTY:-d} ${UNSET:-d}", want: "v d d"},
		{in: "${SET-d} ${EMPTY-d} ${UNSET-d}", want: "v  d"},
		{in: "${SET:+r} ${EMPTY:+r} ${UNSET:+r}", want: "r  "},
		{in: "${SET+r} ${EMPTY+r} ${UNSET+r}", want: "r r "},
		{in: "${SET:?m} ${EMPTY?m}", want: "v "},
		{in: "${EMPTY:?set EMPTY}", err: "EMPTY is required: set EMPTY"},
		{in: "${UNSET?m}", err: "UNSET is required"},
		{in: "${UNSET:-${SET}}", err: "a variable inside a default"},
		{in: "${SET", err: "${ without }"},
		{in: "${}", err: "no variable name"},
		{in: "${SET/a/b}", err: "unknown operator"},
		{in: "cost: 5$", err: "a $ that starts no variable"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := expand(tt.in, env)
			switch {
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Errorf("expand(%q) = %q, %v; want an error with %q", tt.in, got, err, tt.err)
			case tt.err == "" && (err != nil || got != tt.want):
				t.Errorf("expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// dump returns v as YAML, to show in a failure.
func dump(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDockerComposeConfig runs Debian's docker-compose (apt-get install
// docker-compose), which validates a file against the Compose schema
// without a Docker engine: on docker-compose.yml with a .env copied from
// .env.example, as a user runs it; without one, which must fail on the
// required SMOLVM_DIR_HOST; on a broken copy; and, with variables set in
// several ways, to check that load reads the file as docker-compose
// resolves it.
func TestDockerComposeConfig(t *testing.T) {
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Skipf("skipping: docker-compose is not installed (apt-get install docker-compose): %v", err)
	}
	config := func(dir string, env map[string]string, args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"-f", filepath.Join(dir, "docker-compose.yml"), "config"}, args...)...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	good, example, filled := readCompose(t), readEnvExample(t), userDotenv(t)
	if out, err := config(scratchWithEnv(t, good, filled), nil, "-q"); err != nil {
		t.Errorf("docker-compose config -q, with .env from .env.example filled in: %v\n%s", err, out)
	}
	if out, err := config(scratch(t, good), nil, "-q"); err == nil || !strings.Contains(out, " in .env") {
		t.Errorf("docker-compose config -q without .env: %v, want it refused for a required variable:\n%s", err, out)
	}
	if out, err := config(scratchWithEnv(t, good, example), nil, "-q"); err == nil || !strings.Contains(out, "set BOTTLEQ_STORE_SECRET_KEY in .env") {
		t.Errorf("docker-compose config -q with .env.example as it is: %v, want it refused for the empty secret:\n%s", err, out)
	}
	if out, err := config(scratchWithEnv(t, strings.Replace(good, "    devices:", "    device:", 1), filled), nil, "-q"); err == nil {
		t.Errorf("docker-compose accepted a misspelt key:\n%s", out)
	}
	for _, tt := range []struct {
		name   string
		dotenv string
		env    map[string]string
	}{
		{"only the required variables", "", map[string]string{"SMOLVM_DIR_HOST": "/srv/smolvm", "BOTTLEQ_STORE_ACCESS_KEY": "k", "BOTTLEQ_STORE_SECRET_KEY": testSecret}},
		{"every variable", "", map[string]string{
			"SMOLVM_DIR_HOST":              "/opt/smolvm",
			"KVM_GID":                      "993",
			"BOTTLEQ_CONCURRENCY":          "8",
			"BOTTLEQ_EGRESS_ALLOW_PRIVATE": "true",
			"BOTTLEQ_API_DIR_HOST":         "/srv/api",
			"BOTTLEQ_STORE_ACCESS_KEY":     "pool",
			"BOTTLEQ_STORE_SECRET_KEY":     testSecret,
		}},
		{".env from .env.example, filled in", filled, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := scratchWithEnv(t, good, tt.dotenv)
			resolved, err := config(dir, tt.env)
			if err != nil {
				t.Fatalf("docker-compose config: %v\n%s", err, resolved)
			}
			theirs, err := load([]byte(resolved), dir, nil)
			if err != nil {
				t.Fatalf("docker-compose's resolved file does not load: %v\n%s", err, resolved)
			}
			env := tt.env
			if tt.dotenv != "" {
				env = parseEnvFile(tt.dotenv).set
			}
			ours, err := loadFile(dir, env)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range slices.Sorted(maps.Keys(theirs.Services)) {
				if !reflect.DeepEqual(ours.Services[name], theirs.Services[name]) {
					t.Errorf("service %s: load reads\n%sdocker-compose resolves\n%s", name, dump(t, ours.Services[name]), dump(t, theirs.Services[name]))
				}
			}
			if len(ours.Services) != len(theirs.Services) {
				t.Errorf("load reads %d services, docker-compose %d", len(ours.Services), len(theirs.Services))
			}
			for _, name := range slices.Sorted(maps.Keys(theirs.Volumes)) {
				if a, b := orEmpty(ours.Volumes[name]), orEmpty(theirs.Volumes[name]); !reflect.DeepEqual(a, b) {
					t.Errorf("volume %s: load reads\n%sdocker-compose resolves\n%s", name, dump(t, a), dump(t, b))
				}
			}
			for _, name := range slices.Sorted(maps.Keys(theirs.Networks)) {
				if a, b := orEmpty(ours.Networks[name]), orEmpty(theirs.Networks[name]); !reflect.DeepEqual(a, b) {
					t.Errorf("network %s: load reads\n%sdocker-compose resolves\n%s", name, dump(t, a), dump(t, b))
				}
			}
			if len(ours.Volumes) != len(theirs.Volumes) || len(ours.Networks) != len(theirs.Networks) {
				t.Errorf("load reads %d volumes and %d networks, docker-compose %d and %d", len(ours.Volumes), len(ours.Networks), len(theirs.Volumes), len(theirs.Networks))
			}
		})
	}
}

// orEmpty is *p, or T's zero value for a nil p (a volume or network
// declared bare, which docker-compose prints as {}).
func orEmpty[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// TestDockerfile checks what the image promises without building it: it
// builds every command with the go.mod's Go release and CGO off, runs as a
// non-root user, and starts the worker by default.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (1\.\d+)`).FindStringSubmatch(string(mod))
	if goVersion == nil {
		t.Fatal("go.mod has no go directive")
	}
	for _, want := range []string{
		"FROM golang:" + goVersion[1] + "-",
		"CGO_ENABLED=0",
		"FROM debian:bookworm-slim",
		`CMD ["worker"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	build := regexp.MustCompile(`(?m)^RUN go build .*$`).FindString(df)
	for _, cmd := range []string{"worker", "enqueue", "dashboard", "api"} {
		if !strings.Contains(build, " ./cmd/"+cmd) {
			t.Errorf("Dockerfile's go build %q does not build ./cmd/%s", build, cmd)
		}
		if _, err := os.Stat(filepath.Join(root, "cmd", cmd, "main.go")); err != nil {
			t.Errorf("the image builds ./cmd/%s: %v", cmd, err)
		}
	}
	users := regexp.MustCompile(`(?m)^USER (\S+)`).FindAllStringSubmatch(df, -1)
	if len(users) == 0 || users[len(users)-1][1] == "root" || users[len(users)-1][1] == "0" {
		t.Errorf("the image runs as root: USER lines %q", users)
	}
}
