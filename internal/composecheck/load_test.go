package composecheck

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v2"
)

// project is the part of the Compose file format that docker-compose.yml
// uses, read the way Compose reads it. Decoding is strict: a key these
// types lack fails the load and names its line, so a misspelt key is
// caught here as well as by docker-compose. If the key is a real one that
// the file has started to use, add a field for it.
type project struct {
	Version  string                  `yaml:"version"` // obsolete; docker-compose 1.x still prints it
	Services map[string]*service     `yaml:"services"`
	Networks map[string]*network     `yaml:"networks"` // nil when declared bare
	Volumes  map[string]*namedVolume `yaml:"volumes"`  // nil when declared bare
}

// namedVolume is a top-level volume.
type namedVolume struct {
	Name       string            `yaml:"name"`
	Driver     string            `yaml:"driver"`
	DriverOpts map[string]string `yaml:"driver_opts"`
	External   bool              `yaml:"external"`
	Labels     map[string]string `yaml:"labels"`
}

// network is a top-level network.
type network struct {
	Name       string         `yaml:"name"`
	Driver     string         `yaml:"driver"`
	DriverOpts map[string]any `yaml:"driver_opts"`
	Internal   bool           `yaml:"internal"`
	External   bool           `yaml:"external"`
	Attachable bool           `yaml:"attachable"`
	IPAM       map[string]any `yaml:"ipam"`
	Labels     map[string]any `yaml:"labels"`
}

type service struct {
	Image           string       `yaml:"image"`
	Build           *build       `yaml:"build"`
	Command         command      `yaml:"command"`
	Entrypoint      command      `yaml:"entrypoint"`
	Init            bool         `yaml:"init"`
	Devices         []string     `yaml:"devices"`
	GroupAdd        []string     `yaml:"group_add"`
	Environment     environment  `yaml:"environment"`
	Networks        networks     `yaml:"networks"`
	Ports           []*port      `yaml:"ports"`
	Volumes         []*volume    `yaml:"volumes"`
	DependsOn       dependsOn    `yaml:"depends_on"`
	HealthCheck     *healthCheck `yaml:"healthcheck"`
	StopGracePeriod string       `yaml:"stop_grace_period"`
	Restart         string       `yaml:"restart"`
}

// build is `build: DIR` or its long form; Dockerfile defaults to
// "Dockerfile" and Context is made absolute by load.
type build struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
	Target     string `yaml:"target"`
}

func (b *build) UnmarshalYAML(unmarshal func(any) error) error {
	if unmarshal(&b.Context) != nil {
		type plain build
		if err := unmarshal((*plain)(b)); err != nil {
			return err
		}
	}
	if b.Dockerfile == "" {
		b.Dockerfile = "Dockerfile"
	}
	return nil
}

// command is a list, or a string split on spaces (Compose splits it as a
// shell would; only its first word is checked).
type command []string

func (c *command) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if unmarshal(&s) == nil {
		*c = strings.Fields(s)
		return nil
	}
	return unmarshal((*[]string)(c))
}

// environment is a map, or a list of NAME=VALUE and bare NAME (no value).
type environment map[string]*string

func (e *environment) UnmarshalYAML(unmarshal func(any) error) error {
	var list []string
	if unmarshal(&list) != nil {
		return unmarshal((*map[string]*string)(e))
	}
	*e = environment{}
	for _, kv := range list {
		if k, v, ok := strings.Cut(kv, "="); ok {
			(*e)[k] = &v
		} else {
			(*e)[kv] = nil
		}
	}
	return nil
}

// networks is a service's list of network names or its map from name to
// attachment (nil when the name is given bare).
type networks map[string]*attachment

type attachment struct {
	Aliases     []string `yaml:"aliases"`
	IPv4Address string   `yaml:"ipv4_address"`
	IPv6Address string   `yaml:"ipv6_address"`
	Priority    int      `yaml:"priority"`
}

func (n *networks) UnmarshalYAML(unmarshal func(any) error) error {
	var names []string
	if unmarshal(&names) != nil {
		return unmarshal((*map[string]*attachment)(n))
	}
	*n = networks{}
	for _, name := range names {
		(*n)[name] = nil
	}
	return nil
}

// port is "[HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL]" or its long form.
// Short holds the short form until load parses it, after interpolation.
type port struct {
	Short       string `yaml:"-"`
	Target      string `yaml:"target"`
	Published   string `yaml:"published"`
	HostIP      string `yaml:"host_ip"`
	Protocol    string `yaml:"protocol"`
	Mode        string `yaml:"mode"`
	Name        string `yaml:"name"`
	AppProtocol string `yaml:"app_protocol"`
}

