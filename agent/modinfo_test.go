//go:build linux

package agent

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/realip/realip/internal/testenv"
)

const (
	testRelease  = "6.1.0-56-amd64"
	otherRelease = "6.1.0-55-amd64"
)

// realipFields are the .modinfo entries of a realip toa.ko built for rel.
func realipFields(rel string) []string {
	return []string{
		"version=0.1.0",
		"description=realip TOA: real client addresses from a TCP option",
		"author=realip",
		"license=GPL",
		"parm=trusted:comma-separated source prefixes",
		"parm=kinds:comma-separated TCP option kinds",
		"srcversion=0123456789ABCDEF012345",
		"depends=",
		"name=toa",
		"vermagic=" + rel + " SMP preempt mod_unload modversions ",
	}
}

// buildObject compiles, with gcc -c, a C file holding each field as a
// string in the .modinfo section (as the kernel's MODULE_INFO does) and
// returns the object file's path. No fields: no .modinfo section at all.
func buildObject(t testing.TB, dir, name string, fields ...string) string {
	t.Helper()
	gcc := testenv.RequireCommand(t, "gcc")
	var src strings.Builder
	src.WriteString("int toa_dummy_symbol(void) { return 42; }\n")
	for i, f := range fields {
		fmt.Fprintf(&src, "static const char modinfo_%d[] __attribute__((section(\".modinfo\"), used, aligned(1))) = %q;\n", i, f)
	}
	c := filepath.Join(dir, name+".c")
	if err := os.WriteFile(c, []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	if b, err := exec.Command(gcc, "-c", "-o", out, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, b)
	}
	return out
}

// buildModule is buildObject named NAME.ko.
func buildModule(t testing.TB, dir string, fields ...string) string {
	t.Helper()
	return buildObject(t, dir, "toa.ko", fields...)
}

func TestParseModInfoRealELF(t *testing.T) {
	p := buildModule(t, t.TempDir(), realipFields(testRelease)...)
	m, err := ReadModuleFile(p)
	if err != nil {
		t.Fatal(err)
	}
	i := m.Info
	if m.Compression != CompressNone || i.Name != "toa" || i.Version != "0.1.0" ||
		i.Vermagic != testRelease+" SMP preempt mod_unload modversions " || i.Release() != testRelease ||
		i.SrcVersion != "0123456789ABCDEF012345" || i.Author != "realip" || i.License != "GPL" || !i.IsRealip() {
		t.Errorf("modinfo %+v", i)
	}
	if got := i.Fields["parm"]; len(got) != 2 || !strings.HasPrefix(got[1], "kinds:") {
		t.Errorf("parm = %q", got)
	}
	if err := CheckModule(m, testRelease); err != nil {
		t.Errorf("CheckModule for the right kernel: %v", err)
	}
}

// TestVermagicOnly is the minimal module of the issue: one vermagic line.
func TestVermagicOnly(t *testing.T) {
	p := buildModule(t, t.TempDir(), "vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions ")
	m, err := ReadModuleFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if m.Info.Release() != "6.1.0-56-amd64" || m.Info.Name != "" {
		t.Fatalf("%+v", m.Info)
	}
	// Right kernel, but no sign of being realip's module.
	err = CheckModule(m, "6.1.0-56-amd64")
	if err == nil || !strings.Contains(err.Error(), "not realip's toa.ko") || !strings.Contains(err.Error(), "realip-agent exporter") {
		t.Errorf("CheckModule: %v", err)
	}
	var ve *VermagicError
	if err := CheckModule(m, "6.12.117+deb12-amd64"); !errors.As(err, &ve) {
		t.Errorf("wrong kernel: %v", err)
	} else if !strings.Contains(err.Error(), "dkms install toa/VERSION -k 6.12.117+deb12-amd64") {
		t.Errorf("no version in modinfo: %v", err)
	}
}

