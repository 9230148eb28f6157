package composecheck

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// envFile is a .env file as compose reads it, and as .env.example
// documents settings: NAME=VALUE lines set a variable, and a line
// #NAME=VALUE documents one that is left at the compose file's default.
type envFile struct {
	set        map[string]string
	documented map[string]bool // set or commented out
	bad        []string        // lines that are neither
}

var envLine = regexp.MustCompile(`^(#?)([A-Za-z_][A-Za-z0-9_]*)=(.*)$`)

func parseEnvFile(text string) envFile {
	f := envFile{set: map[string]string{}, documented: map[string]bool{}}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		m := envLine.FindStringSubmatch(line)
		switch {
		case m != nil:
			f.documented[m[2]] = true
			if m[1] == "" {
				f.set[m[2]] = m[3]
			}
		case line == "", strings.HasPrefix(line, "#"):
		default:
			f.bad = append(f.bad, line)
		}
	}
	return f
}

// varRef matches ${NAME...} in the compose file; group 2 is what follows
// the name (":?message" for a required one).
var varRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}`)

// envExampleProblems returns what is wrong with example (.env.example) for
// compose (docker-compose.yml), one string each: it must document every
// variable the file reads and no other, set each one the file requires,
// and give values of the right form.
func envExampleProblems(compose, example string) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	f := parseEnvFile(example)
	for _, l := range f.bad {
		bad(".env.example has a line that is neither NAME=VALUE nor a comment: %q", l)
	}
	read, required := map[string]bool{}, map[string]bool{}
	for _, line := range strings.Split(compose, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue // comments are not interpolated
		}
		for _, m := range varRef.FindAllStringSubmatch(line, -1) {
			read[m[1]] = true
			if strings.HasPrefix(m[2], ":?") || strings.HasPrefix(m[2], "?") {
				required[m[1]] = true
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(read)) {
		if !f.documented[name] {
			bad(".env.example does not mention %s, which docker-compose.yml reads", name)
		}
		if _, set := f.set[name]; required[name] && !set {
			bad(".env.example does not set %s, which docker-compose.yml requires", name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(f.documented)) {
		if !read[name] {
			bad(".env.example has %s, which docker-compose.yml does not read", name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(f.set)) {
		if strings.Contains(name, "SECRET") && f.set[name] != "" {
			bad(".env.example sets %s: a secret everyone who reads the file knows; leave it empty for the user to fill in", name)
		}
	}
	if v, ok := f.set["KVM_GID"]; ok && v != "kvm" && !regexp.MustCompile(`^[0-9]+$`).MatchString(v) {
		bad(".env.example: KVM_GID %q is neither a group id nor kvm", v)
	}
	if v, ok := f.set["SMOLVM_DIR_HOST"]; ok && !strings.HasPrefix(v, "/") {
		bad(".env.example: SMOLVM_DIR_HOST %q is not an absolute path (compose expands no ~)", v)
	}
	return out
}

func TestEnvExample(t *testing.T) {
	t.Parallel()
	for _, problem := range envExampleProblems(readCompose(t), readEnvExample(t)) {
		t.Error(problem)
	}
}

// TestEnvExampleChecksCatch breaks .env.example, and docker-compose.yml
// against it, and expects each break to be caught.
func TestEnvExampleChecksCatch(t *testing.T) {
	t.Parallel()
	compose, example := readCompose(t), readEnvExample(t)
	for _, tt := range []struct {
		name           string
		file           string // "compose" or "example": which one to break
		old, new, want string
	}{
		{"variable dropped", "example", "\nKVM_GID=kvm\n", "\n", ".env.example does not mention KVM_GID, which docker-compose.yml reads"},
		{"required variable commented out", "example", "\nSMOLVM_DIR_HOST=", "\n#SMOLVM_DIR_HOST=", ".env.example does not set SMOLVM_DIR_HOST, which docker-compose.yml requires"},
		{"stale variable", "example", "\nKVM_GID=kvm\n", "\nKVM_GID=kvm\nSMOLVM_BIN_HOST=/usr/local/bin/smolvm\n", ".env.example has SMOLVM_BIN_HOST, which docker-compose.yml does not read"},
		{"stale optional variable", "example", "\n#BOTTLEQ_CONCURRENCY=4\n", "\n#BOTTLEQ_WORKERS=4\n", ".env.example has BOTTLEQ_WORKERS, which docker-compose.yml does not read"},
		{"new variable in compose", "compose", "${BOTTLEQ_CONCURRENCY:-4}", "${BOTTLEQ_CONCURRENCY:-4}${BOTTLEQ_EXTRA:-}", ".env.example does not mention BOTTLEQ_EXTRA"},
		{"group name", "example", "\nKVM_GID=kvm\n", "\nKVM_GID=wheel\n", `.env.example: KVM_GID "wheel" is neither a group id nor kvm`},
		{"home-relative path", "example", "\nSMOLVM_DIR_HOST=/home/you/.smolvm\n", "\nSMOLVM_DIR_HOST=~/.smolvm\n", `.env.example: SMOLVM_DIR_HOST "~/.smolvm" is not an absolute path`},
		{"a known secret", "example", "\nBOTTLEQ_STORE_SECRET_KEY=\n", "\nBOTTLEQ_STORE_SECRET_KEY=changeme\n", ".env.example sets BOTTLEQ_STORE_SECRET_KEY: a secret everyone"},
		{"not an assignment", "example", "\nKVM_GID=kvm\n", "\nKVM_GID=kvm\nexport FOO\n", `.env.example has a line that is neither NAME=VALUE nor a comment: "export FOO"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, e := compose, example
			target := &e
			if tt.file == "compose" {
				target = &c
			}
			if !strings.Contains(*target, tt.old) {
				t.Fatalf("the %s file no longer has %q: update this case", tt.file, tt.old)
			}
			*target = strings.Replace(*target, tt.old, tt.new, 1)
			got := envExampleProblems(c, e)
			if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, tt.want) }) {
				t.Errorf("problems = %q, want one starting %q", got, tt.want)
			}
		})
	}
}
