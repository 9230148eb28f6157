package composecheck

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
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

// load parses compose YAML as `docker compose` would, with env as the
// environment for interpolation.
func load(t *testing.T, yaml string, env map[string]string) (*types.Project, error) {
	t.Helper()
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	return loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  abs,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(abs, "docker-compose.yml"), Content: []byte(yaml)}},
		Environment: env,
	}, func(o *loader.Options) { o.SetProjectName("bottleq", true) })
}

// cmdOf maps a service's command to the bottleq command whose environment
// variables it may set.
var cmdOf = map[string]string{"worker": "worker", "dashboard": "dashboard"}

// problems returns what is wrong with p for bottleq, one string each.
func problems(p *types.Project, envRead map[string][]string) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	for _, name := range []string{"redis", "worker", "dashboard"} {
		if _, ok := p.Services[name]; !ok {
			bad("no service %s", name)
		}
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range p.Services {
			if !yield(n) {
				return
			}
		}
	}) {
		s := p.Services[name]
		for _, port := range s.Ports {
			if port.HostIP != "127.0.0.1" {
				bad("%s publishes port %d on %q, want 127.0.0.1", name, port.Target, port.HostIP)
			}
		}
		if name == "redis" {
			continue
		}
		if s.Build == nil || s.Build.Dockerfile != "Dockerfile" {
			bad("%s is not built from the Dockerfile", name)
		} else if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
			bad("%s: %v", name, err)
		}
		if dep, ok := s.DependsOn["redis"]; !ok || dep.Condition != types.ServiceConditionHealthy {
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
			if !slices.Contains(envRead[cmd], k) {
				bad("%s sets %s, which cmd/%s does not read", name, k, cmd)
			}
		}
		if s.Environment["REDIS_URL"] == nil || *s.Environment["REDIS_URL"] != "redis://redis:6379" {
			bad("%s: REDIS_URL is not redis://redis:6379", name)
		}
	}
	if r, ok := p.Services["redis"]; ok {
		if r.HealthCheck == nil || !slices.Equal(r.HealthCheck.Test, types.HealthCheckTest{"CMD", "redis-cli", "ping"}) {
			bad("redis has no `redis-cli ping` healthcheck")
		}
		if !slices.ContainsFunc(r.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Type == types.VolumeTypeVolume && v.Target == "/data"
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
	if w, ok := p.Services["worker"]; ok {
		if !slices.ContainsFunc(w.Devices, func(d types.DeviceMapping) bool { return d.Source == "/dev/kvm" }) {
			bad("worker does not get /dev/kvm")
		}
		if !slices.ContainsFunc(w.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Type == types.VolumeTypeBind && v.Target == "/usr/local/bin/smolvm" && v.ReadOnly
		}) {
			bad("worker does not mount smolvm read-only at /usr/local/bin/smolvm")
		}
		if !slices.ContainsFunc(w.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Type == types.VolumeTypeVolume && v.Target == "/var/lib/bottleq"
		}) {
			bad("worker keeps its data dir in no named volume")
		}
		if d := w.Environment["BOTTLEQ_DATA_DIR"]; d == nil || *d != "/var/lib/bottleq" {
			bad("worker: BOTTLEQ_DATA_DIR is not /var/lib/bottleq")
		}
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
	p, err := load(t, readCompose(t), nil)
	if err != nil {
		t.Fatalf("docker-compose.yml does not load: %v", err)
	}
	for _, problem := range problems(p, envRead(t)) {
		t.Error(problem)
	}
}

