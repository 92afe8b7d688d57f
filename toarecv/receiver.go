//go:build linux

package toarecv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/cgroup2"
)

// The receiver's attachments: program, attach type, and the pin of its link.
type attachment struct {
	pin    string
	attach ebpf.AttachType
	prog   func(*recvObjects) *ebpf.Program
}

var attachments = [...]attachment{
	{"link_sockops", ebpf.AttachCGroupSockOps, func(o *recvObjects) *ebpf.Program { return o.ToaRecvSockops }},
	{"link_getpeername4", ebpf.AttachCgroupInet4GetPeername, func(o *recvObjects) *ebpf.Program { return o.ToaRecvGetpeername4 }},
	{"link_getpeername6", ebpf.AttachCgroupInet6GetPeername, func(o *recvObjects) *ebpf.Program { return o.ToaRecvGetpeername6 }},
}

// Receiver is the attached eBPF TOA receiver. Its methods are safe for
// concurrent use. Closing it leaves the pinned receiver working.
type Receiver struct {
	pinDir   string
	cgroup   string
	adopted  bool
	mu       sync.RWMutex // Close (write) against the map users (read)
	objs     *recvObjects
	links    []link.Link
	ncpu     int
	closeErr error
}

// Open loads the programs, applies cfg and attaches them to opts.Cgroup,
// pinning everything in opts.PinDir. When a receiver is pinned there
// already, Open adopts it: it keeps its maps (live entries, counters) and
// puts the programs of this build in place of the pinned ones through
// their links, so no connection is served without a receiver meanwhile.
func Open(opts Options, cfg Config) (*Receiver, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if err := ensurePinDir(opts.PinDir); err != nil {
		return nil, err
	}
	var r *Receiver
	err = withPinLock(opts.PinDir, func() (err error) {
		r, err = open(opts, cfg)
		return err
	})
	return r, err
}

// open is Open under the pin folder's lock.
func open(opts Options, cfg Config) (*Receiver, error) {
	before := existingPins(opts.PinDir)
	objs, err := load(opts.PinDir)
	if err != nil {
		return nil, errors.Join(err, removeNewPins(opts.PinDir, before))
	}
	r := &Receiver{pinDir: opts.PinDir, cgroup: opts.Cgroup, adopted: len(before) > 0, objs: objs}
	if r.ncpu, err = ebpf.PossibleCPU(); err != nil {
		return nil, r.abort(fmt.Errorf("toarecv: counting CPUs: %w", err), before)
	}
	if err := r.with(func(t tables) error { return t.setConfig(cfg) }); err != nil {
		return nil, r.abort(err, before)
	}
	if err := r.attach(); err != nil {
		return nil, r.abort(err, before)
	}
	return r, nil
}

// abort undoes a failed Open: the pins it made go again; pins that were
// there before stay (with the configuration Open may have applied).
func (r *Receiver) abort(err error, before map[string]bool) error {
	r.Close()
	return errors.Join(err, removeNewPins(r.pinDir, before))
}

// withDefaults fills in the defaults and checks the cgroup.
func (o Options) withDefaults() (Options, error) {
	if o.PinDir == "" {
		o.PinDir = DefaultPinDir
	}
	if o.Cgroup == "" {
		mnt, _, err := cgroup2.Mount(cgroup2.SelfMountinfo)
		if err != nil {
			return o, fmt.Errorf("toarecv: %w: %v", ErrNoCgroup2, err)
		}
		o.Cgroup = mnt
	}
	if err := cgroup2.Check(o.Cgroup); err != nil {
		return o, fmt.Errorf("toarecv: %w: %v", ErrNoCgroup2, err)
	}
	return o, nil
}

