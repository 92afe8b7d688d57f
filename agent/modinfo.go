//go:build linux

package agent

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ModuleName is the kernel module the agent manages.
const ModuleName = "toa"

// maxModuleSize bounds a module file, compressed or not (toa.ko is well
// under 1 MiB; debug builds a few MiB).
const maxModuleSize = 64 << 20

// Compression formats of module files, named as the kernel's
// /sys/module/compression names them.
const (
	CompressNone = ""
	CompressXZ   = "xz"
	CompressZstd = "zstd"
	CompressGzip = "gzip"
)

// ModuleFile is a kernel module file read and decompressed in memory.
type ModuleFile struct {
	Path        string
	Compression string // CompressNone, CompressXZ, ...
	Image       []byte // the ELF image, decompressed
	Info        ModInfo
}

// ModInfo is the .modinfo section of a module.
type ModInfo struct {
	Name        string // "name=" (absent in modules built before 5.x kbuild)
	Version     string // MODULE_VERSION
	Vermagic    string // "6.1.0-56-amd64 SMP preempt mod_unload modversions "
	SrcVersion  string
	Author      string
	Description string
	License     string
	// Fields has every key=value of the section; keys such as parm and
	// alias appear several times.
	Fields map[string][]string
}

// Release is the kernel release the module was built for: the vermagic's
// first word.
func (m ModInfo) Release() string {
	f := strings.Fields(m.Vermagic)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// IsRealip tells whether the module is realip's toa.ko (MODULE_AUTHOR
// "realip", description "realip TOA: ..."), which has the netlink control
// interface the agent needs; other vendors' toa.ko do not.
func (m ModInfo) IsRealip() bool {
	return m.Author == "realip" || strings.HasPrefix(m.Description, "realip ")
}

// ReadModuleFile reads a module file, decompressing .ko.xz, .ko.zst and
// .ko.gz (recognised by their magic bytes, not by the name), and parses
// its ELF .modinfo section.
func ReadModuleFile(path string) (*ModuleFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	if len(raw) > maxModuleSize {
		return nil, fmt.Errorf("module %s: larger than %d MiB, not a toa.ko", path, maxModuleSize>>20)
	}
	comp, img, err := decompress(raw)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	info, err := ParseModInfo(img)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	return &ModuleFile{Path: path, Compression: comp, Image: img, Info: info}, nil
}

var (
	magicXZ   = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicZstd = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicGzip = []byte{0x1f, 0x8b}
)

func decompress(raw []byte) (string, []byte, error) {
	var comp string
	var r io.Reader
	var err error
	switch {
	case bytes.HasPrefix(raw, magicXZ):
		comp = CompressXZ
		r, err = xz.NewReader(bytes.NewReader(raw))
	case bytes.HasPrefix(raw, magicZstd):
		comp = CompressZstd
		var d *zstd.Decoder
		d, err = zstd.NewReader(bytes.NewReader(raw), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxModuleSize))
		if err == nil {
			defer d.Close()
			r = d
		}
	case bytes.HasPrefix(raw, magicGzip):
		comp = CompressGzip
		r, err = gzip.NewReader(bytes.NewReader(raw))
	default:
		return CompressNone, raw, nil
	}
	if err != nil {
		return comp, nil, fmt.Errorf("%s-compressed module: %w", comp, err)
	}
	img, err := io.ReadAll(io.LimitReader(r, maxModuleSize+1))
	if err != nil {
		return comp, nil, fmt.Errorf("%s-compressed module: %w", comp, err)
	}
	if len(img) > maxModuleSize {
		return comp, nil, fmt.Errorf("%s-compressed module: more than %d MiB decompressed", comp, maxModuleSize>>20)
	}
	return comp, img, nil
}

// elfMachines maps GOARCH to the ELF machine of its kernel modules.
var elfMachines = map[string]elf.Machine{
	"amd64":   elf.EM_X86_64,
	"386":     elf.EM_386,
	"arm64":   elf.EM_AARCH64,
	"arm":     elf.EM_ARM,
	"riscv64": elf.EM_RISCV,
	"ppc64le": elf.EM_PPC64,
	"s390x":   elf.EM_S390,
	"loong64": elf.EM_LOONGARCH,
}