// TestComposeChecksCatch breaks docker-compose.yml in the ways the checks
// are for, and expects each to be caught.
func TestComposeChecksCatch(t *testing.T) {
	good := readCompose(t)
	env := envRead(t)
	for _, tt := range []struct {
		name, old, new, want string
	}{
		{"port on every interface", `"127.0.0.1:8080:8080"`, `"8080:8080"`, `dashboard publishes port 8080 on ""`},
		{"port on a public address", `"127.0.0.1:6379:6379"`, `"0.0.0.0:6379:6379"`, `redis publishes port 6379 on "0.0.0.0"`},
		{"no healthcheck", `test: ["CMD", "redis-cli", "ping"]`, `test: ["CMD", "true"]`, "redis has no `redis-cli ping` healthcheck"},
		{"no kvm", "devices:\n      - /dev/kvm", "devices:\n      - /dev/null", "worker does not get /dev/kvm"},
		{"started, not healthy", "condition: service_healthy", "condition: service_started", "worker does not depend on redis being healthy"},
		{"unknown variable", "BOTTLEQ_HOST:", "BOTTLEQ_HOSTNAME:", "worker sets BOTTLEQ_HOSTNAME, which cmd/worker does not read"},
		{"dashboard writable by env", "BOTTLEQ_DASHBOARD_ADDR: 0.0.0.0:8080\n", "BOTTLEQ_DASHBOARD_ADDR: 0.0.0.0:8080\n      BOTTLEQ_DASHBOARD_WRITABLE: \"true\"\n", "dashboard sets -writable"},
		{"dashboard writable by flag", `command: ["dashboard"]`, `command: ["dashboard", "-writable"]`, "dashboard sets -writable"},
		{"smolvm writable", "/usr/local/bin/smolvm:ro", "/usr/local/bin/smolvm", "worker does not mount smolvm read-only"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(good, tt.old) {
				t.Fatalf("docker-compose.yml no longer has %q: update this case", tt.old)
			}
			p, err := load(t, strings.Replace(good, tt.old, tt.new, 1), nil)
			if err != nil {
				t.Fatalf("broken file does not load: %v", err)
			}
			got := problems(p, env)
			if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, tt.want) }) {
				t.Errorf("problems = %q, want one starting %q", got, tt.want)
			}
		})
	}
	t.Run("not compose", func(t *testing.T) {
		if _, err := load(t, strings.Replace(good, "    devices:", "    device:", 1), nil); err == nil {
			t.Error("a misspelt key loaded without error")
		}
	})
}

func TestComposeInterpolation(t *testing.T) {
	p, err := load(t, readCompose(t), map[string]string{
		"SMOLVM_BIN_HOST": "/opt/smolvm/bin/smolvm",
		"KVM_GID":         "993",
	})
	if err != nil {
		t.Fatal(err)
	}
	w := p.Services["worker"]
	if !slices.ContainsFunc(w.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Source == "/opt/smolvm/bin/smolvm" && v.Target == "/usr/local/bin/smolvm"
	}) {
		t.Errorf("SMOLVM_BIN_HOST is not the smolvm mount's source: %+v", w.Volumes)
	}
	if !slices.Equal(w.GroupAdd, []string{"993"}) {
		t.Errorf("group_add = %q, want KVM_GID's [993]", w.GroupAdd)
	}
}

// TestDockerComposeConfig runs Debian's docker-compose (apt-get install
// docker-compose), which validates a file without a Docker engine, on
// docker-compose.yml and on a broken copy.
func TestDockerComposeConfig(t *testing.T) {
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Skipf("skipping: docker-compose is not installed (apt-get install docker-compose): %v", err)
	}
	run := func(yaml string) (string, error) {
		dir := t.TempDir()
		for _, f := range []string{"Dockerfile"} {
			b, err := os.ReadFile(filepath.Join(root, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-f", filepath.Join(dir, "docker-compose.yml"), "config", "-q")
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	good := readCompose(t)
	if out, err := run(good); err != nil {
		t.Errorf("docker-compose config -q: %v\n%s", err, out)
	}
	if out, err := run(strings.Replace(good, "    devices:", "    device:", 1)); err == nil {
		t.Errorf("docker-compose accepted a misspelt key:\n%s", out)
	}
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
	for _, cmd := range []string{"worker", "enqueue", "dashboard"} {
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
