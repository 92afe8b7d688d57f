//go:build linux

package agent

import (
	"fmt"

	"github.com/realip/realip/exporter"
)

// kmodReceiver is toa.ko as the agent's receiver: the Agent's EnsureLoaded,
// Push and Unload, and its netlink control interface.
type kmodReceiver struct{ a *Agent }

func (k kmodReceiver) kind() ReceiverKind { return ReceiverKmod }

func (k kmodReceiver) present() (bool, error) {
	st, err := ReadModuleState(k.a.sysfs)
	return st.Loaded, err
}

func (k kmodReceiver) start(cfg Config) (LoadResult, error) {
	res, err := k.a.EnsureLoaded(cfg)
	if err != nil {
		return res, err
	}
	if res.Adopted {
		k.a.log.Info("adopted the loaded toa module", "version", res.Version)
	}
	changed, err := k.a.Push(cfg)
	if err != nil {
		return res, err
	}
	k.a.log.Info("module configured", "trusted", cfg.TrustedString(), "kinds", cfg.KindsString(), "changed", changed)
	return res, nil
}

func (k kmodReceiver) apply(cfg Config) (bool, error) {
	res, err := k.a.EnsureLoaded(cfg)
	if err != nil {
		return false, err
	}
	if !res.Adopted {
		k.a.log.Warn("the toa module had been unloaded; loaded it again", "path", res.Path)
	}
	return k.a.Push(cfg)
}

// unload removes the module if sysfs shows it: a kernel without module
// support answers delete_module with ENOSYS, not "not loaded".
func (k kmodReceiver) unload() error {
	in, err := k.present()
	switch {
	case err != nil:
		return err
	case !in:
		return ErrNotLoaded
	}
	return k.a.Unload()
}

func (k kmodReceiver) held() (heldConfig, error) {
	c, err := k.a.dial()
	if err != nil {
		return heldConfig{}, err
	}
	defer c.Close()
	cfg, err := c.Config()
	if err != nil {
		return heldConfig{}, err
	}
	return heldConfig{Version: cfg.Version, Trusted: cfg.Trusted, Kinds: cfg.Kinds}, nil
}

// stats is nil: the module's counters are its /proc/net/toa_stats.
func (k kmodReceiver) stats() func() (*exporter.TOAStats, error) { return nil }

func (k kmodReceiver) status(st *Status) *heldConfig {
	cfg := k.a.statusControl(st)
	if cfg == nil {
		return nil
	}
	return &heldConfig{Version: cfg.Version, Trusted: cfg.Trusted, Kinds: cfg.Kinds}
}

// moduleToLoad finds toa.ko for the running kernel (or reads
// cfg.ModulePath) and checks that the kernel can load it: built for the
// running kernel, realip's, and signed if the kernel is in lockdown.
func (a *Agent) moduleToLoad(cfg Config) (*ModuleFile, error) {
	path := cfg.ModulePath
	if path == "" {
		var err error
		if path, err = FindModule(a.modRoot, a.release); err != nil {
			return nil, err
		}
	}
	m, err := ReadModuleFile(path)
	if err != nil {
		return nil, err
	}
	if err := CheckModule(m, a.release); err != nil {
		return nil, err
	}
	mode, err := Lockdown(a.sysfs)
	if err != nil {
		return nil, err
	}
	if mode != "" && mode != "none" && !m.Signed() {
		return nil, fmt.Errorf("%w %s: the kernel is in lockdown (%s), which refuses unsigned modules, and the file has no signature; "+
			"sign it with a key the kernel trusts (DKMS signs with its MOK key, enrolled with mokutil), or set receiver: ebpf",
			ErrRefused, m.Path, mode)
	}
	return m, nil
}
