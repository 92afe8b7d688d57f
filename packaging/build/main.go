// Command build makes realip's deb and rpm packages with nfpm: toa-dkms
// (the kernel module's source for DKMS), realip-agent and realip-edge.
//
//	cd packaging && go run ./build [flags]      (make packages)
//
//	-out DIR        where the packages go (default ../dist)
//	-version V      package version (default: from git describe, see version.go)
//	-arch LIST      GOARCHes of the binary packages (default amd64,arm64)
//	-format LIST    deb,rpm (default both)
//	-pkg LIST       toa-dkms,realip-agent,realip-edge (default all)
//
// The Go binaries are built with CGO_ENABLED=0 and -trimpath from the
// repository's main module (..); the package definitions are the nfpm
// configurations in nfpm/, the maintainer scripts the templates in
// scripts/ (see packaging/README.md). It prints the path of
// every package made, one a line, on stdout; what it does goes to stderr.
//
// This is its own module so that the library's go.mod does not pull in
// nfpm's dependencies.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// packages are the packages made, each from nfpm/NAME.yaml; binaries name
// the commands under cmd/ that it ships (none: an arch "all" package), man
// its manual pages in man/ (staged gzipped as STAGE/NAME/man/PAGE.gz).
type pkgDef struct {
	name     string
	binaries []string
	unit     string
	man      []string
}

var packages = []pkgDef{
	{name: "toa-dkms", man: []string{"toa.4"}},
	{name: "realip-agent", binaries: []string{"realip-agent"}, unit: "realip-agent.service",
		man: []string{"realip-agent.8", "realip-agent.yaml.5"}},
	{name: "realip-edge", binaries: []string{"realip-edge"}, unit: "realip-edge.service",
		man: []string{"realip-edge.8"}},
}

// defaultMaintainer is the Maintainer field; REALIP_MAINTAINER overrides it.
const defaultMaintainer = "realip maintainers <maintainers@realip.dev>"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "packaging/build:", err)
		os.Exit(1)
	}
}

// options are the command line of the packaging tool.
type options struct {
	out, version   string
	archs, formats []string
	want           []string // packages to make; nil: all
}

func run() error {
	o, err := parseOptions()
	if err != nil {
		return err
	}
	pkgDir, err := packagingDir()
	if err != nil {
		return err
	}
	repo := filepath.Dir(pkgDir)
	gi, err := buildInfo(repo, o.version)
	if err != nil {
		return err
	}
	outDir, err := filepath.Abs(o.out)
	if err != nil {
		return err
	}
	stage := filepath.Join(outDir, ".stage")
	if err := os.RemoveAll(stage); err != nil {
		return err
	}
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return err
	}
	maintainer := os.Getenv("REALIP_MAINTAINER")
	if maintainer == "" {
		maintainer = defaultMaintainer
	}
	s := &stager{repo: repo, pkgDir: pkgDir, stage: stage, info: gi, maintainer: maintainer}
	logf("version %s (commit %.12s)", gi.Version, gi.Commit)
	var made []string
	for _, p := range packages {
		if o.want != nil && !slices.Contains(o.want, p.name) {
			continue
		}
		paths, err := s.makeAll(p, o, outDir)
		if err != nil {
			return err
		}
		made = append(made, paths...)
	}
	for _, m := range made {
		fmt.Println(m)
	}
	return nil
}

// parseOptions reads and checks the command line.
func parseOptions() (options, error) {
	out := flag.String("out", "../dist", "output folder")
	version := flag.String("version", "", "package version (default: from git describe)")
	archList := flag.String("arch", "amd64,arm64", "GOARCHes of the binary packages")
	formatList := flag.String("format", "deb,rpm", "package formats")
	pkgList := flag.String("pkg", "", "packages to make (default all)")
	flag.Parse()
	o := options{out: *out, version: *version, archs: split(*archList), formats: split(*formatList)}
	if flag.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	for _, a := range o.archs {
		if a != "amd64" && a != "arm64" {
			return o, fmt.Errorf("-arch %q: amd64 and arm64 are supported", a)
		}
	}
	for _, f := range o.formats {
		if f != "deb" && f != "rpm" {
			return o, fmt.Errorf("-format %q: deb and rpm are supported", f)
		}
	}
	if *pkgList != "" {
		o.want = split(*pkgList)
		for _, w := range o.want {
			if !slices.ContainsFunc(packages, func(p pkgDef) bool { return p.name == w }) {
				return o, fmt.Errorf("-pkg %q: no such package", w)
			}
		}
	}
	return o, nil
}

