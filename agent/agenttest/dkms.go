//go:build linux

package agenttest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/realip/realip/internal/testenv"
)

// DKMS is a DKMS tree and module install tree of a test's own, read by
// the real dkms command (--dkmstree, --installtree): the states of toa
// that `dkms status toa` reports are made by putting its files where
// dkms looks for them, without building anything or touching the
// machine's /var/lib/dkms.
type DKMS struct {
	t       testing.TB
	Tree    string // --dkmstree
	Install string // --installtree: the /lib/modules of the test
}

// NewDKMS returns an empty tree. Without dkms the test stops (see
// testenv.SkipOrFail).
func NewDKMS(t testing.TB) *DKMS {
	t.Helper()
	testenv.RequireCommand(t, "dkms")
	dir := t.TempDir()
	return &DKMS{t: t, Tree: filepath.Join(dir, "dkms"), Install: filepath.Join(dir, "modules")}
}

// Command is the dkms command with the test's trees, for
// agent.DoctorOptions.DKMS.
func (d *DKMS) Command() []string {
	return []string{"dkms", "--dkmstree", d.Tree, "--installtree", d.Install}
}

// Add registers toa version with DKMS (`dkms add`: its source folder
// with kmod/dkms.conf).
func (d *DKMS) Add(version string) {
	d.t.Helper()
	conf, err := os.ReadFile(filepath.Join(moduleRoot(d.t), "kmod", "dkms.conf"))
	if err != nil {
		d.t.Fatal(err)
	}
	d.write(filepath.Join(d.Tree, "toa", version, "source", "dkms.conf"),
		strings.ReplaceAll(string(conf), "@VERSION@", version))
}

// Build makes toa version built for kernel (`dkms build`).
func (d *DKMS) Build(version, kernel string) {
	d.t.Helper()
	d.write(d.built(version, kernel), "toa.ko "+version+" for "+kernel)
}

// Installed makes toa version installed for kernel (`dkms install`); with
// differ, the installed file is not the one DKMS built.
func (d *DKMS) Installed(version, kernel string, differ bool) {
	d.t.Helper()
	d.Build(version, kernel)
	content := "toa.ko " + version + " for " + kernel
	if differ {
		content += ", changed"
	}
	d.write(filepath.Join(d.Install, kernel, "updates", "dkms", "toa.ko"), content)
	link := filepath.Join(d.Tree, "toa", "kernel-"+kernel+"-x86_64")
	if err := os.Symlink(filepath.Join(d.Tree, "toa", version, kernel, "x86_64"), link); err != nil {
		d.t.Fatal(err)
	}
}

func (d *DKMS) built(version, kernel string) string {
	return filepath.Join(d.Tree, "toa", version, kernel, "x86_64", "module", "toa.ko")
}

func (d *DKMS) write(path, content string) {
	d.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		d.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		d.t.Fatal(err)
	}
}
