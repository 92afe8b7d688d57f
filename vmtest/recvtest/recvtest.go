//go:build linux

package recvtest

import (
	"fmt"
	"net/netip"
)

// Kind names a receiver, as the suites' -receiver flag does.
type Kind string

// The two receivers.
const (
	KindKmod Kind = "kmod" // realip's toa.ko
	KindEBPF Kind = "ebpf" // the eBPF receiver (package toarecv)
)

// ParseKind reads a -receiver value.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case KindKmod, KindEBPF:
		return k, nil
	}
	return "", fmt.Errorf("receiver %q: want kmod (toa.ko) or ebpf (the eBPF receiver)", s)
}

// Options say how to start a receiver.
type Options struct {
	Module  string         // kmod: the toa.ko file
	Cgroup  string         // ebpf: the cgroup v2 folder to attach to; empty: the mount's root
	PinDir  string         // ebpf: the bpffs pin folder; empty: toarecv.DefaultPinDir
	Trusted []netip.Prefix // the edges whose options are honoured
}

// Entry is what a receiver keeps for a connection that carried TOA
// (addresses unmapped).
type Entry struct {
	Client, Edge netip.AddrPort
}

// Receiver is a started receiver.
type Receiver interface {
	Kind() Kind
	// Where says where it runs, for the log: the module's file, or the
	// cgroup and the pin folder.
	Where() string
	// Trusted reads the trusted prefixes back from the receiver.
	Trusted() ([]netip.Prefix, error)
	// SetTrusted changes them at run time.
	SetTrusted([]netip.Prefix) error
	// Counters reads every counter, summed over CPUs, by its toa_stats
	// row name.
	Counters() (map[string]uint64, error)
	// Layout reads the counters' row names in order and how many CPU
	// columns each has.
	Layout() (names []string, cpus int, err error)
	// Entry finds the entry of an accepted connection: by its local
	// address and the peer accept() gave (kmod), or by its descriptor
	// (ebpf). ok is false when it has none.
	Entry(fd int, local, peer netip.AddrPort) (e Entry, ok bool, err error)
	// Stop unloads the module or detaches the programs; connections stay
	// open. It reads the counters first (CountersAtStop).
	Stop() error
	// CountersAtStop are the counters as Stop read them before stopping.
	CountersAtStop() map[string]uint64
	// Gone checks that nothing of the receiver is in force any more, and
	// says what it checked.
	Gone() (string, error)
	// Freed checks that the kernel freed what the receiver held and says
	// what it saw. allocated is ip6_address_alloc at the end.
	Freed() (detail string, allocated uint64, err error)
}

// Start loads toa.ko (kmod) or attaches the eBPF receiver (ebpf) with
// opts.Trusted.
func Start(kind Kind, opts Options) (Receiver, error) {
	switch kind {
	case KindKmod:
		return startKmod(opts)
	case KindEBPF:
		return startEBPF(opts)
	}
	return nil, fmt.Errorf("recvtest: unknown receiver %q", kind)
}

// Sum sums a counter's per-CPU values.
func sum(vals []uint64) uint64 {
	var s uint64
	for _, v := range vals {
		s += v
	}
	return s
}

// unmap makes an IPv4-mapped address IPv4.
func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}
