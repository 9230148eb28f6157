package readme

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestClaimsCiteRealTests: every test that README's Guarantees and
// Security sections cite exists: NAME in internal/e2e, PKG.NAME in the
// package whose directory is PKG or ends in /PKG (worker, cmd/worker).
func TestClaimsCiteRealTests(t *testing.T) {
	t.Parallel()
	text := readme(t)
	start, end := strings.Index(text, "\n## Guarantees\n"), strings.Index(text, "\n## The simulator\n")
	if start < 0 || end < start {
		t.Fatal("README lacks its Guarantees section, or The simulator after Security")
	}
	cited := regexp.MustCompile("`((?:[a-z][a-z0-9-]*/)*[a-z][a-z0-9-]*\\.)?(Test[A-Za-z0-9_]+)`").FindAllStringSubmatch(text[start:end], -1)
	if len(cited) < 40 {
		t.Fatalf("found %d cited tests: is the parser broken?", len(cited))
	}
	root := filepath.Join("..", "..")
	defined := map[string]map[string]bool{} // directory → test names
	decl := regexp.MustCompile(`(?m)^func (Test[A-Za-z0-9_]+)\(t \*testing\.T\)`)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dir, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		dir = filepath.ToSlash(dir)
		for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
			if defined[dir] == nil {
				defined[dir] = map[string]bool{}
			}
			defined[dir][m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cited {
		pkg, name := strings.TrimSuffix(c[1], "."), c[2]
		found := false
		for dir, tests := range defined {
			if tests[name] && ((pkg == "" && dir == "internal/e2e") || (pkg != "" && (dir == pkg || strings.HasSuffix(dir, "/"+pkg)))) {
				found = true
			}
		}
		where := "package " + pkg
		if pkg == "" {
			where = "internal/e2e"
		}
		if !found {
			t.Errorf("README cites %s, which is no test of %s", strings.Trim(c[0], "`"), where)
		}
	}
}
