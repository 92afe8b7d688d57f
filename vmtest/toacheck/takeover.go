//go:build linux

package main

// How toa.ko reaches getpeername() and accept(): it gives TCP and MPTCP
// listeners a copy of their socket's proto_ops (kmod/toa_ops.c). These
// checks cover what that design has to get right beyond a listener made
// after the module was loaded:
//   - listeners older than the module (plain TCP: taken over at the first
//     TOA handshake; MPTCP, Go's default: at the first accept());
//   - kTLS attached to a taken-over socket (the tls module builds its own
//     table from the socket's the first time it sees an IPv6 socket: it
//     must not copy the module's getname, which would dangle after the
//     unload; the unload check below calls getpeername() on a kTLS socket
//     made after the module is gone);
//   - a second load after an unload, with the old listeners still open
//     (their sockets keep the first load's copy, made the kernel's again).
//
// The eBPF receiver hooks the kernel's own getname, for every socket of
// its cgroup, so the same cases run against it expecting the client
// throughout (rows old-listeners, ktls, restart in cases.go).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/edge/toasend"
	"github.com/realip/realip/vmtest/recvtest"
)

// oldListener is a listener opened before the receiver started.
type oldListener struct {
	name  string
	dial  string // the address to dial (loopback of its family)
	mptcp bool
	ln    net.Listener
}

// openOldListeners opens, before the module is loaded, one plain TCP
// listener per family and one MPTCP listener (what net.Listen makes on a
// kernel with MPTCP).
func openOldListeners() ([]*oldListener, error) {
	var out []*oldListener
	for _, o := range []*oldListener{
		{name: "TCP/IPv4", dial: "127.0.0.1"},
		{name: "TCP/IPv6", dial: "::1"},
		{name: "MPTCP/IPv4", dial: "127.0.0.1", mptcp: true},
	} {
		var lc net.ListenConfig
		lc.SetMultipathTCP(o.mptcp)
		ln, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort(o.dial, "0"))
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", o.name, err)
		}
		o.ln = ln
		out = append(out, o)
	}
	return out, nil
}

func closeOldListeners(ls []*oldListener) {
	for _, o := range ls {
		o.ln.Close()
	}
}

// isMPTCP reports whether ln's socket is an MPTCP one (the kernel may not
// have MPTCP, and Go then falls back to TCP).
func isMPTCP(ln net.Listener) bool {
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		return false
	}
	var proto int
	rc.Control(func(fd uintptr) { proto, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
	return proto == unix.IPPROTO_MPTCP
}

// toaConn makes one TOA connection from client to ln and accepts it.
func toaConn(s *toasend.Sender, ln net.Listener, dial string, client netip.AddrPort) (in, out net.Conn, err error) {
	port := ln.Addr().(*net.TCPAddr).Port
	d := net.Dialer{Control: s.Control(client), Timeout: 5 * time.Second}
	out, err = d.Dial("tcp", net.JoinHostPort(dial, strconv.Itoa(port)))
	if err != nil {
		return nil, nil, fmt.Errorf("dial: %w", err)
	}
	in, err = ln.Accept()
	if err != nil {
		out.Close()
		return nil, nil, err
	}
	return in, out, nil
}

func sameClient(a, b netip.AddrPort) bool {
	return a.Addr().Unmap() == b.Addr().Unmap() && a.Port() == b.Port()
}

// checkOldListeners makes two TOA connections to each old listener (row
// old-listeners). toa.ko: a TCP one was taken over by the first
// handshake, before its accept(); on an MPTCP one the first accept() takes
// it over, and on kernels from 6.6 on that accept() itself still reports
// the edge (documented); its getpeername() and every later accept()
// report the client. The eBPF receiver has nothing to take over: its hooks
// serve every socket of the cgroup, whenever it was made.
func (s *suite) checkOldListeners() []pair {
	var keep []pair
	before := s.stat("listeners_taken_over")
	ebpf := s.c.kind == recvtest.KindEBPF
	for i, o := range s.olds {
		mptcp := o.mptcp && isMPTCP(o.ln)
		for n := range 2 {
			client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(20 + i)}), uint16(7000+10*i+n))
			in, out, err := toaConn(s.sender, o.ln, o.dial, client)
			if err != nil {
				s.c.check("old-listeners", false, "%s listener: %v", o.name, err)
				return keep
			}
			keep = append(keep, pair{in: in, out: out, client: client})
			acc := netip.MustParseAddrPort(in.RemoteAddr().String())
			peer, err := getpeername(in)
			acceptOK := sameClient(acc, client) || (!ebpf && mptcp && n == 0)
			s.c.check("old-listeners", acceptOK && err == nil && sameClient(peer, client),
				"%s listener (mptcp %v), connection %d: accept %s, getpeername %s (%v), client %s",
				o.name, mptcp, n+1, acc, peer, err, client)
		}
	}
	taken := s.stat("listeners_taken_over") - before
	ok := taken >= uint64(len(s.olds))
	if ebpf {
		ok = taken == 0
	}
	s.c.check("old-listeners", ok, "listeners_taken_over +%d for %d old listeners", taken, len(s.olds))
	return keep
}

