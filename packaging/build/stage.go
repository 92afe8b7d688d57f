package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// stager writes what the nfpm configurations take from ${STAGE}: the
// binaries, the DKMS source tree, the rendered maintainer scripts and the
// Debian copyright and changelog files.
type stager struct {
	repo, pkgDir, stage string
	info                gitInfo
	maintainer          string
}

// scriptSets maps the scripts of a package to their templates in scripts/.
var scriptSets = map[string]map[string]string{
	"toa-dkms": {
		"deb/postinst":  "deb/toa-dkms.postinst",
		"deb/prerm":     "deb/toa-dkms.prerm",
		"rpm/posttrans": "rpm/toa-dkms.posttrans",
		"rpm/preun":     "rpm/toa-dkms.preun",
	},
	"service": {
		"deb/postinst": "deb/service.postinst",
		"deb/prerm":    "deb/service.prerm",
		"deb/postrm":   "deb/service.postrm",
		"rpm/post":     "rpm/service.post",
		"rpm/preun":    "rpm/service.preun",
		"rpm/postun":   "rpm/service.postun",
	},
}

// kmodSources are the files of kmod/ that go into /usr/src/toa-VERSION:
// sources, headers and the build files; no build products. The license is
// the package's (copyright, or LICENSE in rpm's licenses folder).
var kmodSources = regexp.MustCompile(`^([a-z_]+\.[ch]|Kbuild|Makefile|dkms\.conf)$`)

// stagePackage stages what package p needs besides its binaries, which
// buildBinary must have built for archs before.
func (s *stager) stagePackage(p pkgDef, archs []string) error {
	name, unit, binaries := p.name, p.unit, p.binaries
	dir := filepath.Join(s.stage, name)
	if err := s.stageMan(p.man, filepath.Join(dir, "man")); err != nil {
		return err
	}
	set := "service"
	if len(binaries) == 0 {
		set = name
		if err := s.stageKmod(filepath.Join(dir, "src")); err != nil {
			return err
		}
	}
	vars := map[string]string{"PACKAGE": name, "UNIT": unit, "VERSION": s.info.Version}
	for dst, tmpl := range scriptSets[set] {
		if err := s.renderScript(filepath.Join(s.pkgDir, "scripts", tmpl), filepath.Join(dir, "scripts", dst), vars); err != nil {
			return err
		}
	}
	if err := s.writeCopyright(name, binaries, archs, filepath.Join(dir, "doc")); err != nil {
		return err
	}
	return s.writeChangelog(name, filepath.Join(dir, "doc", "changelog.Debian.gz"))
}

// stageKmod copies kmod/ to dst with the version in dkms.conf.
func (s *stager) stageKmod(dst string) error {
	src := filepath.Join(s.repo, "kmod")
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	n := 0
	for _, e := range ents {
		if !e.Type().IsRegular() || !kmodSources.MatchString(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if e.Name() == "dkms.conf" {
			if !bytes.Contains(b, []byte(`PACKAGE_VERSION="@VERSION@"`)) {
				return fmt.Errorf("kmod/dkms.conf has no PACKAGE_VERSION=\"@VERSION@\" line")
			}
			b = bytes.ReplaceAll(b, []byte("@VERSION@"), []byte(s.info.Version))
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			return err
		}
		n++
	}
	if _, err := os.Stat(filepath.Join(dst, "dkms.conf")); err != nil {
		return fmt.Errorf("kmod/dkms.conf: %w", err)
	}
	logf("staged %d files of kmod/ for DKMS", n)
	return nil
}

var placeholder = regexp.MustCompile(`@[A-Z_]+@`)

// renderScript writes a maintainer script from its template: "#@include
// FILE" lines are replaced by scripts/FILE, @NAME@ by vars[NAME]. A
// placeholder left over is an error, and so is a script sh -n rejects.
func (s *stager) renderScript(tmpl, dst string, vars map[string]string) error {
	b, err := os.ReadFile(tmpl)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if inc, ok := strings.CutPrefix(line, "#@include "); ok {
			ib, err := os.ReadFile(filepath.Join(s.pkgDir, "scripts", strings.TrimSpace(inc)))
			if err != nil {
				return fmt.Errorf("%s: %w", tmpl, err)
			}
			out.Write(ib)
			continue
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	text := placeholder.ReplaceAllStringFunc(out.String(), func(p string) string {
		if v, ok := vars[strings.Trim(p, "@")]; ok && v != "" {
			return v
		}
		return p
	})
	if left := placeholder.FindAllString(text, -1); left != nil {
		return fmt.Errorf("%s: no value for %v", tmpl, left)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(dst, []byte(text), 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("sh", "-n", dst).CombinedOutput(); err != nil {
		return fmt.Errorf("%s (from %s) is not valid sh: %v: %s", dst, tmpl, err, out)
	}
	return nil
}

// buildBinary builds cmd/NAME for linux/ARCH into STAGE/bin/linux-ARCH/.
func (s *stager) buildBinary(name, arch string) error {
	out := filepath.Join(s.stage, "bin", "linux-"+arch, name)
	if _, err := os.Stat(out); err == nil {
		return nil
	}
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -buildid=", "-o", out, "./cmd/"+name)
	cmd.Dir = s.repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/%s for %s: %w", name, arch, err)
	}
	logf("built %s for linux/%s", name, arch)
	return nil
}

// writeChangelog writes the changelog.Debian.gz Debian policy asks every
// package for: one entry, this version, dated at the commit.
func (s *stager) writeChangelog(name, dst string) error {
	commit := s.info.Commit
	if commit == "" {
		commit = "(not a git checkout)"
	}
	text := fmt.Sprintf("%s (%s-1) unstable; urgency=medium\n\n"+
		"  * Built by realip's packaging/build from commit %.12s.\n"+
		"    History: https://github.com/realip/realip/commits\n\n"+
		" -- %s  %s\n",
		name, s.info.Version, commit, s.maintainer, s.info.Time.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	return writeGzip(dst, []byte(text))
}

// writeGzip writes b gzipped at the best compression (what lintian asks
// of changelogs and manual pages) to dst, with no name and no time in the
// header: the same input gives the same file.
func writeGzip(dst string, b []byte) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(b); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, buf.Bytes(), 0o644)
}

// stageMan writes the manual pages (files of man/, e.g. "realip-agent.8")
// gzipped into dir, with @VERSION@ set; a placeholder left over is an
// error.
func (s *stager) stageMan(pages []string, dir string) error {
	for _, page := range pages {
		src := filepath.Join(s.pkgDir, "man", page)
		b, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("manual page: %w", err)
		}
		text := strings.ReplaceAll(string(b), "@VERSION@", s.info.Version)
		if left := placeholder.FindAllString(text, -1); left != nil {
			return fmt.Errorf("%s: no value for %v", src, left)
		}
		if err := writeGzip(filepath.Join(dir, page+".gz"), []byte(text)); err != nil {
			return err
		}
	}
	return nil
}

// writeCopyright writes doc/copyright (deb) and, for packages with Go
// binaries, doc/THIRD-PARTY (rpm): the package's own license, then every
// Go module linked into its binaries with its license text, as go version
// -m reports them from a built binary.
func (s *stager) writeCopyright(name string, binaries, archs []string, dir string) error {
	head, err := os.ReadFile(filepath.Join(s.pkgDir, "debian", name+".copyright"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if len(binaries) == 0 {
		return os.WriteFile(filepath.Join(dir, "copyright"), head, 0o644)
	}
	third, err := s.thirdParty(binaries, archs)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "THIRD-PARTY"), third, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "copyright"), append(append(head, '\n'), third...), 0o644)
}

