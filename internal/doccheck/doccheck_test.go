package doccheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// checked lists the packages (directories) and single files, relative to
// the module root, whose exported identifiers must all be documented.
var checked = []string{
	"enqueue",
	"tasks",
	"egress",
	"smolvm",
	"worker",
	"internal/cliflag",
	"internal/redisurl",
	"internal/lograte",
	"internal/validate",
	"internal/cancelmark",
	"internal/testredis",
	"internal/testbin",
	"internal/teststore",
	"internal/testworker",
	"cmd/dashboard",
	"cmd/api",
	"internal/api",
}

func TestExportedIdentifiersHaveDocs(t *testing.T) {
	root := filepath.Join("..", "..")
	for _, rel := range checked {
		t.Run(rel, func(t *testing.T) {
			path := filepath.Join(root, filepath.FromSlash(rel))
			files := []string{path}
			if fi, err := os.Stat(path); err != nil {
				t.Fatal(err)
			} else if fi.IsDir() {
				files, err = filepath.Glob(filepath.Join(path, "*.go"))
				if err != nil {
					t.Fatal(err)
				}
			}
			fset := token.NewFileSet()
			n := 0
			for _, name := range files {
				if strings.HasSuffix(name, "_test.go") {
					continue
				}
				f, err := parser.ParseFile(fset, name, nil, parser.ParseComments|parser.SkipObjectResolution)
				if err != nil {
					t.Fatal(err)
				}
				n++
				for _, m := range undocumented(f) {
					t.Errorf("%s: %s has no doc comment", fset.Position(m.Pos()), m.Name)
				}
			}
			if n == 0 {
				t.Fatalf("no Go files in %s", rel)
			}
		})
	}
}

// undocumented returns the exported identifiers of f that go doc shows
// without a doc comment.
func undocumented(f *ast.File) []*ast.Ident {
	var out []*ast.Ident
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if !d.Name.IsExported() || (d.Recv != nil && !exportedRecv(d.Recv.List[0].Type)) {
				continue
			}
			if d.Doc == nil {
				out = append(out, d.Name)
			}
		case *ast.GenDecl:
			grouped := d.Lparen.IsValid()
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.TypeSpec:
					if !s.Name.IsExported() {
						continue
					}
					if s.Doc == nil && s.Comment == nil && (grouped || d.Doc == nil) {
						out = append(out, s.Name)
					}
					switch ty := s.Type.(type) {
					case *ast.StructType:
						out = append(out, undocumentedFields(ty.Fields)...)
					case *ast.InterfaceType:
						out = append(out, undocumentedFields(ty.Methods)...)
					}
				case *ast.ValueSpec:
					if s.Doc != nil || s.Comment != nil || d.Doc != nil {
						continue
					}
					for _, n := range s.Names {
						if n.IsExported() {
							out = append(out, n)
						}
					}
				}
			}
		}
	}
	return out
}

// undocumentedFields returns the exported fields (or interface methods) of
// fl that have no comment of their own and are not named by the comment of
// an earlier one.
func undocumentedFields(fl *ast.FieldList) []*ast.Ident {
	var out []*ast.Ident
	last := "" // the text of the latest field comment
	for _, f := range fl.List {
		if f.Doc != nil {
			last = f.Doc.Text()
		}
		if f.Doc != nil || f.Comment != nil {
			continue
		}
		for _, n := range f.Names {
			if n.IsExported() && !mentions(last, n.Name) {
				out = append(out, n)
			}
		}
	}
	return out
}

// mentions reports whether text has name as a whole word.
func mentions(text, name string) bool {
	for _, w := range strings.FieldsFunc(text, func(r rune) bool {
		return !(r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) {
		if w == name {
			return true
		}
	}
	return false
}

// exportedRecv reports whether a method's receiver type is exported, so
// that go doc shows the method.
func exportedRecv(e ast.Expr) bool {
	for {
		switch x := e.(type) {
		case *ast.StarExpr:
			e = x.X
		case *ast.IndexExpr:
			e = x.X
		case *ast.IndexListExpr:
			e = x.X
		case *ast.Ident:
			return x.IsExported()
		default:
			return false
		}
	}
}
