package readme

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// readme returns README.md's text.
func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// workerHelp returns the help of each of bin/worker's flags, by name, and
// its environment variable, as -h prints them.
func workerHelp(t *testing.T) (help, envs map[string]string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "worker"), "-h").CombinedOutput()
	if err != nil {
		t.Fatalf("worker -h: %v\n%s", err, out)
	}
	help, envs = map[string]string{}, map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^  -(\S+)(?: \[(\w+)\])?\n    \t(.*)$`).FindAllStringSubmatch(string(out), -1) {
		help[m[1]], envs[m[1]] = m[3], m[2]
	}
	if len(help) < 10 {
		t.Fatalf("found only %d flags in worker -h: is the parser broken?\n%s", len(help), out)
	}
	return help, envs
}

// configRows returns README's Configuration table: each flag's
// environment variable and meaning.
func configRows(t *testing.T) (envs, meaning map[string]string) {
	t.Helper()
	envs, meaning = map[string]string{}, map[string]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `-([a-z-]+)` \\| `(\\w+)` \\| [^|]* \\| (.*) \\|$").FindAllStringSubmatch(readme(t), -1) {
		if _, dup := envs[m[1]]; dup {
			t.Errorf("README's Configuration table lists -%s twice", m[1])
		}
		envs[m[1]], meaning[m[1]] = m[2], m[3]
	}
	if len(envs) < 10 {
		t.Fatalf("found only %d rows in README's Configuration table: is the parser broken?", len(envs))
	}
	return envs, meaning
}

// TestConfigTableMatchesHelp: README's Configuration table lists the
// flags worker -h lists, each with the same variable, and writes the
// Redis URL the way -h does.
func TestConfigTableMatchesHelp(t *testing.T) {
	t.Parallel()
	help, helpEnvs := workerHelp(t)
	rowEnvs, meaning := configRows(t)
	for flag, env := range helpEnvs {
		if flag == "version" {
			continue // every command has it; README says so under the table
		}
		if got, ok := rowEnvs[flag]; !ok {
			t.Errorf("worker -h lists -%s, which README's Configuration table lacks", flag)
		} else if got != env {
			t.Errorf("README's Configuration table gives -%s the variable %s; worker -h says %s", flag, got, env)
		}
	}
	for flag := range rowEnvs {
		if _, ok := helpEnvs[flag]; !ok {
			t.Errorf("README's Configuration table lists -%s, which worker -h lacks", flag)
		}
	}
	url := regexp.MustCompile(`rediss?://[^\s,;` + "`" + `]+`)
	if h, r := url.FindString(help["redis"]), url.FindString(meaning["redis"]); h == "" || h != r {
		t.Errorf("worker -h writes the Redis URL %q, README %q", h, r)
	}
}

