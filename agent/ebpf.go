//go:build linux

package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/realip/realip/exporter"
	"github.com/realip/realip/internal/cgroup2"
	"github.com/realip/realip/toarecv"
)

// EBPF is the eBPF TOA receiver (package toarecv) as the agent drives it:
// SysEBPF on the real kernel, a fake in agenttest.
type EBPF interface {
	// PinDir is the bpffs folder the receiver is pinned in.
	PinDir() string
	// Available reports whether Attach can work with cgroup (empty: the
	// root of the cgroup v2 mount), as toarecv.Available.
	Available(cgroup string) error
	// Attach loads the receiver with cfg, attaches it to cgroup and pins
	// it, adopting a pinned one, and then lets go of it: the pins keep it
	// working.
	Attach(cgroup string, cfg toarecv.Config) (EBPFAttachment, error)
	// Open opens the pinned receiver; the error wraps
	// toarecv.ErrNotPinned when nothing is pinned.
	Open() (PinnedEBPF, error)
	// Unpin detaches the receiver and removes its pins; it returns
	// toarecv.ErrNotPinned when nothing was pinned.
	Unpin() error
	// CgroupPath is the folder of the cgroup v2 with id.
	CgroupPath(id uint64) (string, error)
}

// EBPFAttachment is what Attach did.
type EBPFAttachment struct {
	Adopted bool   // the receiver was pinned already
	Cgroup  string // the cgroup v2 folder it is attached to
}

// PinnedEBPF is the pinned eBPF receiver; *toarecv.Pinned implements it.
type PinnedEBPF interface {
	Config() (toarecv.Config, error)
	SetConfig(toarecv.Config) error
	Counters() ([]toarecv.Counter, error)
	Attachment() (links []string, cgroupID uint64)
	Close() error
}

// SysEBPF is package toarecv on the running kernel, pinned in Dir (empty:
// toarecv.DefaultPinDir).
type SysEBPF struct{ Dir string }

// PinDir implements EBPF.
func (e SysEBPF) PinDir() string {
	if e.Dir == "" {
		return toarecv.DefaultPinDir
	}
	return e.Dir
}

// Available implements EBPF.
func (e SysEBPF) Available(cgroup string) error {
	return toarecv.Available(toarecv.Options{Cgroup: cgroup, PinDir: e.PinDir()})
}

// Attach implements EBPF.
func (e SysEBPF) Attach(cgroup string, cfg toarecv.Config) (EBPFAttachment, error) {
	r, err := toarecv.Open(toarecv.Options{Cgroup: cgroup, PinDir: e.PinDir()}, cfg)
	if err != nil {
		return EBPFAttachment{}, err
	}
	att := EBPFAttachment{Adopted: r.Adopted(), Cgroup: r.Cgroup()}
	if err := r.Close(); err != nil {
		return att, fmt.Errorf("closing the eBPF receiver (it stays pinned): %w", err)
	}
	return att, nil
}

// Open implements EBPF. A pin folder the process may not read is an error
// of its own, not "nothing pinned".
func (e SysEBPF) Open() (PinnedEBPF, error) {
	dir := e.PinDir()
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrPermission) {
		return nil, fmt.Errorf("reading the eBPF receiver's pins in %s needs root: %w", dir, err)
	}
	p, err := toarecv.OpenPinned(dir)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// unpinWait bounds how long Unpin waits for the kernel to detach the
// receiver's programs.
const unpinWait = 5 * time.Second

