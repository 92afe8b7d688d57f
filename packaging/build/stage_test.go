package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/goreleaser/nfpm/v2/files"
)

func TestCheckSources(t *testing.T) {
	dir := t.TempDir()
	have := filepath.Join(dir, "have")
	if err := os.WriteFile(have, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	contents := files.Contents{
		{Source: have, Destination: "/usr/share/x/have"},
		{Source: filepath.Join(dir, "rules.yml"), Destination: "/usr/share/realip/rules.yml"},
		{Source: filepath.Join(dir, "page.8.gz"), Destination: "/usr/share/man/man8/page.8.gz", Type: files.TypeRPMDoc},
		{Source: "/nowhere", Destination: "/usr/bin/link", Type: files.TypeSymlink},
	}
	err := checkSources("nfpm/x.yaml", contents)
	if err == nil {
		t.Fatal("no error for missing files")
	}
	for _, want := range []string{
		"nfpm/x.yaml installs files that do not exist: ",
		filepath.Join(dir, "rules.yml") + " (for /usr/share/realip/rules.yml)",
		filepath.Join(dir, "page.8.gz") + " (for /usr/share/man/man8/page.8.gz)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "have") || strings.Contains(err.Error(), "/nowhere") {
		t.Errorf("error %q names a file that is there, or a symlink's target", err)
	}
	if err := checkSources("nfpm/x.yaml", contents[:1]); err != nil {
		t.Errorf("all there: %v", err)
	}
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("%s: gzip header has name %q, time %v (not reproducible)", path, zr.Name, zr.ModTime)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStageMan(t *testing.T) {
	pkg := t.TempDir()
	if err := os.Mkdir(filepath.Join(pkg, "man"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(pkg, "man", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("x.8", ".TH x 8 \"\" \"realip @VERSION@\"\n")
	write("bad.5", ".TH bad 5 \"\" \"realip @VERSION@ @OTHER@\"\n")
	s := &stager{pkgDir: pkg, info: gitInfo{Version: "1.2.3~rc.1"}}
	out := t.TempDir()
	if err := s.stageMan([]string{"x.8"}, out); err != nil {
		t.Fatal(err)
	}
	if got, want := gunzip(t, filepath.Join(out, "x.8.gz")), ".TH x 8 \"\" \"realip 1.2.3~rc.1\"\n"; got != want {
		t.Errorf("staged page %q, want %q", got, want)
	}
	first, _ := os.ReadFile(filepath.Join(out, "x.8.gz"))
	if err := s.stageMan([]string{"x.8"}, out); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(filepath.Join(out, "x.8.gz")); !bytes.Equal(first, again) {
		t.Error("staging the same page twice gives different bytes")
	}
	if err := s.stageMan([]string{"bad.5"}, out); err == nil || !strings.Contains(err.Error(), "no value for [@OTHER@]") {
		t.Errorf("page with an unknown placeholder: %v", err)
	}
	if err := s.stageMan([]string{"none.1"}, out); err == nil || !strings.Contains(err.Error(), "manual page") {
		t.Errorf("missing page: %v", err)
	}
}

// TestEveryPagePackaged: every page in man/ is shipped by one package, and
// every page a package ships is there.
func TestEveryPagePackaged(t *testing.T) {
	pages, err := filepath.Glob(filepath.Join("..", "man", "*.[1-9]"))
	if err != nil {
		t.Fatal(err)
	}
	var have, shipped []string
	for _, p := range pages {
		have = append(have, filepath.Base(p))
	}
	for _, p := range packages {
		shipped = append(shipped, p.man...)
	}
	slices.Sort(have)
	slices.Sort(shipped)
	if !slices.Equal(have, shipped) {
		t.Errorf("man/ has %q; the packages ship %q", have, shipped)
	}
}
