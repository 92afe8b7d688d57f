//go:build linux

package toasend

import "errors"

// Default option kinds: Tencent/EdgeOne's.
const (
	DefaultKindV4 = 200
	DefaultKindV6 = 253
)

// Options configures Open. The zero value is ready to use.
type Options struct {
	// CgroupPath is the cgroup v2 folder the program is attached to; it
	// sees the sockets of every process in it and in its descendants.
	// Default: the cgroup v2 of this process, found from /proc/self/cgroup
	// and the cgroup2 mount in /proc/self/mountinfo.
	CgroupPath string
	// KindV4 is the option kind for an IPv4 client (length 8); 0 means
	// DefaultKindV4. KindV6 is the kind for an IPv6 client (length 20); 0
	// means DefaultKindV6. They may be equal (DPVS uses 254 for both, and
	// receivers tell the families apart by length).
	KindV4, KindV6 uint8
}

// Stats are the program's counters since Open, summed over CPUs.
type Stats struct {
	// Armed counts tagged sockets that connected and got the header
	// option callbacks.
	Armed uint64
	// SYN counts SYN segments written with the option, retransmissions
	// included.
	SYN uint64
	// ACK counts handshake ACKs written with the option.
	ACK uint64
	// Data counts first data segments written with the option: the
	// receiver reads it from whichever of the ACK and the first data
	// segment completes its handshake.
	Data uint64
	// NoSpace counts segments that had no room left for the option (for
	// example the SYN of an IPv6 client signed with TCP-MD5).
	NoSpace uint64
	// Failed counts errors writing the option or setting the callbacks.
	Failed uint64
}

// Errors that Open and Available wrap, so callers can tell the causes apart
// with errors.Is. The messages say what is missing; the wrapping error adds
// the details.
var (
	// ErrNotPermitted: the process may not load or attach eBPF programs.
	ErrNotPermitted = errors.New("TOA sending needs the right to load eBPF programs: run as root, or with CAP_BPF and CAP_NET_ADMIN (before Linux 5.11 also a large enough RLIMIT_MEMLOCK)")
	// ErrNoCgroup2: no cgroup v2 to attach the program to.
	ErrNoCgroup2 = errors.New("TOA sending needs cgroup v2 (a cgroup2 mount, e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified)")
	// ErrUnsupported: the kernel (or the operating system) cannot write
	// TCP header options from eBPF.
	ErrUnsupported = errors.New("TOA sending needs a kernel with BPF TCP header options (5.10+)")
	// ErrClosed: the Sender was closed.
	ErrClosed = errors.New("toasend: sender closed")
)
