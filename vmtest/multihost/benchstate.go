//go:build linux

package main

// The bench's states (who answers getpeername() on the origin) and the
// cgroups it runs in.
//
// The receiver and the module are never active at once: set leaves the
// current state completely (the receiver's links unpinned, or the module
// unloaded) before it enters the next, and verifyState checks what is in
// force after every change.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/cgroup2"
	"github.com/realip/realip/toarecv"
)

// state is what answers getpeername() and accept() on the origin.
type state string

const (
	stateNone state = "none" // the kernel alone: the baseline
	stateEBPF state = "ebpf" // toarecv attached to the origin's cgroup
	stateKmod state = "kmod" // toa.ko loaded
	// stateHook: getpeername4/6 programs that do nothing, on the origin's
	// cgroup: the floor of any eBPF receiver's getpeername() cost (the
	// kernel's hook, without a receiver's work). Not a receiver.
	stateHook state = "hook"
)

// answersClient reports whether a TOA connection shows the client in s.
func (s state) answersClient() bool { return s == stateEBPF || s == stateKmod }

// parseStates reads -states: a comma-separated list of none, ebpf, kmod,
// hook, none first (the baseline every ratio is taken against), each once.
func parseStates(s string) ([]state, error) {
	var out []state
	for _, f := range strings.Split(s, ",") {
		st := state(strings.TrimSpace(f))
		switch st {
		case stateNone, stateEBPF, stateKmod, stateHook:
		default:
			return nil, fmt.Errorf("-states: unknown state %q (none, ebpf, kmod, hook)", f)
		}
		for _, seen := range out {
			if seen == st {
				return nil, fmt.Errorf("-states: %s given twice", st)
			}
		}
		out = append(out, st)
	}
	if len(out) < 2 || out[0] != stateNone {
		return nil, fmt.Errorf("-states %q: none first (the baseline), then at least one of ebpf, kmod, hook", s)
	}
	return out, nil
}

// benchCgroups are the bench's cgroups: PARENT/edge holds this process and
// the TOA sender, PARENT/origin the origin's servers and the receiver.
// Siblings, so neither program sees the other side's sockets.
type benchCgroups struct {
	parent, edge, origin string
	home                 string // where this process was, to go back to
}

func makeCgroups(name string) (*benchCgroups, error) {
	mnt, _, err := cgroup2.Mount(cgroup2.SelfMountinfo)
	if err != nil {
		return nil, err
	}
	home, err := cgroup2.Self(cgroup2.SelfCgroup, cgroup2.SelfMountinfo)
	if err != nil {
		return nil, err
	}
	g := &benchCgroups{parent: filepath.Join(mnt, name), home: home}
	g.edge, g.origin = filepath.Join(g.parent, "edge"), filepath.Join(g.parent, "origin")
	for _, dir := range []string{g.parent, g.edge, g.origin} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, fmt.Errorf("bench cgroup: %w (a bench of that -bench-name running, or left over?)", err)
		}
	}
	return g, nil
}

