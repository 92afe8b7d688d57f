package cmddoc

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// manPages returns the pages in ManDir: file name -> path.
func manPages(t *testing.T) map[string]string {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	paths, err := filepath.Glob(filepath.Join(root, ManDir, "*.[1-9]"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("no manual pages in %s", ManDir)
	}
	out := make(map[string]string)
	for _, p := range paths {
		out[filepath.Base(p)] = p
	}
	return out
}

// TestPagesLint formats every page with groff and man-db as lintian does:
// not a single warning.
func TestPagesLint(t *testing.T) {
	RequireLintTools(t)
	for name, path := range manPages(t) {
		warnings, err := Lint(path)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		for _, w := range warnings {
			t.Errorf("%s: %s", name, w)
		}
	}
}

var nameLine = regexp.MustCompile(`^([a-z0-9][a-z0-9._-]*) - \S`)

// TestPagesStructure checks what every page must have: a .TH naming the
// file's page and section, a NAME line "name - what" (the whatis entry
// mandb and lintian read), the usual sections, and references to realip's
// own pages that exist.
func TestPagesStructure(t *testing.T) {
	pages := manPages(t)
	for file, path := range pages {
		p, err := Read(path)
		if err != nil {
			t.Error(err)
			continue
		}
		if want := p.Name + "." + p.Section; want != file {
			t.Errorf("%s: .TH says %s(%s), which is file %s", file, p.Name, p.Section, want)
		}
		lines, err := p.Lines("NAME")
		if err != nil || len(lines) != 1 || !nameLine.MatchString(lines[0]) || !strings.HasPrefix(lines[0], p.Name+" - ") {
			t.Errorf("%s: NAME must be one line %q, got %q (%v)", file, p.Name+" - description", lines, err)
		}
		for _, h := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"} {
			if _, err := p.Lines(h); err != nil {
				t.Errorf("%s: %v", file, err)
			}
		}
		checkReferences(t, file, p, pages)
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), `"realip @VERSION@"`) {
			t.Errorf("%s: .TH's source is not \"realip @VERSION@\" (packaging/build sets the version)", file)
		}
	}
}

var reference = regexp.MustCompile(`\b((?:realip-[a-z.-]+|toa))\(([1-9])\)`)

// checkReferences fails for a reference to one of realip's pages
// (realip-*(N), toa(N)) that is not in ManDir.
func checkReferences(t *testing.T, file string, p *Page, pages map[string]string) {
	t.Helper()
	for _, h := range p.Headings() {
		text, err := p.Text(h)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range reference.FindAllStringSubmatch(text, -1) {
			if _, ok := pages[m[1]+"."+m[2]]; !ok {
				t.Errorf("%s: %s refers to %s(%s), which is not in %s", file, h, m[1], m[2], ManDir)
			}
		}
	}
}
