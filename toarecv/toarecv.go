//go:build linux

package toarecv

import (
	"errors"
	"net/netip"
)

// DefaultPinDir is the bpffs folder the receiver's programs, links and maps
// are pinned in.
const DefaultPinDir = "/sys/fs/bpf/realip/toa"

// DefaultKinds are the TCP option kinds read as TOA by default: 200
// (EdgeOne, Tencent), 253 (Tencent's IPv6 client), 254 (LVS, DPVS, Huawei,
// Volcengine). The length tells IPv4 (8) from IPv6 (20).
var DefaultKinds = []uint8{200, 253, 254}

// MaxPrefixes is the most trusted prefixes the receiver holds (toa.ko's
// limit too).
const MaxPrefixes = 256

// CounterNames are the receiver's counters, in toa.ko's order
// (/proc/net/toa_stats rows).
var CounterNames = []string{
	"syn_recv_sock_toa",
	"syn_recv_sock_no_toa",
	"getname_toa_ok",
	"getname_toa_mismatch",
	"getname_toa_bypass",
	"getname_toa_empty",
	"ip6_address_alloc",
	"ip6_address_free",
	"syn_recv_sock_untrusted",
	"syn_recv_sock_bad_option",
	"syn_recv_sock_from_syn",
	"alloc_failed",
	"probe_missed",
	"listeners_taken_over",
}

// Options say where the receiver attaches and pins.
type Options struct {
	// Cgroup is the cgroup v2 folder the programs attach to: they serve
	// the sockets of every process in it and its descendants. Empty: the
	// root of the cgroup v2 mount (every process on the host).
	Cgroup string
	// PinDir is the bpffs folder for the pins; empty: DefaultPinDir.
	PinDir string
}

// Config is what the receiver honours.
type Config struct {
	// Trusted are the source prefixes (the edges) whose options are
	// honoured; empty: every source (legacy, forgeable).
	Trusted []netip.Prefix
	// Kinds are the option kinds read as TOA; empty: DefaultKinds.
	Kinds []uint8
}

// Counter is one counter's value per possible CPU.
type Counter struct {
	Name   string
	PerCPU []uint64
}

// Sum is the counter's total over CPUs.
func (c Counter) Sum() uint64 {
	var s uint64
	for _, v := range c.PerCPU {
		s += v
	}
	return s
}

// Entry is what the receiver keeps for one connection that carried TOA.
type Entry struct {
	Client netip.AddrPort // from the option
	Edge   netip.AddrPort // the segment's source
}

// Errors the package wraps, to tell causes apart with errors.Is.
var (
	// ErrNotPermitted: the process may not load or attach eBPF programs.
	ErrNotPermitted = errors.New("the eBPF TOA receiver needs the right to load eBPF programs: run as root, or with CAP_BPF, CAP_PERFMON (its programs read packet and socket memory) and CAP_NET_ADMIN")
	// ErrNoCgroup2: no cgroup v2 to attach to.
	ErrNoCgroup2 = errors.New("the eBPF TOA receiver needs cgroup v2 (mount it, e.g. `mount -t cgroup2 none /sys/fs/cgroup`), or use the toa.ko receiver")
	// ErrUnsupported: the kernel lacks what the programs need.
	ErrUnsupported = errors.New("the eBPF TOA receiver needs Linux 5.10 or newer with BPF (sockops header access, socket storage, cgroup links); use the toa.ko receiver on this kernel")
	// ErrNoBPFFS: no bpffs to pin in.
	ErrNoBPFFS = errors.New("the eBPF TOA receiver needs bpffs to pin its programs (mount -t bpf bpf /sys/fs/bpf)")
	// ErrNotPinned: nothing of the receiver is pinned (it is not running).
	ErrNotPinned = errors.New("the eBPF TOA receiver is not attached (nothing pinned)")
	// ErrIncompatible: the pinned maps are from another version of the
	// receiver.
	ErrIncompatible = errors.New("the pinned eBPF TOA receiver is of an incompatible version; detach it (`realip-agent unload`) and load again")
)
