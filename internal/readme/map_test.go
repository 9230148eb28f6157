package readme

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// mapSection returns README's "Where things live" subsection of
// Development.
func mapSection(t *testing.T) string {
	t.Helper()
	text := readme(t)
	start := strings.Index(text, "\n### Where things live\n")
	if start < 0 {
		t.Fatal("README's Development section lacks its \"Where things live\" map")
	}
	end := strings.Index(text[start+1:], "\n## ")
	if end < 0 {
		t.Fatal("README ends in its map")
	}
	return text[start : start+1+end]
}

// TestMapPathsExist: every file, directory and test the contributor map
// names exists.
func TestMapPathsExist(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	sec := mapSection(t)
	n := 0
	for _, m := range regexp.MustCompile("`([a-z][a-z0-9_-]*(?:/[a-z0-9_*.-]+)+)`").FindAllStringSubmatch(sec, -1) {
		n++
		if got, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(m[1]))); err != nil || len(got) == 0 {
			t.Errorf("README's map names %s, which does not exist", m[1])
		}
	}
	if n < 10 {
		t.Fatalf("found only %d paths in README's map: is the parser broken?", n)
	}
	for _, m := range regexp.MustCompile("`([a-z]+)\\.(Test[A-Za-z0-9_]+)`").FindAllStringSubmatch(sec, -1) {
		files, _ := filepath.Glob(filepath.Join(root, m[1], "*_test.go"))
		found := false
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			found = found || regexp.MustCompile(`(?m)^func `+m[2]+`\(t \*testing\.T\)`).Match(b)
		}
		if !found {
			t.Errorf("README's map cites %s.%s, which is no test of package %s", m[1], m[2], m[1])
		}
	}
}

// TestMapGraph: every arrow of the map's package graph is an import, and
// the graph shows every import among the packages outside internal/ and
// bench but the commands' imports of tasks.
func TestMapGraph(t *testing.T) {
	t.Parallel()
	imports := moduleImports(t)
	sec := mapSection(t)
	block := regexp.MustCompile("(?s)```text\n(.*?)```").FindStringSubmatch(sec)
	if block == nil {
		t.Fatal("README's map has no ```text block with the package graph")
	}
	drawn := map[[2]string]bool{} // importer, imported
	for _, line := range strings.Split(strings.TrimSpace(block[1]), "\n") {
		// "A, B → C ← D → E": each arrow joins the lists on its sides.
		parts := regexp.MustCompile(` ([→←]) `).Split(line, -1)
		arrows := regexp.MustCompile(` ([→←]) `).FindAllStringSubmatch(line, -1)
		for i, a := range arrows {
			from, to := strings.Split(parts[i], ", "), strings.Split(parts[i+1], ", ")
			if a[1] == "←" {
				from, to = to, from
			}
			for _, f := range from {
				for _, g := range to {
					drawn[[2]string{f, g}] = true
				}
			}
		}
	}
	if len(drawn) < 8 {
		t.Fatalf("found only %d arrows in README's package graph: is the parser broken?", len(drawn))
	}
	real := map[[2]string]bool{}
	for pkg, imps := range imports {
		for _, imp := range imps {
			real[[2]string{pkg, imp}] = true
			top := func(p string) bool {
				return !strings.HasPrefix(p, "internal/") && !strings.HasPrefix(p, "cmd/") && p != "bench"
			}
			if top(pkg) && top(imp) && !drawn[[2]string{pkg, imp}] {
				t.Errorf("%s imports %s; README's package graph does not show it", pkg, imp)
			}
			if strings.HasPrefix(pkg, "cmd/") && top(imp) && imp != "tasks" && !drawn[[2]string{pkg, imp}] {
				t.Errorf("%s imports %s; README's package graph does not show it", pkg, imp)
			}
		}
	}
	for e := range drawn {
		if !real[e] {
			t.Errorf("README's package graph has %s → %s, which is no import", e[0], e[1])
		}
	}
}

// TestTestPackagesOnlyInTests: the test-only packages README's map lists
// are imported by tests alone.
func TestTestPackagesOnlyInTests(t *testing.T) {
	t.Parallel()
	imports := moduleImports(t)
	listed := regexp.MustCompile("(?m)^\\| `(internal/test[a-z]+)` \\|").FindAllStringSubmatch(mapSection(t), -1)
	if len(listed) < 3 {
		t.Fatalf("found only %d test-only packages in README's map: is the parser broken?", len(listed))
	}
	for pkg, imps := range imports {
		for _, m := range listed {
			if slices.Contains(imps, m[1]) {
				t.Errorf("%s imports %s outside its tests", pkg, m[1])
			}
		}
	}
	ents, err := os.ReadDir(filepath.Join("..", "..", "internal"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), "test") && !slices.ContainsFunc(listed, func(m []string) bool { return m[1] == "internal/"+e.Name() }) {
			t.Errorf("internal/%s is not in README's table of test-only packages", e.Name())
		}
	}
}

// moduleImports maps each of the module's packages to the module's
// packages its non-test files import, all relative to the module
// ("worker", "internal/api"), from go list; it skips t without the go
// command.
func moduleImports(t *testing.T) map[string][]string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipped: needs the go command on PATH to run go list")
	}
	const module = "github.com/bot-bottle/bottleq/"
	cmd := exec.CommandContext(t.Context(), gobin, "list", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", "./...")
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg := strings.TrimPrefix(f[0], module)
		imports[pkg] = nil
		for _, imp := range f[1:] {
			if rel, ok := strings.CutPrefix(imp, module); ok {
				imports[pkg] = append(imports[pkg], rel)
			}
		}
	}
	return imports
}