// remove moves this process home and removes the cgroups (a child that
// was just killed may take a moment to leave).
func (g *benchCgroups) remove() error {
	err := joinCgroup(g.home)
	for _, dir := range []string{g.edge, g.origin, g.parent} {
		var rerr error
		for range 100 {
			if rerr = os.Remove(dir); rerr == nil || errors.Is(rerr, os.ErrNotExist) {
				rerr = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		err = errors.Join(err, rerr)
	}
	return err
}

// set leaves the current state and enters s, then checks what is in
// force.
func (b *bencher) set(s state) error {
	if s == b.cur {
		return nil
	}
	switch b.cur {
	case stateEBPF:
		if err := b.detach(); err != nil {
			return err
		}
	case stateKmod:
		if err := unloadModule(); err != nil {
			return err
		}
	case stateHook:
		b.detachHook()
	}
	b.cur = stateNone
	switch s {
	case stateEBPF:
		if err := b.attach(); err != nil {
			return err
		}
	case stateKmod:
		if err := loadModule(b.module, "trusted="+trusted()); err != nil {
			return err
		}
	case stateHook:
		if err := b.attachHook(); err != nil {
			return err
		}
	}
	b.cur = s
	if err := b.verifyState(); err != nil {
		return err
	}
	if s == stateKmod {
		return b.prime()
	}
	return nil
}

// attach opens the eBPF receiver on the origin's cgroup, trusting the
// edge's origin-facing addresses only (as the module is loaded).
func (b *bencher) attach() error {
	r, err := toarecv.Open(toarecv.Options{Cgroup: b.cg.origin, PinDir: b.pinDir},
		toarecv.Config{Trusted: []netip.Prefix{netip.PrefixFrom(back4.Addr(), 32), netip.PrefixFrom(back6.Addr(), 128)}})
	if err != nil {
		return fmt.Errorf("attaching the eBPF receiver: %w", err)
	}
	if r.Adopted() {
		r.Close()
		return fmt.Errorf("the eBPF receiver was pinned in %s already: not the bench's own", b.pinDir)
	}
	b.recv = r
	return nil
}

// detach removes the receiver's pins, then closes it: its programs leave
// the cgroup. In this order the links' last references are this process's
// descriptors, whose close detaches at once; a pin's removal, were it the
// last, would leave the detaching to a kernel worker (6.x), later.
func (b *bencher) detach() error {
	if b.recv == nil {
		return nil
	}
	err := toarecv.Unpin(b.pinDir)
	if cerr := b.recv.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	b.recv = nil
	if err != nil {
		return fmt.Errorf("detaching the eBPF receiver: %w", err)
	}
	return nil
}

// verifyState checks that exactly the current state's receiver is in
// force: toa.ko loaded in kmod only; the receiver's three programs on the
// origin's cgroup in ebpf only, and its pins gone otherwise; the two empty
// getpeername programs in hook only.
func (b *bencher) verifyState() error {
	_, err := os.Stat("/sys/module/toa")
	if loaded := err == nil; loaded != (b.cur == stateKmod) {
		return fmt.Errorf("state %s: toa.ko loaded = %v", b.cur, loaded)
	}
	for _, at := range []ebpf.AttachType{ebpf.AttachCGroupSockOps, ebpf.AttachCgroupInet4GetPeername, ebpf.AttachCgroupInet6GetPeername} {
		want := 0
		if b.cur == stateEBPF || (b.cur == stateHook && at != ebpf.AttachCGroupSockOps) {
			want = 1
		}
		own, inherited, err := attachedPrograms(b.cg.origin, at)
		if err != nil {
			return err
		}
		if own != want {
			return fmt.Errorf("state %s: %d %s programs on the origin's cgroup, want %d", b.cur, own, at, want)
		}
		if inherited > 0 && !b.noted[at] {
			// Another tenant's program on an ancestor cgroup (the host's
			// root): it runs in every state alike, and answers are checked.
			fmt.Printf("bench: note: %d %s program(s) of others inherited from an ancestor cgroup\n", inherited, at)
			b.noted[at] = true
		}
	}
	if b.cur != stateEBPF {
		if _, err := os.Stat(b.pinDir); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("state %s: the receiver's pin folder %s is still there", b.cur, b.pinDir)
		}
	}
	return nil
}

// attachHook attaches a program that does nothing but let the call go on
// (return 1) to the origin's getpeername4 and getpeername6 hooks.
func (b *bencher) attachHook() error {
	for _, at := range []ebpf.AttachType{ebpf.AttachCgroupInet4GetPeername, ebpf.AttachCgroupInet6GetPeername} {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type: ebpf.CGroupSockAddr, AttachType: at, License: "Dual BSD/GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
		})
		if err != nil {
			b.detachHook()
			return fmt.Errorf("loading an empty %s program: %w", at, err)
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: b.cg.origin, Attach: at, Program: prog})
		prog.Close() // the link holds it
		if err != nil {
			b.detachHook()
			return fmt.Errorf("attaching an empty %s program: %w", at, err)
		}
		b.hook = append(b.hook, l)
	}
	return nil
}

// detachHook closes the empty programs' links, which detaches them.
func (b *bencher) detachHook() {
	for _, l := range b.hook {
		l.Close()
	}
	b.hook = nil
}

// attachedPrograms counts the programs of type at attached to the cgroup
// itself, and those that run on its sockets from ancestors.
func attachedPrograms(cgroup string, at ebpf.AttachType) (own, inherited int, err error) {
	f, err := os.Open(cgroup)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	direct, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
	if err != nil {
		return 0, 0, fmt.Errorf("querying %s programs of %s: %w", at, cgroup, err)
	}
	eff, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at, QueryFlags: unix.BPF_F_QUERY_EFFECTIVE})
	if err != nil {
		return 0, 0, fmt.Errorf("querying effective %s programs of %s: %w", at, cgroup, err)
	}
	return len(direct.Programs), len(eff.Programs) - len(direct.Programs), nil
}

// counters reads the counters of the receiver in force (none: nil).
func (b *bencher) counters() (map[string]uint64, error) {
	switch b.cur {
	case stateEBPF:
		cs, err := b.recv.Counters()
		if err != nil {
			return nil, err
		}
		m := map[string]uint64{}
		for _, c := range cs {
			m[c.Name] = c.Sum()
		}
		return m, nil
	case stateKmod:
		return toaStats(), nil
	}
	return nil, nil
}

// checkCounters checks, from the receiver's own counters, that it handled
// what the measurement meant it to: every TOA connection stored, and
// every getpeername() call on both sockets passed through it (the calls
// on the socket without TOA answer the same with or without a receiver,
// so only the counters show that the hook was in their path).
func (b *bencher) checkCounters(before, after map[string]uint64, conns int) error {
	if !b.cur.answersClient() {
		return nil
	}
	d := func(name string) uint64 { return after[name] - before[name] }
	calls := uint64(b.cfg.calls)
	ok := d("syn_recv_sock_toa") >= uint64(conns)+1 && d("getname_toa_ok") >= calls+uint64(conns) &&
		d("getname_toa_empty") >= calls
	if !b.c.check(ok, "bench counters", "%s: syn_recv_sock_toa +%d (>= %d), getname_toa_ok +%d (>= %d), getname_toa_empty +%d (>= %d)",
		b.cur, d("syn_recv_sock_toa"), conns+1, d("getname_toa_ok"), calls+uint64(conns), d("getname_toa_empty"), calls) {
		return fmt.Errorf("the %s receiver did not handle what was measured", b.cur)
	}
	return nil
}

// joinCgroupSockets runs fn with this process in cgroup dir, then moves
// it back to back: the sockets fn creates belong to dir for good.
func joinCgroupSockets(dir, back string, fn func() error) error {
	if err := joinCgroup(dir); err != nil {
		return err
	}
	ferr := fn()
	if err := joinCgroup(back); err != nil {
		return errors.Join(ferr, err)
	}
	return ferr
}
