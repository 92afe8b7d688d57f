//go:build linux

package agent_test

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/realip/realip/agent"
	"github.com/realip/realip/agent/agenttest"
	"github.com/realip/realip/internal/testenv"
)

func TestParseModInfoRealELF(t *testing.T) {
	p := agenttest.BuildModule(t, t.TempDir(), agenttest.RealipFields(agenttest.KernelRelease)...)
	m, err := agent.ReadModuleFile(p)
	if err != nil {
		t.Fatal(err)
	}
	i := m.Info
	if m.Compression != agent.CompressNone || i.Name != "toa" || i.Version != "0.1.0" ||
		i.Vermagic != agenttest.KernelRelease+" SMP preempt mod_unload modversions " || i.Release() != agenttest.KernelRelease ||
		i.SrcVersion != "0123456789ABCDEF012345" || i.Author != "realip" || i.License != "GPL" || !i.IsRealip() {
		t.Errorf("modinfo %+v", i)
	}
	if got := i.Fields["parm"]; len(got) != 2 || !strings.HasPrefix(got[1], "kinds:") {
		t.Errorf("parm = %q", got)
	}
	if err := agent.CheckModule(m, agenttest.KernelRelease); err != nil {
		t.Errorf("CheckModule for the right kernel: %v", err)
	}
}

// TestVermagicOnly is the minimal module of the issue: one vermagic line.
func TestVermagicOnly(t *testing.T) {
	p := agenttest.BuildModule(t, t.TempDir(), "vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions ")
	m, err := agent.ReadModuleFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if m.Info.Release() != "6.1.0-56-amd64" || m.Info.Name != "" {
		t.Fatalf("%+v", m.Info)
	}
	// Right kernel, but no sign of being realip's module.
	err = agent.CheckModule(m, "6.1.0-56-amd64")
	if err == nil || !strings.Contains(err.Error(), "not realip's toa.ko") || !strings.Contains(err.Error(), "realip-agent exporter") {
		t.Errorf("CheckModule: %v", err)
	}
	var ve *agent.VermagicError
	if err := agent.CheckModule(m, "6.12.117+deb12-amd64"); !errors.As(err, &ve) {
		t.Errorf("wrong kernel: %v", err)
	} else if !strings.Contains(err.Error(), "dkms install toa/VERSION -k 6.12.117+deb12-amd64") {
		t.Errorf("no version in modinfo: %v", err)
	}
}

func TestVermagicRefusalMessage(t *testing.T) {
	dir := t.TempDir()
	p := agenttest.BuildModule(t, dir, agenttest.RealipFields(agenttest.OtherRelease)...)
	m, err := agent.ReadModuleFile(p)
	if err != nil {
		t.Fatal(err)
	}
	err = agent.CheckModule(m, agenttest.KernelRelease)
	var ve *agent.VermagicError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want a *agent.VermagicError", err)
	}
	if ve.ModuleRelease != agenttest.OtherRelease || ve.KernelRelease != agenttest.KernelRelease || ve.ModuleVersion != "0.1.0" || ve.Path != p {
		t.Errorf("%+v", ve)
	}
	msg := err.Error()
	for _, want := range []string{
		p,
		"built for kernel " + agenttest.OtherRelease,
		"running kernel is " + agenttest.KernelRelease,
		`vermagic "` + agenttest.OtherRelease + ` SMP preempt mod_unload modversions "`,
		"`dkms install toa/0.1.0 -k " + agenttest.KernelRelease + "`",
		"`make -C kmod KDIR=/lib/modules/" + agenttest.KernelRelease + "/build`",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
}

func TestCheckModuleOtherName(t *testing.T) {
	fields := agenttest.RealipFields(agenttest.KernelRelease)
	fields[8] = "name=hello"
	m, err := agent.ReadModuleFile(agenttest.BuildModule(t, t.TempDir(), fields...))
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.CheckModule(m, agenttest.KernelRelease); err == nil || !strings.Contains(err.Error(), `the module "hello", not "toa"`) {
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
	case agent.CompressXZ:
		tool = []string{"xz", "--check=crc32", "--lzma2=dict=1MiB", "-c"}
	case agent.CompressZstd:
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
	case agent.CompressXZ:
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(src)
		w.Close()
	case agent.CompressZstd:
		w, _ := zstd.NewWriter(&b)
		w.Write(src)
		w.Close()
	case agent.CompressGzip:
		w := gzip.NewWriter(&b)
		w.Write(src)
		w.Close()
	}
	return b.Bytes()
}