// buildInfo is what git says of repo, with version (when set) as the
// package version.
func buildInfo(repo, version string) (gitInfo, error) {
	gi, err := describe(repo)
	if err != nil && version == "" {
		return gi, err
	}
	if version != "" {
		if err := checkVersion(version); err != nil {
			return gi, err
		}
		gi.Version = version
	}
	if gi.Time.IsZero() {
		gi.Time = time.Now().UTC().Truncate(time.Second)
	}
	if gi.Dirty {
		logf("warning: the work tree has uncommitted changes; the packages say version %s all the same", gi.Version)
	}
	return gi, nil
}

// makeAll builds p's binaries, stages p and makes its packages in every
// architecture and format of o, returning their paths.
func (s *stager) makeAll(p pkgDef, o options, outDir string) ([]string, error) {
	archs := o.archs
	if len(p.binaries) == 0 {
		archs = []string{"all"}
	}
	for _, arch := range archs {
		for _, b := range p.binaries {
			if err := s.buildBinary(b, arch); err != nil {
				return nil, err
			}
		}
	}
	if err := s.stagePackage(p, archs); err != nil {
		return nil, fmt.Errorf("%s: %w", p.name, err)
	}
	var made []string
	for _, arch := range archs {
		for _, format := range o.formats {
			path, err := makePackage(filepath.Join(s.pkgDir, "nfpm", p.name+".yaml"), format, arch, outDir, map[string]string{
				"VERSION":    s.info.Version,
				"ARCH":       arch,
				"STAGE":      s.stage,
				"PKG":        s.pkgDir,
				"REPO":       s.repo,
				"MAINTAINER": s.maintainer,
			}, s.info.Time)
			if err != nil {
				return nil, fmt.Errorf("%s %s %s: %w", p.name, arch, format, err)
			}
			made = append(made, path)
		}
	}
	return made, nil
}

// makePackage makes one package from an nfpm configuration, with vars as
// its ${...} variables (an unknown one is an error), and returns its path.
func makePackage(config, format, arch, outDir string, vars map[string]string, mtime time.Time) (string, error) {
	// The whole file is expanded first: nfpm expands only some fields
	// (not the scripts' paths, nor contents without expand: true).
	raw, err := os.ReadFile(config)
	if err != nil {
		return "", err
	}
	var unknown []string
	text := os.Expand(string(raw), func(k string) string {
		v, ok := vars[k]
		if !ok {
			unknown = append(unknown, k)
		}
		return v
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("%s: unknown variables %q", config, unknown)
	}
	// Nothing is left to expand; nfpm asks for its signing passphrases
	// (unsigned here) and gets "".
	cfg, err := nfpm.ParseWithEnvMapping(strings.NewReader(text), func(string) string { return "" })
	if err != nil {
		return "", fmt.Errorf("%s: %w", config, err)
	}
	info, err := cfg.Get(format)
	if err != nil {
		return "", err
	}
	if err := checkSources(config, info.Contents); err != nil {
		return "", err
	}
	info = nfpm.WithDefaults(info)
	info.MTime = mtime
	if err := nfpm.Validate(info); err != nil {
		return "", err
	}
	pkgr, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	target := filepath.Join(outDir, pkgr.ConventionalFileName(info))
	tmp := target + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	info.Target = target
	err = pkgr.Package(info, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, target)
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	logf("made %s", target)
	return target, nil
}

// checkSources fails, naming every missing file and where it would be
// installed, when a file the configuration installs does not exist (a
// page, a completion, the monitoring rules or dashboard not written yet):
// nfpm's own message would name one glob.
func checkSources(config string, contents files.Contents) error {
	var missing []string
	for _, c := range contents {
		switch c.Type {
		case files.TypeSymlink, files.TypeDir, files.TypeImplicitDir, files.TypeRPMGhost:
			continue
		}
		if _, err := os.Stat(c.Source); err != nil {
			missing = append(missing, fmt.Sprintf("%s (for %s)", c.Source, c.Destination))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s installs files that do not exist: %s", config, strings.Join(missing, ", "))
	}
	return nil
}

// packagingDir finds packaging/ (this module's root) from the working
// directory up (`go run ./build` runs in packaging/).
func packagingDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "nfpm", "realip-agent.yaml")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("run from the packaging folder (no nfpm/realip-agent.yaml above %s)", wd)
		}
	}
}

func split(s string) []string {
	var r []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			r = append(r, f)
		}
	}
	return r
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "packaging/build: "+format+"\n", args...)
}