func TestVermagicRefusalMessage(t *testing.T) {
	dir := t.TempDir()
	p := buildModule(t, dir, realipFields(otherRelease)...)
	m, err := ReadModuleFile(p)
	if err != nil {
		t.Fatal(err)
	}
	err = CheckModule(m, testRelease)
	var ve *VermagicError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want a *VermagicError", err)
	}
	if ve.ModuleRelease != otherRelease || ve.KernelRelease != testRelease || ve.ModuleVersion != "0.1.0" || ve.Path != p {
		t.Errorf("%+v", ve)
	}
	msg := err.Error()
	for _, want := range []string{
		p,
		"built for kernel " + otherRelease,
		"running kernel is " + testRelease,
		`vermagic "` + otherRelease + ` SMP preempt mod_unload modversions "`,
		"`dkms install toa/0.1.0 -k " + testRelease + "`",
		"`make -C kmod KDIR=/lib/modules/" + testRelease + "/build`",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
}

func TestCheckModuleOtherName(t *testing.T) {
	fields := realipFields(testRelease)
	fields[8] = "name=hello"
	m, err := ReadModuleFile(buildModule(t, t.TempDir(), fields...))
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckModule(m, testRelease); err == nil || !strings.Contains(err.Error(), `the module "hello", not "toa"`) {
		t.Errorf("CheckModule: %v", err)
	}
}

// compressWith compresses src the way kbuild does when the tool is
// installed (xz --check=crc32 --lzma2=dict=1MiB, zstd -T0), else with the
// Go libraries the agent reads them with.
func compressWith(t *testing.T, format string, src []byte) []byte {
	t.Helper()
	var tool []string
	switch format {
	case CompressXZ:
		tool = []string{"xz", "--check=crc32", "--lzma2=dict=1MiB", "-c"}
	case CompressZstd:
		tool = []string{"zstd", "-q", "-c"}
	}
	if tool != nil {
		if _, err := exec.LookPath(tool[0]); err == nil {
			cmd := exec.Command(tool[0], tool[1:]...)
			cmd.Stdin = bytes.NewReader(src)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s: %v", tool[0], err)
			}
			return out
		}
	}
	var b bytes.Buffer
	switch format {
	case CompressXZ:
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(src)
		w.Close()
	case CompressZstd:
		w, _ := zstd.NewWriter(&b)
		w.Write(src)
		w.Close()
	case CompressGzip:
		w := gzip.NewWriter(&b)
		w.Write(src)
		w.Close()
	}
	return b.Bytes()
}

func TestCompressedModules(t *testing.T) {
	dir := t.TempDir()
	plain := buildModule(t, dir, realipFields(testRelease)...)
	img, _ := os.ReadFile(plain)
	for _, tc := range []struct{ format, ext string }{
		{CompressXZ, ".xz"}, {CompressZstd, ".zst"}, {CompressGzip, ".gz"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			comp := compressWith(t, tc.format, img)
			p := plain + tc.ext
			os.WriteFile(p, comp, 0o644)
			m, err := ReadModuleFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if m.Compression != tc.format || !bytes.Equal(m.Image, img) || m.Info.Release() != testRelease || !m.Info.IsRealip() {
				t.Errorf("compression %q, %d image bytes, %+v", m.Compression, len(m.Image), m.Info)
			}
			// The magic decides, not the name.
			renamed := filepath.Join(dir, "renamed-"+tc.format+".ko")
			os.WriteFile(renamed, comp, 0o644)
			if m, err := ReadModuleFile(renamed); err != nil || m.Compression != tc.format {
				t.Errorf("renamed: %v", err)
			}
			// A cut file is an error, not a panic or a silent short image.
			cut := filepath.Join(dir, "cut"+tc.ext)
			os.WriteFile(cut, comp[:len(comp)/2], 0o644)
			if _, err := ReadModuleFile(cut); err == nil || !strings.Contains(err.Error(), tc.format+"-compressed module") {
				t.Errorf("truncated %s: %v", tc.format, err)
			}
		})
	}
}

