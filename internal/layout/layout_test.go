package layout

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// maxFuncLines is the longest a function may be, counted from `func` to its
// closing brace; a func literal counts on its own and within its encloser.
const maxFuncLines = 80

// longMark starts the comment directly above a function that must stay
// longer than maxFuncLines; the reason follows it.
const longMark = "// long: "

// gormOwners may import gorm.io/...; sqlOwners may import pgx or
// database/sql: store is the road to Postgres, migrations applies the
// schema, testenv creates test databases, and bench measures Postgres from
// the outside.
var (
	gormOwners = []string{"store"}
	sqlOwners  = []string{"store", "migrations", "internal/testenv", "bench"}
)

// goFile is one parsed Go file of the module.
type goFile struct {
	rel  string // slash-separated, from the module root
	fset *token.FileSet
	file *ast.File
}

func TestNoLongFunctions(t *testing.T) {
	var offenders []string
	for _, f := range moduleFiles(t) {
		if strings.HasSuffix(f.rel, "_test.go") || ast.IsGenerated(f.file) {
			continue
		}
		for _, fn := range longFuncs(f) {
			offenders = append(offenders, fmt.Sprintf("%s:%d %s (%d lines)", f.rel, fn.line, fn.name, fn.lines))
		}
	}
	if len(offenders) > 0 {
		t.Errorf("%d functions over %d lines; split them into named steps, or put %q directly above:\n%s",
			len(offenders), maxFuncLines, longMark+"<reason>", strings.Join(offenders, "\n"))
	}
}

func TestPostgresImportsStayInStore(t *testing.T) {
	var offenders []string
	for _, f := range moduleFiles(t) {
		dir := filepath.ToSlash(filepath.Dir(f.rel))
		for _, imp := range f.file.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			var owners []string
			switch {
			case strings.HasPrefix(path, "gorm.io/"):
				owners = gormOwners
			case path == "database/sql" || strings.HasPrefix(path, "github.com/jackc/pgx"):
				owners = sqlOwners
			default:
				continue
			}
			if slices.Contains(owners, dir) {
				continue
			}
			offenders = append(offenders, fmt.Sprintf("%s:%d imports %s (only %s may)",
				f.rel, f.fset.Position(imp.Pos()).Line, path, strings.Join(owners, ", ")))
		}
	}
	if len(offenders) > 0 {
		t.Errorf("%d imports of a Postgres driver outside the packages that own Postgres:\n%s",
			len(offenders), strings.Join(offenders, "\n"))
	}
}

// TestLongFuncsCounts checks the counting itself on a small source: a
// guard that miscounts passes everything.
func TestLongFuncsCounts(t *testing.T) {
	body := strings.Repeat("\tx++\n", maxFuncLines-2)
	src := "package p\n\n" +
		"func fits() {\n" + body + "}\n\n" +
		"func tooLong() {\n\tx++\n" + body + "}\n\n" +
		longMark + "a reason.\nfunc excused() {\n\tx++\n" + body + "}\n\n" +
		"func outer() {\n\tgo func() {\n\t\tx++\n" + body + "\t}()\n}\n\n" +
		"var x int\n"
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "p.go", src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, fn := range longFuncs(goFile{rel: "p.go", fset: fset, file: file}) {
		got = append(got, fmt.Sprintf("%s %d", fn.name, fn.lines))
	}
	want := []string{"tooLong 81", "outer 83", "outer func literal 81"}
	if !slices.Equal(got, want) {
		t.Errorf("long functions = %q, want %q", got, want)
	}
}

// longFunc is a function over maxFuncLines without a reason above it.
type longFunc struct {
	name        string
	line, lines int
}

// longFuncs lists f's functions and func literals over maxFuncLines that
// have no longMark comment directly above them.
func longFuncs(f goFile) []longFunc {
	excused := map[int]bool{} // lines directly below a longMark comment
	for _, g := range f.file.Comments {
		for _, c := range g.List {
			if strings.HasPrefix(c.Text, longMark) && strings.TrimSpace(strings.TrimPrefix(c.Text, longMark)) != "" {
				excused[f.fset.Position(g.End()).Line+1] = true
			}
		}
	}
	var out []longFunc
	check := func(name string, n ast.Node) {
		from, to := f.fset.Position(n.Pos()).Line, f.fset.Position(n.End()).Line
		if lines := to - from + 1; lines > maxFuncLines && !excused[from] {
			out = append(out, longFunc{name: name, line: from, lines: lines})
		}
	}
	for _, d := range f.file.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok {
			ast.Inspect(d, func(n ast.Node) bool {
				if lit, ok := n.(*ast.FuncLit); ok {
					check("func literal", lit)
				}
				return true
			})
			continue
		}
		name := funcName(fn)
		// The doc comment sits above `func`, so the position that counts
		// for an excuse is the declaration's, not its doc's.
		check(name, fn)
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			if lit, ok := n.(*ast.FuncLit); ok {
				check(name+" func literal", lit)
			}
			return true
		})
	}
	return out
}

// funcName is how funclen names a declaration: (*T).m, (T).m or f.
func funcName(fn *ast.FuncDecl) string {
	if fn.Recv == nil || len(fn.Recv.List) == 0 {
		return fn.Name.Name
	}
	typ := fn.Recv.List[0].Type
	star := ""
	if s, ok := typ.(*ast.StarExpr); ok {
		star, typ = "*", s.X
	}
	switch x := typ.(type) {
	case *ast.IndexExpr:
		typ = x.X
	case *ast.IndexListExpr:
		typ = x.X
	}
	id, _ := typ.(*ast.Ident)
	if id == nil {
		return fn.Name.Name
	}
	return "(" + star + id.Name + ")." + fn.Name.Name
}

// moduleFiles parses every Go file of the module, skipping testdata,
// vendor and hidden directories.
func moduleFiles(t *testing.T) []goFile {
	t.Helper()
	root := moduleRoot(t)
	var out []goFile
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		fset := token.NewFileSet()
		file, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		out = append(out, goFile{rel: filepath.ToSlash(rel), fset: fset, file: file})
		return nil
	})
	if err != nil {
		t.Fatalf("walk the module: %v", err)
	}
	if len(out) < 100 {
		t.Fatalf("found %d Go files under %s: not the module's root", len(out), root)
	}
	return out
}

// moduleRoot is the directory of go.mod above this file.
func moduleRoot(t *testing.T) string {
	t.Helper()
	_, here, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("runtime.Caller: no file")
	}
	for dir := filepath.Dir(here); ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		if filepath.Dir(dir) == dir {
			t.Fatalf("no go.mod above %s", here)
		}
	}
}
