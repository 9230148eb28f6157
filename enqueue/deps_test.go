package enqueue_test

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/bot-bottle/bottleq"

// TestProducerDeps: a producer that imports enqueue (or only tasks) links
// neither the egress proxy, nor the smolvm client, nor zerolog, nor any
// package of ours that runs processes. It asks the go command for the
// import graph, so it needs go on PATH.
func TestProducerDeps(t *testing.T) {
	t.Parallel()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipped: needs the go command on PATH to run go list -deps")
	}
	for _, pkg := range []string{module + "/enqueue", module + "/tasks"} {
		t.Run(strings.TrimPrefix(pkg, module+"/"), func(t *testing.T) {
			t.Parallel()
			out, err := exec.CommandContext(t.Context(), gobin, "list", "-deps",
				"-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", pkg).Output()
			if err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					t.Fatalf("go list -deps %s: %v\n%s", pkg, err, ee.Stderr)
				}
				t.Fatalf("go list -deps %s: %v", pkg, err)
			}
			forbidden := []string{module + "/egress", module + "/smolvm", module + "/worker", "github.com/rs/zerolog"}
			seen := false
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				dep, imports, _ := strings.Cut(line, " ")
				seen = seen || dep == pkg
				for _, f := range forbidden {
					if dep == f || strings.HasPrefix(dep, f+"/") {
						t.Errorf("%s depends on %s", pkg, dep)
					}
				}
				if dep == module || strings.HasPrefix(dep, module+"/") {
					for _, imp := range strings.Fields(imports) {
						if imp == "os/exec" {
							t.Errorf("%s depends on %s, which imports os/exec", pkg, dep)
						}
					}
				}
			}
			if !seen {
				t.Fatalf("go list -deps %s did not list %s itself:\n%s", pkg, pkg, out)
			}
		})
	}
}
