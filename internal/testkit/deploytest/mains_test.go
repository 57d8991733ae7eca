package deploytest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestEveryMainHasOneShape: every functions/*/main.go reads its settings
// (readSettings), builds its handler (build) and hands it to lambda.Start
// from main, and its main_test.go tests both. A main with another shape, or
// a workflow written into a main, fails here.
func TestEveryMainHasOneShape(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join(root(t), "functions", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 6 {
		t.Fatalf("functions: %v", dirs)
	}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			funcs, calls := parseFuncs(t, filepath.Join(dir, "main.go"))
			for _, f := range []string{"readSettings", "build", "main"} {
				if !slices.Contains(funcs, f) {
					t.Errorf("main.go has no func %s", f)
				}
			}
			for _, c := range []string{"readSettings", "build", "lambda.Start"} {
				if !slices.Contains(calls["main"], c) {
					t.Errorf("main does not call %s (calls %v)", c, calls["main"])
				}
			}
			tests, _ := os.ReadDir(dir)
			var tested []string
			for _, e := range tests {
				if strings.HasSuffix(e.Name(), "_test.go") {
					_, c := parseFuncs(t, filepath.Join(dir, e.Name()))
					for _, cs := range c {
						tested = append(tested, cs...)
					}
				}
			}
			for _, f := range []string{"readSettings", "build"} {
				if !slices.Contains(tested, f) {
					t.Errorf("no test of %s calls it", f)
				}
			}
		})
	}
}

// parseFuncs returns a file's top-level function names and, per function,
// the names it calls (pkg.Func for selector calls).
func parseFuncs(t *testing.T, path string) ([]string, map[string][]string) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	calls := map[string][]string{}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Recv != nil || fd.Body == nil {
			continue
		}
		names = append(names, fd.Name.Name)
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			switch fn := call.Fun.(type) {
			case *ast.Ident:
				calls[fd.Name.Name] = append(calls[fd.Name.Name], fn.Name)
			case *ast.SelectorExpr:
				if x, ok := fn.X.(*ast.Ident); ok {
					calls[fd.Name.Name] = append(calls[fd.Name.Name], x.Name+"."+fn.Sel.Name)
				}
			}
			return true
		})
	}
	return names, calls
}
