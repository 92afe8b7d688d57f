//go:build linux

package recvtest

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/realip/realip/toarecv"
)

// freeWait bounds how long Gone and Freed wait for the kernel to free the
// receiver's programs and maps (it does so after an RCU grace period, from
// a worker).
const freeWait = 10 * time.Second

// attachTypes are the hooks the receiver attaches to.
var attachTypes = []ebpf.AttachType{ebpf.AttachCGroupSockOps, ebpf.AttachCgroupInet4GetPeername, ebpf.AttachCgroupInet6GetPeername}

// bpfRecv is the eBPF receiver.
type bpfRecv struct {
	r      *toarecv.Receiver
	pinDir string
	cgroup string
	progs  []ebpf.ProgramID // recorded by Stop
	maps   []ebpf.MapID
	atStop map[string]uint64
}

func startEBPF(opts Options) (*bpfRecv, error) {
	if _, err := os.Stat(moduleDir); err == nil {
		return nil, errors.New("recvtest: toa.ko is loaded: it would answer instead of the eBPF receiver")
	}
	pinDir := opts.PinDir
	if pinDir == "" {
		pinDir = toarecv.DefaultPinDir
	}
	r, err := toarecv.Open(toarecv.Options{Cgroup: opts.Cgroup, PinDir: pinDir}, toarecv.Config{Trusted: opts.Trusted})
	if err != nil {
		return nil, fmt.Errorf("recvtest: attaching the eBPF receiver: %w", err)
	}
	if r.Adopted() {
		r.Close()
		return nil, fmt.Errorf("recvtest: an eBPF receiver was pinned in %s already: not this test's", pinDir)
	}
	return &bpfRecv{r: r, pinDir: pinDir, cgroup: r.Cgroup()}, nil
}

func (b *bpfRecv) Kind() Kind { return KindEBPF }
func (b *bpfRecv) Where() string {
	return fmt.Sprintf("eBPF receiver on cgroup %s, pinned in %s", b.cgroup, b.pinDir)
}

func (b *bpfRecv) Trusted() ([]netip.Prefix, error) {
	cfg, err := b.r.Config()
	return cfg.Trusted, err
}

func (b *bpfRecv) SetTrusted(ps []netip.Prefix) error {
	return b.r.SetConfig(toarecv.Config{Trusted: ps})
}

func (b *bpfRecv) Counters() (map[string]uint64, error) {
	cs, err := b.r.Counters()
	if err != nil {
		return nil, err
	}
	m := map[string]uint64{}
	for _, c := range cs {
		m[c.Name] = c.Sum()
	}
	return m, nil
}

func (b *bpfRecv) Layout() ([]string, int, error) {
	cs, err := b.r.Counters()
	if err != nil {
		return nil, 0, err
	}
	var names []string
	cpus := -1
	for _, c := range cs {
		if cpus >= 0 && len(c.PerCPU) != cpus {
			return nil, 0, fmt.Errorf("recvtest: counter %s has %d CPUs, the one before %d", c.Name, len(c.PerCPU), cpus)
		}
		cpus = len(c.PerCPU)
		names = append(names, c.Name)
	}
	return names, cpus, nil
}

// Entry looks the socket up in the receiver's socket storage.
func (b *bpfRecv) Entry(fd int, _, _ netip.AddrPort) (Entry, bool, error) {
	e, ok, err := b.r.Lookup(fd)
	return Entry{Client: unmap(e.Client), Edge: unmap(e.Edge)}, ok, err
}

// Stop reads the counters and the ids of the receiver's programs and maps,
// removes the pins and closes the receiver: its links go, which detaches
// the programs (the pins first, so that the detaching happens at the
// close, not later in a kernel worker).
func (b *bpfRecv) Stop() error {
	var err error
	if b.atStop, err = b.Counters(); err != nil {
		return err
	}
	if b.progs, b.maps, err = pinnedIDs(b.pinDir); err != nil {
		return err
	}
	err = toarecv.Unpin(b.pinDir)
	return errors.Join(err, b.r.Close())
}

func (b *bpfRecv) CountersAtStop() map[string]uint64 { return b.atStop }