func (p *port) UnmarshalYAML(unmarshal func(any) error) error {
	if unmarshal(&p.Short) == nil {
		return nil
	}
	type plain port
	return unmarshal((*plain)(p))
}

func (p *port) parseShort() error {
	s := p.Short
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		s, p.Protocol = s[:i], s[i+1:]
	}
	if strings.HasPrefix(s, "[") { // [IPv6]:PUBLISHED:TARGET
		ip, rest, ok := strings.Cut(s[1:], "]:")
		if !ok {
			return fmt.Errorf("port %q: no ]: after an IPv6 address", p.Short)
		}
		p.HostIP, s = ip, rest
	}
	parts := strings.Split(s, ":")
	switch {
	case len(parts) == 3 && p.HostIP == "":
		p.HostIP, p.Published, p.Target = parts[0], parts[1], parts[2]
	case len(parts) == 2:
		p.Published, p.Target = parts[0], parts[1]
	case len(parts) == 1 && p.HostIP == "":
		p.Target = parts[0]
	default:
		return fmt.Errorf("port %q is not [HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL]", p.Short)
	}
	return nil
}

// volume is "[SOURCE:]TARGET[:MODE]" or its long form. Short holds the
// short form until load parses it, after interpolation.
type volume struct {
	Short       string         `yaml:"-"`
	Type        string         `yaml:"type"` // "volume" (named) or "bind" are the ones checked
	Source      string         `yaml:"source"`
	Target      string         `yaml:"target"`
	ReadOnly    bool           `yaml:"read_only"`
	Consistency string         `yaml:"consistency"`
	Bind        map[string]any `yaml:"bind"`
	Volume      map[string]any `yaml:"volume"`
	Tmpfs       map[string]any `yaml:"tmpfs"`
}

func (v *volume) UnmarshalYAML(unmarshal func(any) error) error {
	if unmarshal(&v.Short) == nil {
		return nil
	}
	type plain volume
	return unmarshal((*plain)(v))
}

func (v *volume) parseShort() error {
	parts := strings.Split(v.Short, ":")
	switch len(parts) {
	case 1:
		v.Type, v.Target = "volume", parts[0] // anonymous
		return nil
	case 2, 3:
		v.Source, v.Target = parts[0], parts[1]
	default:
		return fmt.Errorf("volume %q is not [SOURCE:]TARGET[:MODE]", v.Short)
	}
	// As Compose decides: a path is bind-mounted, anything else is a named
	// volume.
	v.Type = "volume"
	if strings.HasPrefix(v.Source, "/") || strings.HasPrefix(v.Source, ".") || strings.HasPrefix(v.Source, "~") {
		v.Type = "bind"
	}
	if len(parts) == 3 {
		for _, opt := range strings.Split(parts[2], ",") {
			v.ReadOnly = v.ReadOnly || opt == "ro"
		}
	}
	return nil
}

// dependsOn is a list of service names (each then waits for the service to
// start) or a map from name to dependency.
type dependsOn map[string]dependency

type dependency struct {
	Condition string `yaml:"condition"` // service_started unless given
	Restart   bool   `yaml:"restart"`
	Required  *bool  `yaml:"required"`
}

func (d *dependsOn) UnmarshalYAML(unmarshal func(any) error) error {
	var names []string
	if unmarshal(&names) != nil {
		if err := unmarshal((*map[string]dependency)(d)); err != nil {
			return err
		}
	} else {
		*d = dependsOn{}
		for _, n := range names {
			(*d)[n] = dependency{}
		}
	}
	for n, dep := range *d {
		if dep.Condition == "" {
			dep.Condition = "service_started"
			(*d)[n] = dep
		}
	}
	return nil
}

type healthCheck struct {
	Test          healthTest `yaml:"test"`
	Interval      string     `yaml:"interval"`
	Timeout       string     `yaml:"timeout"`
	Retries       string     `yaml:"retries"`
	StartPeriod   string     `yaml:"start_period"`
	StartInterval string     `yaml:"start_interval"`
	Disable       bool       `yaml:"disable"`
}

// healthTest is a list (["CMD", ...], ["CMD-SHELL", ...], ["NONE"]) or a
// string, which Compose runs with the shell.
type healthTest []string

func (h *healthTest) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if unmarshal(&s) == nil {
		*h = healthTest{"CMD-SHELL", s}
		return nil
	}
	return unmarshal((*[]string)(h))
}

// loadFile loads dir/docker-compose.yml; see load.
func loadFile(dir string, env map[string]string) (*project, error) {
	b, err := os.ReadFile(filepath.Join(dir, "docker-compose.yml"))
	if err != nil {
		return nil, err
	}
	return load(b, dir, env)
}