func TestNotAModule(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "text.ko")
	os.WriteFile(text, []byte("this is not a module\n"), 0o644)

	noModinfo := buildObject(t, dir, "plain.o")
	noVermagic := buildObject(t, dir, "novermagic.ko", "name=toa", "author=realip")

	gcc := testenv.RequireCommand(t, "gcc")
	exe := filepath.Join(dir, "prog")
	os.WriteFile(exe+".c", []byte("int main(void) { return 0; }\n"), 0o644)
	if b, err := exec.Command(gcc, "-o", exe, exe+".c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, b)
	}

	// The same object with another machine in its ELF header.
	foreign := filepath.Join(dir, "arm.ko")
	img, _ := os.ReadFile(buildModule(t, dir, realipFields(testRelease)...))
	other := elf.EM_AARCH64
	if want, ok := elfMachines["arm64"]; ok && binary.LittleEndian.Uint16(img[18:]) == uint16(want) {
		other = elf.EM_X86_64
	}
	binary.LittleEndian.PutUint16(img[18:], uint16(other))
	os.WriteFile(foreign, img, 0o644)

	for _, tc := range []struct{ path, want string }{
		{text, "not a kernel module (not ELF"},
		{noModinfo, "no .modinfo section"},
		{noVermagic, "no vermagic"},
		{exe, "ELF type"},
		{foreign, "built for " + other.String()},
		{filepath.Join(dir, "missing.ko"), "no such file"},
	} {
		_, err := ReadModuleFile(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("%s: %v, want an error with %q and the path", filepath.Base(tc.path), err, tc.want)
		}
	}
}

func TestFindModule(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, testRelease)
	put := func(rel string) string {
		p := filepath.Join(base, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("x"), 0o644)
		return p
	}
	if _, err := FindModule(root, testRelease); err == nil ||
		!strings.Contains(err.Error(), "no toa.ko for the running kernel "+testRelease) ||
		!strings.Contains(err.Error(), "dkms install toa/VERSION -k "+testRelease) ||
		!strings.Contains(err.Error(), filepath.Join(base, "updates/dkms")) {
		t.Errorf("empty tree: %v", err)
	}
	inTree := put("kernel/net/ipv4/toa.ko.xz")
	put("kernel/net/ipv4/toa_helper.ko")
	if p, err := FindModule(root, testRelease); err != nil || p != inTree {
		t.Errorf("kernel/: %q %v", p, err)
	}
	plainInTree := put("kernel/extra-net/toa.ko")
	if p, _ := FindModule(root, testRelease); p != plainInTree {
		t.Errorf("kernel/ prefers the uncompressed file: %q", p)
	}
	updates := put("updates/toa.ko")
	if p, _ := FindModule(root, testRelease); p != updates {
		t.Errorf("updates/: %q", p)
	}
	extra := put("extra/toa.ko.zst")
	if p, _ := FindModule(root, testRelease); p != extra {
		t.Errorf("extra/: %q", p)
	}
	dkms := put("updates/dkms/toa.ko.xz")
	if p, _ := FindModule(root, testRelease); p != dkms {
		t.Errorf("updates/dkms: %q", p)
	}
	dkmsPlain := put("updates/dkms/toa.ko")
	if p, _ := FindModule(root, testRelease); p != dkmsPlain {
		t.Errorf("updates/dkms prefers toa.ko: %q", p)
	}
	if _, err := FindModule(root, otherRelease); err == nil {
		t.Error("found a module for another release")
	}
}

// TestSysKernelWithoutModuleSupport runs the real finit_module on a kernel
// without loadable modules (this project's development machines): the
// error must say so. Elsewhere the test would load a module, so it skips.
func TestSysKernelWithoutModuleSupport(t *testing.T) {
	if _, err := os.Stat("/proc/modules"); err == nil {
		t.Skip("this kernel supports modules; finit_module is exercised in the VM (agent/vmtest)")
	}
	m, err := ReadModuleFile(buildModule(t, t.TempDir(), realipFields(testRelease)...))
	if err != nil {
		t.Fatal(err)
	}
	err = SysKernel{}.Load(m, "trusted=198.51.100.0/24")
	if err == nil || !strings.Contains(err.Error(), "no loadable module support") || !strings.Contains(err.Error(), "finit_module") {
		t.Errorf("Load: %v", err)
	}
	if err := (SysKernel{}).Unload("toa"); err == nil {
		t.Error("Unload succeeded without module support")
	}
}
