package main

import (
	"go/parser"
	"go/token"
	"regexp"
	"strings"
	"testing"
)

// TestDocNamesEveryFlag: the usage in the package comment (what go doc
// shows) names every flag -h lists, of the command and of each verb.
func TestDocNamesEveryFlag(t *testing.T) {
	t.Parallel()
	f, err := parser.ParseFile(token.NewFileSet(), "main.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	doc := f.Doc.Text()
	getenv := func(string) string { return "" }
	helps := [][]string{{"-h"}}
	for name := range verbs {
		helps = append(helps, []string{name, "-h"})
	}
	flagLine := regexp.MustCompile(`(?m)^  -([a-z-]+)`)
	for _, args := range helps {
		stdout, _ := must(t, getenv, exitOK, args...)
		flags := flagLine.FindAllStringSubmatch(stdout, -1)
		if len(flags) < 3 {
			t.Fatalf("%q lists only %d flags: is the parser broken?\n%s", args, len(flags), stdout)
		}
		for _, m := range flags {
			if name := m[1]; !regexp.MustCompile(`-` + name + `([^a-z-]|$)`).MatchString(doc) {
				t.Errorf("%s lists -%s; the package comment does not", strings.Join(append([]string{"enqueue"}, args[:len(args)-1]...), " "), name)
			}
		}
	}
}