// thirdParty lists the Go modules built into the binaries (for every
// architecture: go version -m of each) and their licenses.
func (s *stager) thirdParty(binaries, archs []string) ([]byte, error) {
	mods := map[string]string{} // path -> version
	for _, b := range binaries {
		for _, arch := range archs {
			bin := filepath.Join(s.stage, "bin", "linux-"+arch, b)
			out, err := exec.Command("go", "version", "-m", bin).Output()
			if err != nil {
				return nil, fmt.Errorf("go version -m %s: %w", bin, err)
			}
			for line := range strings.SplitSeq(string(out), "\n") {
				f := strings.Fields(line)
				if len(f) >= 3 && f[0] == "dep" {
					mods[f[1]] = f[2]
				}
				if len(f) >= 1 && f[0] == "=>" {
					return nil, fmt.Errorf("%s: replaced module (%s): the license lookup does not handle replacements", bin, strings.TrimSpace(line))
				}
			}
		}
	}
	modcache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		return nil, err
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, err
	}
	paths := make([]string, 0, len(mods))
	for p := range mods {
		paths = append(paths, p)
	}
	sort.Strings(paths)

	var buf bytes.Buffer
	fmt.Fprintf(&buf, "Statically linked into %s: the Go standard library and runtime, and\n", strings.Join(binaries, ", "))
	fmt.Fprintf(&buf, "these Go modules. Their licenses follow.\n\n")
	fmt.Fprintf(&buf, "  Go standard library and runtime (The Go Authors)\n")
	for _, p := range paths {
		fmt.Fprintf(&buf, "  %s %s\n", p, mods[p])
	}
	if err := licenseSection(&buf, "Go standard library and runtime", strings.TrimSpace(string(goroot))); err != nil {
		return nil, err
	}
	for _, p := range paths {
		dir := filepath.Join(strings.TrimSpace(string(modcache)), escapeModulePath(p)+"@"+mods[p])
		if err := licenseSection(&buf, p+" "+mods[p], dir); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// licenseSection appends the license files of the module in dir. Apache
// 2.0 texts are referred to, as Debian ships that license.
func licenseSection(buf *bytes.Buffer, what, dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("license of %s: %w (is the module downloaded? go mod download)", what, err)
	}
	found := false
	for _, e := range ents {
		up := strings.ToUpper(e.Name())
		if e.IsDir() || !(strings.HasPrefix(up, "LICENSE") || strings.HasPrefix(up, "LICENCE") ||
			strings.HasPrefix(up, "COPYING") || strings.HasPrefix(up, "NOTICE")) {
			continue
		}
		b, err := fs.ReadFile(os.DirFS(dir), e.Name())
		if err != nil {
			return err
		}
		found = true
		fmt.Fprintf(buf, "\n-------------------------------------------------------------------------\n%s: %s\n\n", what, e.Name())
		text := strings.TrimSpace(string(b))
		if strings.Contains(text, "Apache License") && strings.Contains(text, "Version 2.0, January 2004") &&
			strings.Contains(text, "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION") {
			buf.WriteString("Apache License, Version 2.0: on Debian systems the full text is in\n/usr/share/common-licenses/Apache-2.0 (and at https://www.apache.org/licenses/LICENSE-2.0).\n")
			continue
		}
		buf.WriteString(text)
		buf.WriteByte('\n')
	}
	if !found {
		return fmt.Errorf("license of %s: no LICENSE, COPYING or NOTICE file in %s", what, dir)
	}
	return nil
}

// escapeModulePath is the module cache's escaping: an upper-case letter
// becomes '!' and the letter in lower case.
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('!')
			b.WriteRune(r + ('a' - 'A'))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