// Unpin implements EBPF. Removing the pins drops the last reference to
// the links, but the kernel releases a link, which detaches its program,
// from a work queue a moment later. Unpin waits until the programs are
// gone (bounded by unpinWait), so that the receiver is detached when it
// returns, and says so when another process still holds one.
func (e SysEBPF) Unpin() error {
	progs := e.programs()
	if err := toarecv.Unpin(e.PinDir()); err != nil {
		return err
	}
	deadline := time.Now().Add(unpinWait)
	for _, id := range progs {
		for {
			p, err := ebpf.NewProgramFromID(id)
			if err != nil {
				break // gone (or not ours to look at)
			}
			p.Close()
			if time.Now().After(deadline) {
				return fmt.Errorf("the eBPF receiver's program %d is still loaded %v after its pins were removed: "+
					"another process holds it or its link (bpftool prog show id %d)", id, unpinWait, id)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// programs are the ids of the programs of the pinned receiver's links.
func (e SysEBPF) programs() []ebpf.ProgramID {
	p, err := toarecv.OpenPinned(e.PinDir())
	if err != nil {
		return nil
	}
	names, _ := p.Attachment()
	p.Close()
	var ids []ebpf.ProgramID
	for _, name := range names {
		l, err := link.LoadPinnedLink(filepath.Join(e.PinDir(), name), nil)
		if err != nil {
			continue
		}
		if info, err := l.Info(); err == nil {
			ids = append(ids, info.Program)
		}
		l.Close()
	}
	return ids
}

// CgroupPath implements EBPF: it looks for the folder whose inode number
// is id under the cgroup v2 mount.
func (e SysEBPF) CgroupPath(id uint64) (string, error) {
	mnt, _, err := cgroup2.Mount(cgroup2.SelfMountinfo)
	if err != nil {
		return "", err
	}
	found := ""
	err = filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil // a cgroup removed meanwhile, or a file
		}
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Ino == id {
			found = p
			return fs.SkipAll
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("looking for cgroup %d under %s: %w", id, mnt, err)
	}
	if found == "" {
		return "", fmt.Errorf("no cgroup with id %d under %s", id, mnt)
	}
	return found, nil
}

// ebpfReceiver is the eBPF receiver as the agent's receiver. Between its
// calls the agent holds nothing of it: the pins keep it working, and
// `realip-agent unload` detaches it at once even while the agent runs.
type ebpfReceiver struct {
	a *Agent
	e EBPF
}

func (r ebpfReceiver) kind() ReceiverKind { return ReceiverEBPF }

func (r ebpfReceiver) pinDir() string { return r.e.PinDir() }

func (r ebpfReceiver) present() (bool, error) {
	p, err := r.e.Open()
	if errors.Is(err, toarecv.ErrNotPinned) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("the eBPF receiver: %w", err)
	}
	p.Close()
	return true, nil
}

// available reports why the eBPF receiver cannot run with cfg, if so.
func (r ebpfReceiver) available(cfg Config) error { return r.e.Available(cfg.Cgroup) }

func recvConfig(cfg Config) toarecv.Config {
	return toarecv.Config{Trusted: cfg.Trusted, Kinds: cfg.Kinds}
}

func (r ebpfReceiver) start(cfg Config) (LoadResult, error) {
	att, err := r.e.Attach(cfg.Cgroup, recvConfig(cfg))
	if err != nil {
		return LoadResult{Receiver: ReceiverEBPF}, fmt.Errorf("the eBPF receiver: %w", err)
	}
	res := LoadResult{Receiver: ReceiverEBPF, Adopted: att.Adopted, Cgroup: att.Cgroup, PinDir: r.e.PinDir()}
	if att.Adopted {
		r.a.log.Info("adopted the pinned eBPF TOA receiver", "pin_dir", res.PinDir, "cgroup", res.Cgroup)
	} else {
		r.a.log.Info("attached the eBPF TOA receiver", "pin_dir", res.PinDir, "cgroup", res.Cgroup)
	}
	r.a.log.Info("eBPF receiver configured", "trusted", cfg.TrustedString(), "kinds", cfg.KindsString())
	return res, nil
}

func (r ebpfReceiver) apply(cfg Config) (bool, error) {
	p, err := r.e.Open()
	if errors.Is(err, toarecv.ErrNotPinned) {
		if _, err := r.e.Attach(cfg.Cgroup, recvConfig(cfg)); err != nil {
			return false, fmt.Errorf("the eBPF receiver: %w", err)
		}
		r.a.log.Warn("the eBPF TOA receiver had been detached; attached it again", "pin_dir", r.e.PinDir(), "cgroup", cfg.Cgroup)
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("the eBPF receiver: %w", err)
	}
	defer p.Close()
	if links, _ := p.Attachment(); len(links) == 0 {
		// Maps pinned, programs detached (their link pins removed).
		if _, err := r.e.Attach(cfg.Cgroup, recvConfig(cfg)); err != nil {
			return false, fmt.Errorf("the eBPF receiver: %w", err)
		}
		r.a.log.Warn("the eBPF TOA receiver's programs had been detached; attached them again", "pin_dir", r.e.PinDir(), "cgroup", cfg.Cgroup)
		return true, nil
	}
	cur, err := p.Config()
	if err != nil {
		return false, fmt.Errorf("reading the eBPF receiver's configuration: %w", err)
	}
	if (heldConfig{Trusted: cur.Trusted, Kinds: cur.Kinds}).matches(cfg) {
		return false, nil
	}
	if err := p.SetConfig(recvConfig(cfg)); err != nil {
		return false, fmt.Errorf("setting the eBPF receiver's configuration (trusted=%q kinds=%q): %w",
			cfg.TrustedString(), cfg.KindsString(), err)
	}
	got, err := p.Config()
	if err != nil {
		return true, fmt.Errorf("reading the eBPF receiver's configuration back: %w", err)
	}
	if !(heldConfig{Trusted: got.Trusted, Kinds: got.Kinds}).matches(cfg) {
		return true, fmt.Errorf("the eBPF receiver holds trusted=%v kinds=%v after being set to trusted=%q kinds=%q",
			got.Trusted, got.Kinds, cfg.TrustedString(), cfg.KindsString())
	}
	return true, nil
}

func (r ebpfReceiver) unload() error {
	err := r.e.Unpin()
	if errors.Is(err, toarecv.ErrNotPinned) {
		return ErrNotLoaded
	}
	return err
}

func (r ebpfReceiver) held() (heldConfig, error) {
	p, err := r.e.Open()
	if err != nil {
		return heldConfig{}, err
	}
	defer p.Close()
	cfg, err := p.Config()
	if err != nil {
		return heldConfig{}, err
	}
	return heldConfig{Trusted: cfg.Trusted, Kinds: cfg.Kinds}, nil
}

// stats returns the exporter's source: the pinned receiver's counters
// while its programs are attached, nothing when they are not.
func (r ebpfReceiver) stats() func() (*exporter.TOAStats, error) {
	return func() (*exporter.TOAStats, error) {
		p, err := r.e.Open()
		if errors.Is(err, toarecv.ErrNotPinned) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		defer p.Close()
		if links, _ := p.Attachment(); len(links) == 0 {
			return nil, nil
		}
		counters, err := p.Counters()
		if err != nil {
			return nil, err
		}
		return toaStats(counters), nil
	}
}

// toaStats puts the receiver's counters in toa_stats' shape: a column per
// possible CPU.
func toaStats(counters []toarecv.Counter) *exporter.TOAStats {
	st := &exporter.TOAStats{Rows: make([]exporter.TOARow, len(counters))}
	for i, c := range counters {
		st.Rows[i] = exporter.TOARow{Name: c.Name, PerCPU: c.PerCPU, Total: c.Sum()}
	}
	if len(counters) > 0 {
		for n := range counters[0].PerCPU {
			st.CPUs = append(st.CPUs, n)
		}
	}
	return st
}

// ebpfEntriesNote says why status lists no entries for the eBPF receiver.
const ebpfEntriesNote = "the eBPF receiver keeps its entries in socket storage, which user space cannot enumerate"

func (r ebpfReceiver) status(st *Status) *heldConfig {
	es := &EBPFState{PinDir: r.e.PinDir(), Links: []string{}}
	st.EBPF = es
	st.Entries, st.EntriesNote = nil, ebpfEntriesNote
	p, err := r.e.Open()
	if err != nil {
		st.Control.Error = err.Error()
		return nil
	}
	defer p.Close()
	links, id := p.Attachment()
	es.Links = append(es.Links, links...)
	es.CgroupID = id
	if id != 0 {
		// Unknown when the cgroup is outside this process's view.
		es.Cgroup, _ = r.e.CgroupPath(id)
	}
	cfg, err := p.Config()
	if err != nil {
		st.Control.Error = err.Error()
		return nil
	}
	st.Control.Available = true
	st.Config = newModuleConfig("", cfg.Trusted, cfg.Kinds)
	counters, err := p.Counters()
	if err != nil {
		st.Control.Error = fmt.Sprintf("counters: %v", err)
	}
	var alloc, free uint64
	for _, c := range counters {
		st.Counters = append(st.Counters, Counter{Name: c.Name, Value: c.Sum()})
		switch c.Name {
		case "ip6_address_alloc":
			alloc = c.Sum()
		case "ip6_address_free":
			free = c.Sum()
		}
	}
	if alloc >= free {
		st.LiveEntries = alloc - free
	}
	return &heldConfig{Trusted: cfg.Trusted, Kinds: cfg.Kinds}
}
