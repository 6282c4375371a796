package orchestrator

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDependencies holds the line of the package doc: the orchestrator
// reaches the server through its interfaces and the roles through Roles,
// and knows nothing of the server, the storage node or the agent. (It
// speaks the wire's messages, and package wire brings in the NATS client,
// which it does not use.)
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/cairnbackup/cairn/server/orchestrator").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case dep == "github.com/cairnbackup/cairn/server",
			strings.HasPrefix(dep, "github.com/cairnbackup/cairn/storagenode"),
			strings.HasPrefix(dep, "github.com/cairnbackup/cairn/agent"):
			t.Errorf("the orchestrator depends on %s", dep)
		}
	}
}

// TestNoWireErrorsBuilt holds the line of the package doc on errors: the
// orchestrator returns its own *Error, and the NATS edge makes the wire's
// of it. It may read a wire error another role sent (wire.CodeOf), but
// builds none.
func TestNoWireErrorsBuilt(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.SelectorExpr:
				if id, ok := x.X.(*ast.Ident); ok && id.Name == "wire" && (x.Sel.Name == "Errorf" || x.Sel.Name == "AsError") {
					t.Errorf("%s: wire.%s: return an *Error (errorf, relay) and let the edge map it", fset.Position(x.Pos()), x.Sel.Name)
				}
			case *ast.CompositeLit:
				if sel, ok := x.Type.(*ast.SelectorExpr); ok {
					if id, ok := sel.X.(*ast.Ident); ok && id.Name == "wire" && sel.Sel.Name == "Error" {
						t.Errorf("%s: a wire.Error literal: return an *Error and let the edge map it", fset.Position(x.Pos()))
					}
				}
			}
			return true
		})
	}
}