// checkKTLS attaches kTLS to an IPv6 TOA socket (row ktls): with toa.ko,
// the first IPv6 kTLS socket of the boot, from which the tls module builds
// its table, a taken-over socket. The socket must get the kernel's table
// first; getpeername() on it then reports the edge (documented). With the
// eBPF receiver the hook is inside the kernel's getname, which kTLS keeps:
// the client still.
func (s *suite) checkKTLS() []pair {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		s.c.check("ktls", false, "listen: %v", err)
		return nil
	}
	defer ln.Close()
	client := netip.MustParseAddrPort("[2001:db8::77]:7777")
	in, out, err := toaConn(s.sender, ln, "::1", client)
	if err != nil {
		s.c.check("ktls", false, "%v", err)
		return nil
	}
	p := []pair{{in: in, out: out, client: client}}
	before, _ := getpeername(in)
	if err := setULP(in, "tls"); errors.Is(err, unix.ENOENT) {
		s.c.check("ktls", true, "this kernel has no tls ULP (CONFIG_TLS unset): nothing to check")
		return p
	} else if err != nil {
		s.c.check("ktls", false, "setsockopt(TCP_ULP, tls) on a TOA socket: %v", err)
		return p
	}
	after, err := getpeername(in)
	want := netip.MustParseAddrPort(out.LocalAddr().String()) // the edge
	if s.c.kind == recvtest.KindEBPF {
		want = client
	}
	s.c.check("ktls", sameClient(before, client) && err == nil && sameClient(after, want),
		"getpeername %s before kTLS, %s after (%v), want %s", before, after, err, want)
	return p
}

func setULP(conn net.Conn, name string) error {
	rc, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptString(int(fd), unix.SOL_TCP, unix.TCP_ULP, name) }); err != nil {
		return err
	}
	return serr
}

// checkKTLSAfterStop makes a kTLS IPv6 socket with the receiver gone and
// calls getpeername() on it: with toa.ko, through the tls module's table,
// which must not hold the module's getname.
func (s *suite) checkKTLSAfterStop() {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		s.c.check("ktls-after-stop", false, "%v", err)
		return
	}
	defer ln.Close()
	out, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		s.c.check("ktls-after-stop", false, "%v", err)
		return
	}
	defer out.Close()
	in, err := ln.Accept()
	if err != nil {
		s.c.check("ktls-after-stop", false, "%v", err)
		return
	}
	defer in.Close()
	if err := setULP(in, "tls"); errors.Is(err, unix.ENOENT) {
		return // no kTLS in this kernel (row ktls said so)
	} else if err != nil {
		s.c.check("ktls-after-stop", false, "%v", err)
		return
	}
	peer, err := getpeername(in)
	s.c.check("ktls-after-stop", err == nil && peer.String() == out.LocalAddr().String(),
		"getpeername %s (%v), the peer %s", peer, err, out.LocalAddr())
}