// load reads compose YAML as Compose does for what this package checks:
// strictly, then with ${VAR} references replaced from env (and from env
// only), then with short forms parsed and build contexts made relative to
// dir.
func load(yml []byte, dir string, env map[string]string) (*project, error) {
	var p project
	if err := yaml.UnmarshalStrict(yml, &p); err != nil {
		return nil, err
	}
	if err := interpolate(reflect.ValueOf(&p), env); err != nil {
		return nil, err
	}
	for name, s := range p.Services {
		if s == nil {
			return nil, fmt.Errorf("service %s is empty", name)
		}
		for _, pt := range s.Ports {
			if pt.Short != "" {
				if err := pt.parseShort(); err != nil {
					return nil, fmt.Errorf("service %s: %w", name, err)
				}
				pt.Short = ""
			}
			if pt.Protocol == "" {
				pt.Protocol = "tcp"
			}
		}
		for _, v := range s.Volumes {
			if v.Short != "" {
				if err := v.parseShort(); err != nil {
					return nil, fmt.Errorf("service %s: %w", name, err)
				}
				v.Short = ""
			}
		}
		if s.Build != nil && !filepath.IsAbs(s.Build.Context) {
			s.Build.Context = filepath.Join(dir, s.Build.Context)
		}
	}
	return &p, nil
}

// interpolate replaces variable references in every string v holds (map
// keys are names and are left alone, as Compose leaves them).
func interpolate(v reflect.Value, env map[string]string) error {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			return interpolate(v.Elem(), env)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if err := interpolate(v.Field(i), env); err != nil {
				return err
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			if err := interpolate(v.Index(i), env); err != nil {
				return err
			}
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			e := reflect.New(v.Type().Elem()).Elem() // a settable copy
			e.Set(v.MapIndex(k))
			if err := interpolate(e, env); err != nil {
				return err
			}
			v.SetMapIndex(k, e)
		}
	case reflect.String:
		s, err := expand(v.String(), env)
		if err != nil {
			return err
		}
		v.SetString(s)
	}
	return nil
}

var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*`)

// expand replaces $NAME, ${NAME} and ${NAME<op>WORD} in s with values from
// env, and $$ with $, as Compose does. The ops are :- and - (a default when
// NAME is empty or unset, or unset), :? and ? (an error then) and :+ and +
// (WORD when NAME is set and not empty, or set). A WORD that refers to a
// variable itself is refused rather than read wrongly.
func expand(s string, env map[string]string) (string, error) {
	var b strings.Builder
	for rest := s; ; {
		i := strings.IndexByte(rest, '$')
		if i < 0 {
			b.WriteString(rest)
			return b.String(), nil
		}
		b.WriteString(rest[:i])
		rest = rest[i+1:]
		switch {
		case strings.HasPrefix(rest, "$"):
			b.WriteByte('$')
			rest = rest[1:]
		case strings.HasPrefix(rest, "{"):
			expr, after, ok := strings.Cut(rest[1:], "}")
			if !ok {
				return "", fmt.Errorf("%q: ${ without }", s)
			}
			v, err := lookup(expr, env)
			if err != nil {
				return "", fmt.Errorf("%q: %w", s, err)
			}
			b.WriteString(v)
			rest = after
		default:
			name := varName.FindString(rest)
			if name == "" {
				return "", fmt.Errorf("%q: a $ that starts no variable (write $$ for a $)", s)
			}
			b.WriteString(env[name])
			rest = rest[len(name):]
		}
	}
}

// lookup evaluates the inside of ${...}.
func lookup(expr string, env map[string]string) (string, error) {
	name := varName.FindString(expr)
	if name == "" {
		return "", fmt.Errorf("${%s}: no variable name", expr)
	}
	val, set := env[name]
	rest := expr[len(name):]
	if rest == "" {
		return val, nil
	}
	op, word := rest[:1], rest[1:]
	if op == ":" && len(rest) >= 2 {
		op, word = rest[:2], rest[2:]
	}
	if strings.Contains(word, "$") {
		return "", fmt.Errorf("${%s}: a variable inside a default is not supported here", expr)
	}
	switch op {
	case ":-":
		if val == "" {
			return word, nil
		}
	case "-":
		if !set {
			return word, nil
		}
	case ":?", "?":
		if !set || (op == ":?" && val == "") {
			return "", errors.New(name + " is required: " + word)
		}
	case ":+":
		if val != "" {
			return word, nil
		}
		return "", nil
	case "+":
		if set {
			return word, nil
		}
		return "", nil
	default:
		return "", fmt.Errorf("${%s}: unknown operator after %s", expr, name)
	}
	return val, nil
}
