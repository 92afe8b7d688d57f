//go:build linux

package agenttest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/realip/realip/agent"
	"github.com/realip/realip/toactl"
)

// Module stands for toa.ko: its sysfs folder and its netlink
// configuration, as the module keeps them (kinds sorted). It is the
// agent's agent.Kernel, and its Dial method the agent's Options.Dial.
type Module struct {
	mu      sync.Mutex
	sysfs   string
	loaded  bool
	cfg     toactl.Config
	sets    int // SetConfig calls
	loads   []string
	params  []string
	unloads int
	stats   []toactl.Stat
	entries []toactl.Entry
}

// NewModule returns a module that is not loaded, with its sysfs root in a
// temporary folder of t.
func NewModule(t testing.TB) *Module {
	return &Module{sysfs: t.TempDir()}
}

// SysfsRoot is the module's sysfs root, for agent.Options.SysfsRoot.
func (f *Module) SysfsRoot() string { return f.sysfs }

func (f *Module) dir() string { return filepath.Join(f.sysfs, "module", "toa") }

// Appear makes the module loaded with the given configuration (as if
// loaded by modprobe or an earlier agent).
func (f *Module) Appear(trusted string, kinds string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	os.MkdirAll(filepath.Join(f.dir(), "parameters"), 0o755)
	os.WriteFile(filepath.Join(f.dir(), "initstate"), []byte("live\n"), 0o644)
	os.WriteFile(filepath.Join(f.dir(), "refcnt"), []byte("0\n"), 0o644)
	os.WriteFile(filepath.Join(f.dir(), "version"), []byte("0.1.0\n"), 0o644)
	os.WriteFile(filepath.Join(f.dir(), "srcversion"), []byte("0123456789ABCDEF012345\n"), 0o644)
	os.WriteFile(filepath.Join(f.dir(), "taint"), []byte("OE\n"), 0o644)
	f.loaded = true
	f.cfg.Version = "0.1.0"
	f.cfg.Trusted, _ = toactl.ParsePrefixes(trusted)
	f.cfg.Kinds, _ = toactl.ParseKinds(kinds)
	slices.Sort(f.cfg.Kinds)
}

// Load loads the module with the configuration its parameters give.
func (f *Module) Load(m *agent.ModuleFile, params string) error {
	f.mu.Lock()
	f.loads = append(f.loads, m.Path)
	f.params = append(f.params, params)
	f.mu.Unlock()
	trusted, kinds := "", "200,253,254"
	for _, p := range strings.Fields(params) {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "trusted":
			trusted = v
		case "kinds":
			kinds = v
		}
	}
	f.Appear(trusted, kinds)
	return nil
}

// Unload removes the module; agent.ErrNotLoaded if it is not loaded.
func (f *Module) Unload(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded {
		return agent.ErrNotLoaded
	}
	f.unloads++
	f.loaded = false
	return os.RemoveAll(f.dir())
}

// Dial opens the module's control interface; toactl.ErrNotLoaded if it is
// not loaded.
func (f *Module) Dial() (agent.Control, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.loaded {
		return nil, toactl.ErrNotLoaded
	}
	return control{f}, nil
}

// State is the module's configuration and how many times it was set
// (SetConfig), loaded and unloaded.
func (f *Module) State() (cfg toactl.Config, sets, loads, unloads int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg, f.sets, len(f.loads), f.unloads
}

// Params are the parameters of each load, in order.
func (f *Module) Params() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.params)
}

// SetStats sets the counters and the live entries the control interface
// reports.
func (f *Module) SetStats(stats []toactl.Stat, entries []toactl.Entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats, f.entries = stats, entries
}

// control is the module's netlink interface.
type control struct{ f *Module }

func (c control) Config() (toactl.Config, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	cfg := c.f.cfg
	cfg.Trusted = slices.Clone(cfg.Trusted)
	cfg.Kinds = slices.Clone(cfg.Kinds)
	return cfg, nil
}

func (c control) SetConfig(cfg toactl.Config) error {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	c.f.sets++
	c.f.cfg.Trusted = slices.Clone(cfg.Trusted)
	if cfg.Kinds != nil {
		if len(cfg.Kinds) == 0 {
			return syscall.EINVAL
		}
		c.f.cfg.Kinds = slices.Clone(cfg.Kinds)
		slices.Sort(c.f.cfg.Kinds)
	}
	return nil
}

func (c control) Stats() ([]toactl.Stat, uint64, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	return c.f.stats, uint64(len(c.f.entries)), nil
}

func (c control) Entries() ([]toactl.Entry, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	return c.f.entries, nil
}

func (c control) Close() error { return nil }

var _ agent.Kernel = (*Module)(nil)