func TestCompressedModules(t *testing.T) {
	dir := t.TempDir()
	plain := agenttest.BuildModule(t, dir, agenttest.RealipFields(agenttest.KernelRelease)...)
	img, _ := os.ReadFile(plain)
	for _, tc := range []struct{ format, ext string }{
		{agent.CompressXZ, ".xz"}, {agent.CompressZstd, ".zst"}, {agent.CompressGzip, ".gz"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			comp := compressWith(t, tc.format, img)
			p := plain + tc.ext
			os.WriteFile(p, comp, 0o644)
			m, err := agent.ReadModuleFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if m.Compression != tc.format || !bytes.Equal(m.Image, img) || m.Info.Release() != agenttest.KernelRelease || !m.Info.IsRealip() {
				t.Errorf("compression %q, %d image bytes, %+v", m.Compression, len(m.Image), m.Info)
			}
			// The magic decides, not the name.
			renamed := filepath.Join(dir, "renamed-"+tc.format+".ko")
			os.WriteFile(renamed, comp, 0o644)
			if m, err := agent.ReadModuleFile(renamed); err != nil || m.Compression != tc.format {
				t.Errorf("renamed: %v", err)
			}
			// A cut file is an error, not a panic or a silent short image.
			cut := filepath.Join(dir, "cut"+tc.ext)
			os.WriteFile(cut, comp[:len(comp)/2], 0o644)
			if _, err := agent.ReadModuleFile(cut); err == nil || !strings.Contains(err.Error(), tc.format+"-compressed module") {
				t.Errorf("truncated %s: %v", tc.format, err)
			}
		})
	}
}

func TestNotAModule(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "text.ko")
	os.WriteFile(text, []byte("this is not a module\n"), 0o644)

	noModinfo := agenttest.BuildObject(t, dir, "plain.o")
	noVermagic := agenttest.BuildObject(t, dir, "novermagic.ko", "name=toa", "author=realip")

	gcc := testenv.RequireCommand(t, "gcc")
	exe := filepath.Join(dir, "prog")
	os.WriteFile(exe+".c", []byte("int main(void) { return 0; }\n"), 0o644)
	if b, err := exec.Command(gcc, "-o", exe, exe+".c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, b)
	}

	// The same object with another machine in its ELF header.
	foreign := filepath.Join(dir, "arm.ko")
	img, _ := os.ReadFile(agenttest.BuildModule(t, dir, agenttest.RealipFields(agenttest.KernelRelease)...))
	other := elf.EM_AARCH64
	if elf.Machine(binary.LittleEndian.Uint16(img[18:])) == elf.EM_AARCH64 {
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
		_, err := agent.ReadModuleFile(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("%s: %v, want an error with %q and the path", filepath.Base(tc.path), err, tc.want)
		}
	}
}

func TestFindModule(t *testing.T) {
	root := t.TempDir()
	base := filepath.Join(root, agenttest.KernelRelease)
	put := func(rel string) string {
		p := filepath.Join(base, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("x"), 0o644)
		return p
	}
	if _, err := agent.FindModule(root, agenttest.KernelRelease); err == nil ||
		!strings.Contains(err.Error(), "no toa.ko for the running kernel "+agenttest.KernelRelease) ||
		!strings.Contains(err.Error(), "dkms install toa/VERSION -k "+agenttest.KernelRelease) ||
		!strings.Contains(err.Error(), filepath.Join(base, "updates/dkms")) {
		t.Errorf("empty tree: %v", err)
	}
	inTree := put("kernel/net/ipv4/toa.ko.xz")
	put("kernel/net/ipv4/toa_helper.ko")
	if p, err := agent.FindModule(root, agenttest.KernelRelease); err != nil || p != inTree {
		t.Errorf("kernel/: %q %v", p, err)
	}
	plainInTree := put("kernel/extra-net/toa.ko")
	if p, _ := agent.FindModule(root, agenttest.KernelRelease); p != plainInTree {
		t.Errorf("kernel/ prefers the uncompressed file: %q", p)
	}
	updates := put("updates/toa.ko")
	if p, _ := agent.FindModule(root, agenttest.KernelRelease); p != updates {
		t.Errorf("updates/: %q", p)
	}
	extra := put("extra/toa.ko.zst")
	if p, _ := agent.FindModule(root, agenttest.KernelRelease); p != extra {
		t.Errorf("extra/: %q", p)
	}
	dkms := put("updates/dkms/toa.ko.xz")
	if p, _ := agent.FindModule(root, agenttest.KernelRelease); p != dkms {
		t.Errorf("updates/dkms: %q", p)
	}
	dkmsPlain := put("updates/dkms/toa.ko")
	if p, _ := agent.FindModule(root, agenttest.KernelRelease); p != dkmsPlain {
		t.Errorf("updates/dkms prefers toa.ko: %q", p)
	}
	if _, err := agent.FindModule(root, agenttest.OtherRelease); err == nil {
		t.Error("found a module for another release")
	}
}

// TestSysKernelWithoutModuleSupport runs the real finit_module on a kernel
// without loadable modules (this project's development machines): the
// error must say so. Elsewhere the test would load a module, so it skips.
func TestSysKernelWithoutModuleSupport(t *testing.T) {
	if _, err := os.Stat("/proc/modules"); err == nil {
		t.Skip("this kernel supports modules; finit_module is exercised in the VM (vmtest/agent)")
	}
	m, err := agent.ReadModuleFile(agenttest.BuildModule(t, t.TempDir(), agenttest.RealipFields(agenttest.KernelRelease)...))
	if err != nil {
		t.Fatal(err)
	}
	err = agent.SysKernel{}.Load(m, "trusted=198.51.100.0/24")
	if err == nil || !strings.Contains(err.Error(), "no loadable module support") || !strings.Contains(err.Error(), "finit_module") {
		t.Errorf("Load: %v", err)
	}
	if err := (agent.SysKernel{}).Unload("toa"); err == nil {
		t.Error("Unload succeeded without module support")
	}
}
