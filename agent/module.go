//go:build linux

package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNotLoaded means /sys/module/toa does not exist.
var ErrNotLoaded = errors.New("the toa module is not loaded")

// moduleSubdirs are searched in this order under
// /lib/modules/RELEASE (depmod's default order: updates, extra, then the
// kernel's own tree). Debian's DKMS installs into updates/dkms.
var moduleSubdirs = []string{"updates/dkms", "extra", "updates"}

// moduleNames are the file names tried in each folder, uncompressed first.
var moduleNames = []string{"toa.ko", "toa.ko.xz", "toa.ko.zst", "toa.ko.gz"}

// FindModule returns the path of toa.ko for kernel release under
// modulesRoot (normally /lib/modules): RELEASE/updates/dkms, extra and
// updates, then anywhere under RELEASE/kernel; the first folder with a
// toa.ko, toa.ko.xz, toa.ko.zst or toa.ko.gz wins.
func FindModule(modulesRoot, release string) (string, error) {
	base := filepath.Join(modulesRoot, release)
	var searched []string
	for _, sub := range moduleSubdirs {
		dir := filepath.Join(base, sub)
		searched = append(searched, dir)
		for _, n := range moduleNames {
			p := filepath.Join(dir, n)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				return p, nil
			}
		}
	}
	kdir := filepath.Join(base, "kernel")
	searched = append(searched, kdir+"/...")
	var found string
	err := filepath.WalkDir(kdir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == kdir {
				return fs.SkipAll
			}
			return nil
		}
		if !d.IsDir() && isModuleName(d.Name()) && (found == "" || rank(d.Name()) < rank(filepath.Base(found))) {
			found = p
		}
		return nil
	})
	if err == nil && found != "" {
		return found, nil
	}
	return "", fmt.Errorf("no toa.ko for the running kernel %s in %s: install realip's DKMS package "+
		"(`dkms install toa/VERSION -k %s`) or build kmod/ (`make -C kmod KDIR=/lib/modules/%s/build`) and set module_path",
		release, strings.Join(searched, ", "), release, release)
}

func isModuleName(n string) bool { return rank(n) >= 0 }

func rank(n string) int {
	for i, m := range moduleNames {
		if n == m {
			return i
		}
	}
	return -1
}

// ModuleState is what sysfs says of the loaded module.
type ModuleState struct {
	Loaded     bool              `json:"loaded"`
	InitState  string            `json:"state,omitempty"` // live, coming, going
	RefCount   int               `json:"refcount"`
	Version    string            `json:"version,omitempty"`
	SrcVersion string            `json:"srcversion,omitempty"`
	Taint      string            `json:"taint,omitempty"`
	Params     map[string]string `json:"parameters,omitempty"`
}

// ReadModuleState reads sysfsRoot/module/toa.
func ReadModuleState(sysfsRoot string) (ModuleState, error) {
	dir := filepath.Join(sysfsRoot, "module", ModuleName)
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return ModuleState{}, nil
	}
	if err != nil {
		return ModuleState{}, err
	}
	if !st.IsDir() {
		return ModuleState{}, fmt.Errorf("%s is not a directory", dir)
	}
	s := ModuleState{Loaded: true, RefCount: -1}
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return strings.TrimSpace(string(b))
	}
	s.InitState = read("initstate")
	if n, err := strconv.Atoi(read("refcnt")); err == nil {
		s.RefCount = n
	}
	s.Version = read("version")
	s.SrcVersion = read("srcversion")
	s.Taint = read("taint")
	if ents, err := os.ReadDir(filepath.Join(dir, "parameters")); err == nil {
		s.Params = make(map[string]string, len(ents))
		for _, e := range ents {
			s.Params[e.Name()] = read(filepath.Join("parameters", e.Name()))
		}
	}
	return s, nil
}

// Kernel loads and unloads modules; the agent uses the real kernel
// (SysKernel) and tests a fake.
type Kernel interface {
	// Load loads the module with the given parameters.
	Load(m *ModuleFile, params string) error
	// Unload removes the module called name.
	Unload(name string) error
}

// SysKernel loads modules with finit_module(2) and removes them with
// delete_module(2).
type SysKernel struct {
	// SysfsRoot is where /sys/module/compression and
	// /proc/sys/kernel/modules_disabled are looked up; empty: "/sys".
	SysfsRoot string
	// ProcRoot is the procfs root; empty: "/proc".
	ProcRoot string
}