// ParseModInfo reads the .modinfo section of a kernel module's ELF image.
// It fails for a file that is not an ELF relocatable object of this
// machine's architecture or that has no .modinfo or no vermagic.
func ParseModInfo(img []byte) (ModInfo, error) {
	ef, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		return ModInfo{}, fmt.Errorf("not a kernel module (not ELF: %v)", err)
	}
	defer ef.Close()
	if ef.Type != elf.ET_REL {
		return ModInfo{}, fmt.Errorf("not a kernel module (ELF type %v, want ET_REL)", ef.Type)
	}
	if want, ok := elfMachines[runtime.GOARCH]; ok && ef.Machine != want {
		return ModInfo{}, fmt.Errorf("built for %v, this machine is %v (%s)", ef.Machine, want, runtime.GOARCH)
	}
	sec := ef.Section(".modinfo")
	if sec == nil {
		return ModInfo{}, errors.New("not a kernel module (no .modinfo section)")
	}
	data, err := sec.Data()
	if err != nil {
		return ModInfo{}, fmt.Errorf("reading .modinfo: %w", err)
	}
	info := ModInfo{Fields: make(map[string][]string)}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := bytes.Cut(kv, []byte{'='})
		if !ok || len(k) == 0 {
			continue
		}
		key, val := string(k), string(v)
		info.Fields[key] = append(info.Fields[key], val)
		first := len(info.Fields[key]) == 1
		switch {
		case !first:
		case key == "name":
			info.Name = val
		case key == "version":
			info.Version = val
		case key == "vermagic":
			info.Vermagic = val
		case key == "srcversion":
			info.SrcVersion = val
		case key == "author":
			info.Author = val
		case key == "description":
			info.Description = val
		case key == "license":
			info.License = val
		}
	}
	if info.Release() == "" {
		return ModInfo{}, errors.New("no vermagic in .modinfo: not a module built by kbuild")
	}
	return info, nil
}

// ErrRefused is wrapped by the errors of CheckModule: the module file is
// not one the agent will load (*VermagicError is one of them).
var ErrRefused = errors.New("refusing to load")

// VermagicError is the refusal to load a module built for another kernel.
type VermagicError struct {
	Path          string
	Vermagic      string // the module's full vermagic
	ModuleRelease string // its first word
	KernelRelease string // uname -r
	ModuleVersion string // MODULE_VERSION, for the dkms command
}

func (e *VermagicError) Error() string {
	ver := e.ModuleVersion
	if ver == "" {
		ver = "VERSION"
	}
	return fmt.Sprintf("%v %s: it was built for kernel %s, but the running kernel is %s "+
		"(module vermagic %q); the kernel would reject it. "+
		"Rebuild it for the running kernel: with DKMS, `dkms install toa/%s -k %s`; "+
		"from the realip source, `make -C kmod KDIR=/lib/modules/%s/build` and set module_path to the new kmod/toa.ko",
		ErrRefused, e.Path, e.ModuleRelease, e.KernelRelease, e.Vermagic, ver, e.KernelRelease, e.KernelRelease)
}

// Unwrap makes errors.Is(err, ErrRefused) true.
func (e *VermagicError) Unwrap() error { return ErrRefused }

// CheckModule refuses a module that was built for another kernel release
// than kernelRelease (uname -r), or that is not realip's toa.ko.
func CheckModule(m *ModuleFile, kernelRelease string) error {
	if m.Info.Name != "" && m.Info.Name != ModuleName {
		return fmt.Errorf("%w %s: it is the module %q, not %q", ErrRefused, m.Path, m.Info.Name, ModuleName)
	}
	if rel := m.Info.Release(); rel != kernelRelease {
		return &VermagicError{Path: m.Path, Vermagic: m.Info.Vermagic, ModuleRelease: rel,
			KernelRelease: kernelRelease, ModuleVersion: m.Info.Version}
	}
	if !m.Info.IsRealip() {
		return fmt.Errorf("%w %s: it is not realip's toa.ko (author %q, description %q) and has no control interface the agent can configure; "+
			"use `realip-agent exporter` for metrics of another vendor's module", ErrRefused, m.Path, m.Info.Author, m.Info.Description)
	}
	return nil
}
