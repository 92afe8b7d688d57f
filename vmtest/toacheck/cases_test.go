//go:build linux

package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"testing"
)

// TestRows: every row has an id of its own and both expectations.
func TestRows(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range rows {
		if r.id == "" || r.kmod == "" || r.ebpf == "" || seen[r.id] {
			t.Errorf("row %+v: empty, or its id used twice", r)
		}
		seen[r.id] = true
	}
}

// TestChecksNameRows: every check this program makes names a row of the
// table (or one of the two ids that report trouble outside the cases).
func TestChecksNameRows(t *testing.T) {
	known := map[string]bool{"setup": true, "counters": true}
	for _, r := range rows {
		known[r.id] = true
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	n := 0
	for _, f := range files {
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(node ast.Node) bool {
			call, ok := node.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "check" || len(call.Args) < 2 {
				return true
			}
			if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				n++
				if id, _ := strconv.Unquote(lit.Value); !known[id] {
					t.Errorf("%s: check(%s, ...) names no row of the table", fset.Position(call.Pos()), lit.Value)
				}
			}
			return true
		})
	}
	if n < len(rows) {
		t.Errorf("found %d checks naming a row, fewer than the %d rows", n, len(rows))
	}
}

func TestExpect(t *testing.T) {
	if got := expect("v6-client-v4-socket", "ebpf"); got == expect("v6-client-v4-socket", "kmod") {
		t.Errorf("row v6-client-v4-socket: the receivers' expectations are the same: %q", got)
	}
	if got := expect("no-such-row", "kmod"); got == "" {
		t.Error("expect of an unknown row: empty")
	}
}