// pinnedIDs lists the programs behind the links pinned in dir and the maps
// those programs use (the pinned ones and the unpinned scratch map).
func pinnedIDs(dir string) ([]ebpf.ProgramID, []ebpf.MapID, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("recvtest: %w", err)
	}
	var progs []ebpf.ProgramID
	var maps []ebpf.MapID
	for _, e := range entries {
		l, err := link.LoadPinnedLink(filepath.Join(dir, e.Name()), nil)
		if err != nil {
			continue // a map
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("recvtest: link %s: %w", e.Name(), err)
		}
		progs = append(progs, info.Program)
		ids, err := programMaps(info.Program)
		if err != nil {
			return nil, nil, err
		}
		for _, id := range ids {
			if !slices.Contains(maps, id) {
				maps = append(maps, id)
			}
		}
	}
	if len(progs) != len(attachTypes) {
		return nil, nil, fmt.Errorf("recvtest: %d links pinned in %s, want %d", len(progs), dir, len(attachTypes))
	}
	return progs, maps, nil
}

func programMaps(id ebpf.ProgramID) ([]ebpf.MapID, error) {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return nil, fmt.Errorf("recvtest: program %d: %w", id, err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return nil, fmt.Errorf("recvtest: program %d: %w", id, err)
	}
	ids, ok := info.MapIDs()
	if !ok {
		return nil, fmt.Errorf("recvtest: program %d: the kernel does not say which maps it uses", id)
	}
	return ids, nil
}

// Gone: no pins, none of the receiver's programs on the cgroup, and the
// programs freed by the kernel. The kernel detaches them when the last
// reference to their links goes, and the pins' references go after an RCU
// grace period, from a worker (measured on 5.10: 20-30 ms after Stop), so
// Gone waits, at most freeWait, and says how long it took.
func (b *bpfRecv) Gone() (string, error) {
	var errs []error
	if _, err := os.Stat(b.pinDir); !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("the pin folder %s is still there (%v)", b.pinDir, err))
	}
	if p, err := toarecv.OpenPinned(b.pinDir); !errors.Is(err, toarecv.ErrNotPinned) {
		if p != nil {
			p.Close()
		}
		errs = append(errs, fmt.Errorf("toarecv.OpenPinned(%s) = %v, want ErrNotPinned", b.pinDir, err))
	}
	t0 := time.Now()
	err := b.offCgroup()
	for ; err != nil && time.Since(t0) < freeWait; err = b.offCgroup() {
		time.Sleep(5 * time.Millisecond)
	}
	detached := time.Since(t0)
	if err != nil {
		errs = append(errs, err)
	}
	if err := waitGone(func(id uint32) error {
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
		if err == nil {
			p.Close()
		}
		return err
	}, ids32(b.progs)); err != nil {
		errs = append(errs, fmt.Errorf("programs: %w", err))
	}
	return fmt.Sprintf("no pins in %s; its %d programs off %s %v after the stop, and freed", b.pinDir, len(b.progs), b.cgroup,
		detached.Round(time.Millisecond)), errors.Join(errs...)
}

// offCgroup checks that none of the receiver's programs is attached to
// its cgroup any more (others' programs may be).
func (b *bpfRecv) offCgroup() error {
	f, err := os.Open(b.cgroup)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, at := range attachTypes {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
		if err != nil {
			return fmt.Errorf("querying the %s programs of %s: %w", at, b.cgroup, err)
		}
		for _, p := range res.Programs {
			if slices.Contains(b.progs, p.ID) {
				return fmt.Errorf("program %d is still attached to %s as %s", p.ID, b.cgroup, at)
			}
		}
	}
	return nil
}

// Freed waits until the kernel has freed the receiver's maps: the socket
// storage of connections still open goes with its map.
func (b *bpfRecv) Freed() (string, uint64, error) {
	err := waitGone(func(id uint32) error {
		m, err := ebpf.NewMapFromID(ebpf.MapID(id))
		if err == nil {
			m.Close()
		}
		return err
	}, ids32(b.maps))
	detail := fmt.Sprintf("the kernel freed the receiver's %d programs and %d maps (at the detach: ip6_address_alloc %d, _free %d)",
		len(b.progs), len(b.maps), b.atStop["ip6_address_alloc"], b.atStop["ip6_address_free"])
	if err != nil {
		return detail, b.atStop["ip6_address_alloc"], fmt.Errorf("recvtest: maps: %w", err)
	}
	return detail, b.atStop["ip6_address_alloc"], nil
}

func ids32[T ~uint32](ids []T) []uint32 {
	out := make([]uint32, len(ids))
	for i, id := range ids {
		out[i] = uint32(id)
	}
	return out
}

// waitGone waits, at most freeWait, until open fails with "does not
// exist" for every id.
func waitGone(open func(uint32) error, ids []uint32) error {
	deadline := time.Now().Add(freeWait)
	for {
		var left []uint32
		for _, id := range ids {
			if err := open(id); !errors.Is(err, os.ErrNotExist) {
				left = append(left, id)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ids %v still exist %v after the detach", left, freeWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
