//go:build linux

package agent

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/realip/realip/exporter"
)

// receiver is a TOA receiver as the agent drives it: toa.ko (kmodReceiver)
// or the eBPF receiver (ebpfReceiver). The agent keeps one in force;
// `realip-agent unload` removes whichever is in place.
type receiver interface {
	kind() ReceiverKind
	// present reports whether the receiver is in place on the machine:
	// the module loaded, the eBPF receiver pinned.
	present() (bool, error)
	// start loads or attaches the receiver, or adopts the one in place,
	// and applies cfg's trusted prefixes and kinds.
	start(cfg Config) (LoadResult, error)
	// apply applies cfg's trusted prefixes and kinds to the receiver in
	// place without reloading or detaching it (SIGHUP), putting it back
	// first if it is gone; it reports whether the configuration changed.
	apply(cfg Config) (changed bool, err error)
	// unload removes the receiver; ErrNotLoaded when it was not in place.
	unload() error
	// held reads the trusted prefixes and kinds the receiver holds.
	held() (heldConfig, error)
	// stats is the exporter's source of its counters; nil: the toa_stats
	// file of the configuration's procfs.
	stats() func() (*exporter.TOAStats, error)
	// status fills in st with the receiver's state, configuration,
	// counters and entries, and returns the configuration it holds (nil
	// when it could not be read).
	status(st *Status) *heldConfig
}

// heldConfig is the configuration a receiver holds.
type heldConfig struct {
	Version string // the module's; empty for the eBPF receiver
	Trusted []netip.Prefix
	Kinds   []uint8
}

// matches compares the held configuration with the file's, as sets.
func (h heldConfig) matches(c Config) bool {
	return sameSet(h.Trusted, c.Trusted, comparePrefix) && sameSet(h.Kinds, c.Kinds, func(a, b uint8) int { return int(a) - int(b) })
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// ErrReceiverConflict is wrapped by the refusal to run a receiver while
// the other one is in place: the two must never run at once.
var ErrReceiverConflict = errors.New("another TOA receiver is in place")

// choice is the receiver the agent runs, and why.
type choice struct {
	recv receiver
	why  string
}

// choose picks the receiver for cfg from what the machine offers (see
// package doc, "Choosing the receiver"). It touches nothing.
func (a *Agent) choose(cfg Config) (choice, error) {
	kmodIn, err := a.kmod.present()
	if err != nil {
		return choice{}, err
	}
	ebpfIn, err := a.ebpf.present()
	if err != nil {
		return choice{}, err
	}
	pin := a.ebpf.pinDir()
	switch {
	case kmodIn && ebpfIn:
		return choice{}, fmt.Errorf("%w: toa.ko is loaded and the eBPF receiver is pinned in %s, both at once; "+
			"run `realip-agent unload` (it removes both) and start the agent again", ErrReceiverConflict, pin)
	case cfg.Receiver == ReceiverKmod && ebpfIn:
		return choice{}, fmt.Errorf("%w: receiver is kmod but the eBPF receiver is attached (pinned in %s); "+
			"run `realip-agent unload` first to detach it, then start the agent again", ErrReceiverConflict, pin)
	case cfg.Receiver == ReceiverEBPF && kmodIn:
		return choice{}, fmt.Errorf("%w: receiver is ebpf but toa.ko is loaded; "+
			"run `realip-agent unload` first to remove it, then start the agent again", ErrReceiverConflict)
	case cfg.Receiver == ReceiverKmod:
		return choice{a.kmod, "receiver: kmod"}, nil
	case cfg.Receiver == ReceiverEBPF:
		return choice{a.ebpf, "receiver: ebpf"}, nil
	case kmodIn:
		return choice{a.kmod, "toa.ko is loaded: adopting it"}, nil
	case ebpfIn:
		return choice{a.ebpf, "the eBPF receiver is pinned in " + pin + ": adopting it"}, nil
	case cfg.ModulePath != "":
		// The file names a module: the operator's choice, and a refusal of
		// it must not turn silently into the other receiver.
		return choice{a.kmod, "module_path names " + cfg.ModulePath}, nil
	}
	return a.chooseAuto(cfg)
}

// chooseAuto picks a receiver when none is in place and the file names
// none: the module when one for the running kernel is found and can be
// loaded, else the eBPF receiver when the kernel runs it.
func (a *Agent) chooseAuto(cfg Config) (choice, error) {
	m, kerr := a.moduleToLoad(cfg)
	if kerr == nil {
		lockdown := "no lockdown"
		if mode, _ := Lockdown(a.sysfs); mode != "" {
			lockdown = "lockdown " + mode
		}
		if m.Signed() {
			lockdown += ", signed"
		}
		return choice{a.kmod, fmt.Sprintf("toa.ko for kernel %s found at %s (%s)", a.release, m.Path, lockdown)}, nil
	}
	eerr := a.ebpf.available(cfg)
	if eerr == nil {
		return choice{a.ebpf, "no loadable toa.ko (" + kerr.Error() + "), and the kernel runs the eBPF receiver"}, nil
	}
	return choice{}, fmt.Errorf("no TOA receiver can run here. toa.ko: %w. The eBPF receiver: %w", kerr, eerr)
}

// Lockdown is the kernel's lockdown mode (/sys/kernel/security/lockdown):
// "none", "integrity" or "confidentiality"; empty when the file is absent
// (no lockdown LSM, or securityfs not mounted).
func Lockdown(sysfsRoot string) (string, error) {
	b, err := os.ReadFile(filepath.Join(sysfsRoot, "kernel", "security", "lockdown"))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the kernel's lockdown state: %w", err)
	}
	// "none [integrity] confidentiality": the mode in force is bracketed.
	for _, f := range strings.Fields(string(b)) {
		if m, ok := strings.CutPrefix(f, "["); ok {
			if m, ok = strings.CutSuffix(m, "]"); ok {
				return m, nil
			}
		}
	}
	return "", fmt.Errorf("reading the kernel's lockdown state: no mode in brackets in %q", strings.TrimSpace(string(b)))
}

// moduleSignature ends a signed kernel module (scripts/sign-file).
var moduleSignature = []byte("~Module signature appended~\n")

// Signed reports whether the module carries a signature (whether the
// kernel trusts its key is the kernel's business).
func (m *ModuleFile) Signed() bool { return bytes.HasSuffix(m.Image, moduleSignature) }
