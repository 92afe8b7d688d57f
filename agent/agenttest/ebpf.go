//go:build linux

package agenttest

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/realip/realip/agent"
	"github.com/realip/realip/toarecv"
)

// FakeCgroupRoot is the cgroup the fake eBPF receiver attaches to when it
// is given none (the real one takes the root of the cgroup v2 mount).
const FakeCgroupRoot = "/sys/fs/cgroup"

// fakeCgroupID is the id the fake's pinned links report for their cgroup.
const fakeCgroupID = 4242

// EBPF stands for the eBPF TOA receiver (package toarecv) as the agent
// drives it, agent.EBPF: its pins, configuration and counters, in memory.
// Nothing of it touches the kernel.
type EBPF struct {
	mu          sync.Mutex
	dir         string
	unavailable error
	pinned      bool
	links       bool
	cgroup      string
	cfg         toarecv.Config
	counters    []toarecv.Counter
	attaches    int
	sets        int
	unpins      int
}

// NewEBPF returns a fake eBPF receiver that is not pinned and that the
// "kernel" can run.
func NewEBPF(t testing.TB) *EBPF {
	f := &EBPF{dir: filepath.Join(t.TempDir(), "bpf", "realip", "toa")}
	for _, name := range toarecv.CounterNames {
		f.counters = append(f.counters, toarecv.Counter{Name: name, PerCPU: []uint64{0, 0}})
	}
	return f
}

// SetUnavailable makes Available and Attach fail with err, as on a
// kernel that cannot run the receiver; nil undoes it.
func (f *EBPF) SetUnavailable(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unavailable = err
}

// Appear pins the receiver on cgroup with the given configuration, as an
// earlier agent would have.
func (f *EBPF) Appear(cgroup string, cfg toarecv.Config) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pinned, f.links, f.cgroup, f.cfg = true, true, cgroup, normalise(cfg)
}

// Detach removes the pinned links but leaves the maps, as if the links'
// pins were removed by hand.
func (f *EBPF) Detach() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.links = false
}

// SetCounters sets the counters the pinned maps hold.
func (f *EBPF) SetCounters(c []toarecv.Counter) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counters = c
}

// EBPFState is what the fake holds and how often it was changed.
type EBPFState struct {
	Pinned                 bool
	Cgroup                 string
	Config                 toarecv.Config
	Attaches, Sets, Unpins int
}

// State returns what the fake holds and how often it was attached, set
// (Pinned.SetConfig) and unpinned.
func (f *EBPF) State() EBPFState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return EBPFState{Pinned: f.pinned, Cgroup: f.cgroup, Config: normalise(f.cfg),
		Attaches: f.attaches, Sets: f.sets, Unpins: f.unpins}
}

// normalise is cfg as the receiver's maps give it back: kinds sorted, the
// default kinds when none.
func normalise(cfg toarecv.Config) toarecv.Config {
	out := toarecv.Config{Trusted: slices.Clone(cfg.Trusted), Kinds: slices.Clone(cfg.Kinds)}
	if len(out.Kinds) == 0 {
		out.Kinds = slices.Clone(toarecv.DefaultKinds)
	}
	slices.Sort(out.Kinds)
	return out
}

// PinDir implements agent.EBPF.
func (f *EBPF) PinDir() string { return f.dir }

// Available implements agent.EBPF.
func (f *EBPF) Available(string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.unavailable
}

// Attach implements agent.EBPF.
func (f *EBPF) Attach(cgroup string, cfg toarecv.Config) (agent.EBPFAttachment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unavailable != nil {
		return agent.EBPFAttachment{}, f.unavailable
	}
	if cgroup == "" {
		cgroup = FakeCgroupRoot
	}
	adopted := f.pinned
	f.pinned, f.links, f.cgroup, f.cfg = true, true, cgroup, normalise(cfg)
	f.attaches++
	return agent.EBPFAttachment{Adopted: adopted, Cgroup: cgroup}, nil
}

// Open implements agent.EBPF.
func (f *EBPF) Open() (agent.PinnedEBPF, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.pinned {
		return nil, fmt.Errorf("toarecv: %w in %s", toarecv.ErrNotPinned, f.dir)
	}
	return pinnedEBPF{f}, nil
}

// Unpin implements agent.EBPF.
func (f *EBPF) Unpin() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.pinned {
		return toarecv.ErrNotPinned
	}
	f.pinned, f.links, f.cgroup, f.cfg = false, false, "", toarecv.Config{}
	f.unpins++
	return nil
}

// CgroupPath implements agent.EBPF.
func (f *EBPF) CgroupPath(id uint64) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id != fakeCgroupID || f.cgroup == "" {
		return "", fmt.Errorf("no cgroup with id %d", id)
	}
	return f.cgroup, nil
}

// pinnedEBPF is the fake's pinned maps and links.
type pinnedEBPF struct{ f *EBPF }

func (p pinnedEBPF) Config() (toarecv.Config, error) {
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	return normalise(p.f.cfg), nil
}

func (p pinnedEBPF) SetConfig(cfg toarecv.Config) error {
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	p.f.cfg = normalise(cfg)
	p.f.sets++
	return nil
}

func (p pinnedEBPF) Counters() ([]toarecv.Counter, error) {
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	out := make([]toarecv.Counter, len(p.f.counters))
	for i, c := range p.f.counters {
		out[i] = toarecv.Counter{Name: c.Name, PerCPU: slices.Clone(c.PerCPU)}
	}
	return out, nil
}

func (p pinnedEBPF) Attachment() ([]string, uint64) {
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	if !p.f.links {
		return nil, 0
	}
	return []string{"link_sockops", "link_getpeername4", "link_getpeername6"}, fakeCgroupID
}

func (p pinnedEBPF) Close() error { return nil }

var _ agent.EBPF = (*EBPF)(nil)