// load loads the collection, sharing maps pinned in pinDir (pinning the
// ones that are not there yet).
func load(pinDir string) (*recvObjects, error) {
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	_ = rlimit.RemoveMemlock()
	spec, err := loadRecv()
	if err != nil {
		return nil, fmt.Errorf("toarecv: %w", err)
	}
	for name, m := range spec.Maps {
		if name != "toa_buf" {
			m.Pinning = ebpf.PinByName
		}
	}
	objs := new(recvObjects)
	err = spec.LoadAndAssign(objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinDir}})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("toarecv: %w: %v", ErrIncompatible, err)
	}
	if err != nil {
		return nil, classify("loading the receiver's programs", err)
	}
	return objs, nil
}

// attach puts each program in place: through the pinned link when there
// is one on the same cgroup, else by a new link pinned over the old pin.
func (r *Receiver) attach() error {
	cgID, err := cgroupID(r.cgroup)
	if err != nil {
		return err
	}
	for _, a := range attachments {
		l, err := r.attachOne(a, cgID)
		if err != nil {
			return err
		}
		r.links = append(r.links, l)
	}
	return nil
}

func (r *Receiver) attachOne(a attachment, cgID uint64) (link.Link, error) {
	pin := filepath.Join(r.pinDir, a.pin)
	prog := a.prog(r.objs)
	if old, err := link.LoadPinnedLink(pin, nil); err == nil {
		if linkCgroup(old) == cgID {
			if err := old.Update(prog); err != nil {
				old.Close()
				return nil, classify("replacing the pinned "+a.pin+" program", err)
			}
			return old, nil
		}
		// Pinned on another cgroup: the new link replaces it below.
		defer old.Close()
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: r.cgroup, Attach: a.attach, Program: prog})
	if err != nil {
		return nil, classify(fmt.Sprintf("attaching %s to cgroup %s", a.pin, r.cgroup), err)
	}
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		l.Close()
		return nil, fmt.Errorf("toarecv: removing the old pin %s: %w", pin, err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return nil, fmt.Errorf("toarecv: pinning %s: %w", pin, err)
	}
	return l, nil
}

// linkCgroup is the cgroup id of a cgroup link, 0 when unknown.
func linkCgroup(l link.Link) uint64 {
	info, err := l.Info()
	if err != nil {
		return 0
	}
	if cg := info.Cgroup(); cg != nil {
		return cg.CgroupId
	}
	return 0
}

// cgroupID is a cgroup v2 folder's id: its inode number.
func cgroupID(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("toarecv: %w: %v", ErrNoCgroup2, err)
	}
	return st.Ino, nil
}

// Adopted reports whether Open found the receiver pinned already.
func (r *Receiver) Adopted() bool { return r.adopted }

// Cgroup is the cgroup v2 folder the programs are attached to.
func (r *Receiver) Cgroup() string { return r.cgroup }

// PinDir is where the receiver is pinned.
func (r *Receiver) PinDir() string { return r.pinDir }

// Close releases this process's hold on the receiver; the pinned receiver
// keeps working.
func (r *Receiver) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.objs == nil {
		return r.closeErr
	}
	var errs []error
	for _, l := range r.links {
		errs = append(errs, l.Close())
	}
	errs = append(errs, r.objs.Close())
	r.objs, r.links = nil, nil
	r.closeErr = errors.Join(errs...)
	return r.closeErr
}

// classify wraps err, from doing what, with the sentinel of its cause when
// it is known.
func classify(what string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("toarecv: %w: %s: %v", ErrNotPermitted, what, err)
	case errors.Is(err, unix.EACCES) && os.Geteuid() != 0 && !hasCap(unix.CAP_PERFMON):
		// The verifier refuses pointer arithmetic to a loader without
		// CAP_PERFMON: a question of rights, not of the program.
		return fmt.Errorf("toarecv: %w: %s: %v", ErrNotPermitted, what, err)
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("toarecv: %w: %s: %v", ErrUnsupported, what, err)
	}
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) && errors.Is(err, unix.EINVAL) {
		// An unknown helper or context field: an old kernel.
		return fmt.Errorf("toarecv: %w: %s: %v", ErrUnsupported, what, err)
	}
	return fmt.Errorf("toarecv: %s: %w", what, err)
}

// hasCap reports whether the calling thread has capability c in force.
func hasCap(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<(c%32)) != 0
}