// TestBuildTargetsNameEveryCommand: `make build`'s help and README's
// comment on it name every command in cmd/.
func TestBuildTargetsNameEveryCommand(t *testing.T) {
	t.Parallel()
	ents, err := os.ReadDir(filepath.Join("..", "..", "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	for _, e := range ents {
		if e.IsDir() {
			cmds = append(cmds, e.Name())
		}
	}
	mk, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^build:.*## .*\(([^)]*)\)$`).FindStringSubmatch(string(mk))
	if m == nil {
		t.Fatal("the Makefile's build target has no help ending in (the commands it builds)")
	}
	listed := strings.Split(m[1], ", ")
	slices.Sort(listed)
	if !slices.Equal(listed, cmds) {
		t.Errorf("make help says build makes %q; cmd/ holds %q", listed, cmds)
	}
	line := regexp.MustCompile(`(?m)^make build +# (.*)$`).FindStringSubmatch(readme(t))
	if line == nil {
		t.Fatal("README shows no `make build  # what it builds` line")
	}
	for _, c := range cmds {
		if !strings.Contains(line[1], "bin/"+c) {
			t.Errorf("README's `make build` line does not name bin/%s: %s", c, line[1])
		}
	}
}

// checkArtifactsDir checks what README's --artifacts-dir example (line,
// run in dir) did: each --artifact is in the directory under its base name,
// with the size and SHA-256 of the line it printed (out), which README
// shows too.
func checkArtifactsDir(t *testing.T, dir, line, out string) {
	t.Helper()
	dest := regexp.MustCompile(`--artifacts-dir (\S+)`).FindStringSubmatch(line)
	guests := regexp.MustCompile(`--artifact (\S+)`).FindAllStringSubmatch(line, -1)
	if dest == nil || len(guests) == 0 {
		t.Fatalf("README's %q names no --artifacts-dir DIR or no --artifact", line)
	}
	for _, g := range guests {
		want := filepath.Join(dest[1], path.Base(g[1]))
		prefix := "bottleq: artifact " + g[1] + ": " + want + " ("
		got := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(prefix) + `(\d+) bytes, sha256 ([0-9a-f]{64})\)$`).FindStringSubmatch(out)
		if got == nil {
			t.Errorf("README's %q printed no %q line:\n%s", line, prefix+"N bytes, sha256 HEX)", out)
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, want))
		sum := sha256.Sum256(b)
		if err != nil || fmt.Sprint(len(b)) != got[1] || hex.EncodeToString(sum[:]) != got[2] {
			t.Errorf("%s holds %d bytes with sha256 %x (%v); the line says %s bytes, sha256 %s", want, len(b), sum, err, got[1], got[2])
		}
		if shown := "`" + prefix + got[1] + " bytes, sha256 …)`"; !strings.Contains(readme(t), shown) {
			t.Errorf("README does not show what its example prints, %s", shown)
		}
	}
}

// checkArtifactPath checks the artifact line README's artifact example
// printed (out) against the path README shows, with DATA the worker's data
// directory, and the data directory's layout against README's -data-dir
// row and worker -h.
func checkArtifactPath(t *testing.T, out, dataDir string) {
	t.Helper()
	const prefix = "bottleq: artifact /workspace/out/A.txt: "
	shown := regexp.MustCompile(regexp.QuoteMeta(prefix) + `(\S+)`).FindStringSubmatch(readme(t))
	id := regexp.MustCompile(`bottleq: task (\S+): enqueued`).FindStringSubmatch(out)
	got := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(prefix) + `(\S+) \(17 bytes, sha256 [0-9a-f]{64}\)$`).FindStringSubmatch(out)
	if shown == nil || id == nil || got == nil {
		t.Fatalf("README shows %q; the example printed no task ID or artifact line:\n%s", shown, out)
	}
	if !regexp.MustCompile(`^[0-9a-f-]+$`).MatchString(id[1]) {
		t.Fatalf("task ID %q is not a UUID: the test cannot spell its file name", id[1])
	}
	sum := sha256.Sum256([]byte(id[1]))
	want := strings.NewReplacer("DATA", dataDir, "<task>", id[1], "<hash>", hex.EncodeToString(sum[:])[:32]).Replace(shown[1])
	if got[1] != want {
		t.Errorf("README's artifact example printed the path %s; README says %s, that is %s", got[1], shown[1], want)
	}
	if b, err := os.ReadFile(got[1]); err != nil || string(b) != "HELLO, ARTIFACTS\n" {
		t.Errorf("the artifact at %s: %q, %v", got[1], b, err)
	}

	help, _ := workerHelp(t)
	_, meaning := configRows(t)
	ents, err := os.ReadDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if !strings.Contains(help["data-dir"], "("+e.Name()+"/") {
			t.Errorf("the data directory holds %s/, which -data-dir's help does not name: %s", e.Name(), help["data-dir"])
		}
		if !strings.Contains(meaning["data-dir"], "`"+e.Name()+"/") {
			t.Errorf("the data directory holds %s/, which README's -data-dir row does not name", e.Name())
		}
	}
}
