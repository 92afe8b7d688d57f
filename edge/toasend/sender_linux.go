//go:build linux

package toasend

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Sender is a loaded and attached TOA sockops program. Its methods are safe
// for concurrent use.
type Sender struct {
	cgroup string

	mu       sync.RWMutex // Close (write) against Control's map updates
	objs     *toaObjects  // nil once closed
	link     link.Link
	kv4      uint8
	kv6      uint8
	closeErr error
}

// Open loads the TOA program and attaches it to the cgroup. Errors wrap
// ErrNotPermitted, ErrNoCgroup2 or ErrUnsupported when that is the cause.
// The program stays attached until Close, or until the process exits: on
// the kernels this needs the attachment is a BPF link owned by the process,
// and it is never pinned.
func Open(opts Options) (*Sender, error) {
	kv4, kv6, err := opts.kinds()
	if err != nil {
		return nil, err
	}
	cg, err := cgroupPath(opts.CgroupPath)
	if err != nil {
		return nil, err
	}
	objs, err := load(kv4, kv6)
	if err != nil {
		return nil, err
	}
	l, err := link.AttachCgroup(link.CgroupOptions{
		Path:    cg,
		Attach:  ebpf.AttachCGroupSockOps,
		Program: objs.ToaSockops,
	})
	if err != nil {
		objs.Close()
		return nil, classify(fmt.Sprintf("attaching the sockops program to cgroup %s", cg), err)
	}
	return &Sender{cgroup: cg, objs: objs, link: l, kv4: kv4, kv6: kv6}, nil
}

// kinds returns the option kinds with defaults applied, or an error for a
// kind the kernel itself writes or that is no option at all.
func (o Options) kinds() (v4, v6 uint8, err error) {
	v4, v6 = o.KindV4, o.KindV6
	if v4 == 0 {
		v4 = DefaultKindV4
	}
	if v6 == 0 {
		v6 = DefaultKindV6
	}
	for _, k := range []uint8{v4, v6} {
		if reservedKind(k) {
			return 0, 0, fmt.Errorf("toasend: option kind %d is reserved (end of list, no-op, or an option the kernel writes itself)", k)
		}
	}
	return v4, v6, nil
}

// reservedKind reports whether kind is EOL, NOP, or an option Linux writes
// itself (MSS, window scale, SACK, timestamps, MD5, AO, MPTCP, Fast Open),
// which the option would collide with.
func reservedKind(kind uint8) bool {
	switch kind {
	case 0, 1, 2, 3, 4, 5, 8, 19, 29, 30, 34:
		return true
	}
	return false
}

// Cgroup returns the cgroup v2 folder the program is attached to.
func (s *Sender) Cgroup() string { return s.cgroup }

// Kinds returns the option kinds written for IPv4 and IPv6 clients.
func (s *Sender) Kinds() (v4, v6 uint8) { return s.kv4, s.kv6 }

// Control returns a function for net.Dialer.Control that makes the socket
// carry client in a TOA option: it stores the address for the socket,
// which the dialer calls it with before connect(). An
// IPv4-mapped IPv6 client counts as IPv4. The connection itself may be IPv4
// or IPv6, whatever the client's family. The function fails for a network
// other than TCP, an invalid client, or a closed Sender, so a dial never
// silently goes out without the option.
func (s *Sender) Control(client netip.AddrPort) func(network, address string, c syscall.RawConn) error {
	val, verr := clientValue(client)
	return func(network, address string, c syscall.RawConn) error {
		if verr != nil {
			return verr
		}
		switch network {
		case "tcp", "tcp4", "tcp6":
		default:
			return fmt.Errorf("toasend: TOA needs a TCP socket, not %q", network)
		}
		var err error
		cerr := c.Control(func(fd uintptr) { err = s.tag(int(fd), &val) })
		return errors.Join(cerr, err)
	}
}

// clientValue encodes client as the program's per-socket value.
func clientValue(client netip.AddrPort) (toaToaClient, error) {
	var v toaToaClient
	addr := client.Addr().Unmap()
	switch {
	case addr.Is4():
		v.Family = 4
		a := addr.As4()
		copy(v.Addr[:], a[:])
	case addr.Is6():
		v.Family = 6
		v.Addr = addr.As16()
	default:
		return v, fmt.Errorf("toasend: invalid client address %v", client)
	}
	v.Port = [2]uint8{uint8(client.Port() >> 8), uint8(client.Port())}
	return v, nil
}

// tag stores the client for the socket fd.
func (s *Sender) tag(fd int, v *toaToaClient) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.objs == nil {
		return ErrClosed
	}
	if err := s.objs.ToaClients.Update(int32(fd), v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("toasend: storing the client address for socket %d: %w", fd, err)
	}
	return nil
}

// Flags the program sets in a socket's stored value.
const (
	flagDone       = 0x01 // the first data segment went out: no more options
	flagSYNWritten = 0x02
	flagACKWritten = 0x04
)

// Carried reports whether the option went out on the connection's SYN and
// on its handshake ACK. Both are false for a connection that was not dialed
// with this Sender's Control, or whose socket is outside the cgroup the
// program is attached to: the edge can check a connection with it before
// relaying and count (or refuse) the ones that went out without the option.
// It returns ErrClosed once the Sender is closed.
func (s *Sender) Carried(c syscall.Conn) (syn, ack bool, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return false, false, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.objs == nil {
		return false, false, ErrClosed
	}
	var v toaToaClient
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = s.objs.ToaClients.Lookup(int32(fd), &v) }); err != nil {
		return false, false, err
	}
	if errors.Is(lerr, ebpf.ErrKeyNotExist) {
		return false, false, nil
	}
	if lerr != nil {
		return false, false, fmt.Errorf("toasend: reading the socket's state: %w", lerr)
	}
	return v.Flags&flagSYNWritten != 0, v.Flags&flagACKWritten != 0, nil
}

// Stats reads the program's counters.
func (s *Sender) Stats() (Stats, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.objs == nil {
		return Stats{}, ErrClosed
	}
	var out [6]uint64
	for i := range out {
		var perCPU []uint64
		if err := s.objs.ToaStats.Lookup(uint32(i), &perCPU); err != nil {
			return Stats{}, fmt.Errorf("toasend: reading counters: %w", err)
		}
		for _, n := range perCPU {
			out[i] += n
		}
	}
	return Stats{Armed: out[0], SYN: out[1], ACK: out[2], NoSpace: out[3], Failed: out[4], Data: out[5]}, nil
}

// Close detaches the program from the cgroup and unloads it. Sockets
// tagged earlier lose their stored address; connections already made are
// not affected. Close is idempotent.
func (s *Sender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.objs == nil {
		return s.closeErr
	}
	err := s.link.Close()
	if err != nil {
		err = fmt.Errorf("toasend: detaching from cgroup %s: %w", s.cgroup, err)
	}
	s.closeErr = errors.Join(err, s.objs.Close())
	s.objs, s.link = nil, nil
	return s.closeErr
}