// Load implements Kernel. An uncompressed module is passed to
// finit_module as a file descriptor. A compressed one too, with
// MODULE_INIT_COMPRESSED_FILE, when the kernel decompresses that format
// itself (/sys/module/compression names it); otherwise the agent passes
// the image it decompressed to init_module.
func (k SysKernel) Load(m *ModuleFile, params string) error {
	var err error
	how := "finit_module"
	switch {
	case m.Compression == CompressNone:
		err = k.finit(m.Path, params, 0)
	case k.kernelDecompresses(m.Compression):
		how = "finit_module(MODULE_INIT_COMPRESSED_FILE)"
		err = k.finit(m.Path, params, unix.MODULE_INIT_COMPRESSED_FILE)
	default:
		how = "init_module (decompressed by the agent)"
		err = unix.InitModule(m.Image, params)
	}
	if err != nil {
		return k.explainLoad(m, how, params, err)
	}
	return nil
}

func (k SysKernel) finit(path, params string, flags int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		err = unix.FinitModule(int(f.Fd()), params, flags)
		if err != unix.EINTR {
			return err
		}
	}
}

func (k SysKernel) sysfs() string {
	if k.SysfsRoot == "" {
		return "/sys"
	}
	return k.SysfsRoot
}

func (k SysKernel) proc() string {
	if k.ProcRoot == "" {
		return "/proc"
	}
	return k.ProcRoot
}

// kernelDecompresses tells whether the kernel decompresses modules of
// format comp itself (CONFIG_MODULE_DECOMPRESS, 5.17+).
func (k SysKernel) kernelDecompresses(comp string) bool {
	b, err := os.ReadFile(filepath.Join(k.sysfs(), "module", "compression"))
	return err == nil && strings.TrimSpace(string(b)) == comp
}

func (k SysKernel) explainLoad(m *ModuleFile, how, params string, err error) error {
	var hint string
	switch {
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("loading %s: %w", m.Path, ErrAlreadyLoaded)
	case errors.Is(err, unix.ENOSYS):
		hint = "this kernel has no loadable module support"
	case errors.Is(err, unix.EPERM):
		hint = "not permitted: loading needs CAP_SYS_MODULE (root)"
		if b, rerr := os.ReadFile(filepath.Join(k.proc(), "sys", "kernel", "modules_disabled")); rerr == nil && strings.TrimSpace(string(b)) == "1" {
			hint = "module loading is disabled until reboot (/proc/sys/kernel/modules_disabled is 1)"
		} else {
			hint += ", and kernel lockdown or module signature enforcement must allow the module (see dmesg)"
		}
	case errors.Is(err, unix.EKEYREJECTED), errors.Is(err, unix.ENOKEY), errors.Is(err, unix.EBADMSG):
		hint = "the kernel requires signed modules (Secure Boot or module.sig_enforce): sign toa.ko with a key the kernel trusts (DKMS signs with its MOK key, which must be enrolled with mokutil)"
	case errors.Is(err, unix.ENOEXEC):
		hint = "the kernel rejected the module's format (built for another kernel or configuration; see dmesg)"
	case errors.Is(err, unix.EINVAL):
		hint = fmt.Sprintf("the module rejected its parameters %q or its symbols do not match this kernel (see dmesg)", params)
	case errors.Is(err, unix.ENOENT):
		hint = "a symbol the module needs is missing from this kernel (see dmesg)"
	}
	if hint != "" {
		return fmt.Errorf("loading %s with %s: %w: %s", m.Path, how, err, hint)
	}
	return fmt.Errorf("loading %s with %s: %w", m.Path, how, err)
}

// ErrAlreadyLoaded is returned by Kernel.Load when the module is loaded
// already (finit_module: EEXIST).
var ErrAlreadyLoaded = errors.New("the toa module is already loaded")

// Unload implements Kernel: delete_module without waiting for users.
func (k SysKernel) Unload(name string) error {
	err := unix.DeleteModule(name, unix.O_NONBLOCK)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOENT):
		return ErrNotLoaded
	case errors.Is(err, unix.EWOULDBLOCK), errors.Is(err, unix.EBUSY):
		return fmt.Errorf("unloading %s: %w: the module is in use (refcnt %s); close what holds it and retry",
			name, err, readTrim(filepath.Join(k.sysfs(), "module", name, "refcnt")))
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("unloading %s: %w: needs CAP_SYS_MODULE (root), and module loading must not be disabled", name, err)
	}
	return fmt.Errorf("unloading %s: %w", name, err)
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// KernelRelease is uname -r.
func KernelRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", err
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}
