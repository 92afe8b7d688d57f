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
)

// oldListener is a listener opened before the module was loaded.
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

// checkOldListeners makes two TOA connections to each old listener. A TCP
// one was taken over by the first handshake, before its accept(); on an
// MPTCP one the first accept() takes it over, and on kernels from 6.6 on
// that accept() itself still reports the edge (documented); its
// getpeername() and every later accept() report the client.
func checkOldListeners(c *checker, s *toasend.Sender, ls []*oldListener) []net.Conn {
	var keep []net.Conn
	before := stat("listeners_taken_over")
	for i, o := range ls {
		mptcp := o.mptcp && isMPTCP(o.ln)
		for n := range 2 {
			client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(20 + i)}), uint16(7000+10*i+n))
			in, out, err := toaConn(s, o.ln, o.dial, client)
			if err != nil {
				c.check(false, "old %s listener: %v", o.name, err)
				return keep
			}
			keep = append(keep, in, out)
			acc := netip.MustParseAddrPort(in.RemoteAddr().String())
			peer, err := getpeername(in)
			acceptOK := sameClient(acc, client) || (mptcp && n == 0)
			c.check(acceptOK && err == nil && sameClient(peer, client),
				"listener older than the module (%s, mptcp %v), connection %d: accept %s, getpeername %s (%v), client %s",
				o.name, mptcp, n+1, acc, peer, err, client)
		}
	}
	taken := stat("listeners_taken_over") - before
	c.check(taken >= uint64(len(ls)), "listeners_taken_over +%d for %d old listeners", taken, len(ls))
	return keep
}

// checkKTLS attaches kTLS to a taken-over IPv6 socket: the first IPv6 kTLS
// socket of the boot, from which the tls module builds its table. The
// socket must get the kernel's table first; getpeername() on it then
// reports the edge (documented).
func checkKTLS(c *checker, s *toasend.Sender) []net.Conn {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		c.check(false, "kTLS: listen: %v", err)
		return nil
	}
	defer ln.Close()
	client := netip.MustParseAddrPort("[2001:db8::77]:7777")
	in, out, err := toaConn(s, ln, "::1", client)
	if err != nil {
		c.check(false, "kTLS: %v", err)
		return nil
	}
	before, _ := getpeername(in)
	if err := setULP(in, "tls"); errors.Is(err, unix.ENOENT) {
		c.check(true, "kTLS: this kernel has no tls ULP (CONFIG_TLS unset): nothing to check")
		return []net.Conn{in, out}
	} else if err != nil {
		c.check(false, "kTLS: setsockopt(TCP_ULP, tls) on a taken-over socket: %v", err)
		return []net.Conn{in, out}
	}
	after, err := getpeername(in)
	edge := netip.MustParseAddrPort(out.LocalAddr().String())
	c.check(sameClient(before, client) && err == nil && sameClient(after, edge),
		"kTLS on a taken-over socket: getpeername %s before, %s after (the edge %s: kTLS has the kernel's table)", before, after, edge)
	return []net.Conn{in, out}
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

// checkKTLSAfterUnload makes a kTLS IPv6 socket with the module gone and
// calls getpeername() on it: through the tls module's table, which must
// not hold the module's getname.
func checkKTLSAfterUnload(c *checker) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		c.check(false, "kTLS after unload: %v", err)
		return
	}
	defer ln.Close()
	out, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		c.check(false, "kTLS after unload: %v", err)
		return
	}
	defer out.Close()
	in, err := ln.Accept()
	if err != nil {
		c.check(false, "kTLS after unload: %v", err)
		return
	}
	defer in.Close()
	if err := setULP(in, "tls"); errors.Is(err, unix.ENOENT) {
		return // no kTLS in this kernel (checkKTLS said so)
	} else if err != nil {
		c.check(false, "kTLS after unload: %v", err)
		return
	}
	peer, err := getpeername(in)
	c.check(err == nil && peer.String() == out.LocalAddr().String(),
		"kTLS after unload: getpeername %s (%v) through the tls module's table", peer, err)
}

// checkReload loads the module a second time: the old TCP listener, whose
// socket still holds the first load's table, is taken over again.
func checkReload(c *checker, s *toasend.Sender, module string, ls []*oldListener) error {
	if err := load(module, "trusted=127.0.0.0/8,::1/128"); err != nil {
		return fmt.Errorf("second load: %w", err)
	}
	client := netip.MustParseAddrPort("192.0.2.30:7100")
	in, out, err := toaConn(s, ls[0].ln, ls[0].dial, client)
	if err != nil {
		return err
	}
	acc := netip.MustParseAddrPort(in.RemoteAddr().String())
	peer, perr := getpeername(in)
	c.check(sameClient(acc, client) && perr == nil && sameClient(peer, client) && stat("listeners_taken_over") >= 1,
		"second load, listener from before the first: accept %s, getpeername %s (%v), listeners_taken_over %d",
		acc, peer, perr, stat("listeners_taken_over"))
	in.Close()
	out.Close()
	if err := unix.DeleteModule("toa", 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("second unload: %w", err)
	}
	return nil
}
