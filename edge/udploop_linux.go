//go:build linux

package edge

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/rawsys"
)

// On Linux the UDP forwarding ports are served by the same epoll loops as
// TCP (tcploop_linux.go), on raw non-blocking sockets, as nginx does. Each
// loop has its own socket for every port, bound with SO_REUSEPORT, so the
// kernel spreads clients over the loops by their address and a datagram
// wakes one loop. The loop that receives a client's first datagram owns
// its flow: the flow's upstream socket is in that loop's epoll set, and
// the replies leave through that loop's socket of the port. A datagram
// costs recvmsg and write one way, read and sendmsg the other; goroutine
// mode adds a read that finds nothing before each wait, and the wake-up of
// a goroutine per flow on every reply (the scheduler's futex and netpoll
// were a third of the relay's CPU in bench/edge.sh's UDP load).
//
// A client's datagram can reach another loop than the flow's owner only
// when the port's reuseport group changes under it (another process of
// the same user binding the port with SO_REUSEPORT); such datagrams are
// copied to the owner, so that only the owner touches a flow's socket.
//
// SO_REUSEPORT also means that a second process of the same user can
// bind a forwarding port and take part of its clients, where goroutine
// mode would fail to bind. -goroutine-relay avoids it.

// udpLoopPort is a UDP forwarding port served by the epoll loops.
type udpLoopPort struct {
	udpBase
	fds   []int // one SO_REUSEPORT socket per loop, by loop index
	flows flowTable[*udpLoopFlow]
}

// udpLoopFlow is a flow of a udpLoopPort, owned by one loop.
type udpLoopFlow struct {
	udpFlow
	p    *udpLoopPort
	loop *evLoop // the loop that owns the flow
	ufd  int     // the socket connected to the origin
	utok uint64  // ufd's token in the loop
	cfd  int     // the port's socket replies leave from
}

// loopUDP is a forwarding port's socket in one loop.
type loopUDP struct {
	p   *udpLoopPort
	fd  int
	tok uint64
}

func (p *udpLoopPort) serve() error { return p.srv.evLoops.addUDPPort(p) }

func (p *udpLoopPort) closeUnserved() {
	closeFDs(p.fds)
	p.fds = nil
}

func (p *udpLoopPort) close() { p.srv.evLoops.removeUDPPort(p) }

func (p *udpLoopPort) closeFlows() { p.srv.evLoops.closeFlows(p) }

// flow returns the live flow of client, if any.
func (p *udpLoopPort) flow(client netip.AddrPort) *udpLoopFlow {
	if f := p.flows.get(client); f != nil && !f.closed.Load() {
		return f
	}
	return nil
}

// openUDP binds one socket per loop to p's port. A port some other socket
// holds without SO_REUSEPORT fails to bind.
func (t *evLoops) openUDP(p *udpLoopPort) error {
	t.mu.Lock()
	n := len(t.loops)
	t.mu.Unlock()
	if n == 0 {
		return errors.New("edge: epoll loops stopped")
	}
	family, addr := udpListenAddr(p.srv.opts.ListenIP, p.port)
	for range n {
		fd, err := listenUDPReusePort(family, addr, !p.srv.opts.ListenIP.IsValid())
		if err != nil {
			closeFDs(p.fds)
			p.fds = nil
			return fmt.Errorf("listen udp %v: %w", addr, err)
		}
		p.fds = append(p.fds, fd)
	}
	p.local = addr
	p.pktinfo = !p.srv.opts.ListenIP.IsValid()
	return nil
}

// udpListenAddr is the family and address a UDP forwarding port binds to:
// ListenIP, or every address of both families (IPv6 with IPv4 mapped, as
// Go's net package does; IPv4 only where the kernel has no IPv6).
func udpListenAddr(ip netip.Addr, port uint16) (int, netip.AddrPort) {
	switch {
	case ip.IsValid() && ip.Unmap().Is4():
		return unix.AF_INET, netip.AddrPortFrom(ip.Unmap(), port)
	case ip.IsValid():
		return unix.AF_INET6, netip.AddrPortFrom(ip, port)
	}
	if fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
		unix.Close(fd)
		return unix.AF_INET6, netip.AddrPortFrom(netip.IPv6Unspecified(), port)
	}
	return unix.AF_INET, netip.AddrPortFrom(netip.IPv4Unspecified(), port)
}

// listenUDPReusePort opens a non-blocking UDP socket bound to addr with
// SO_REUSEADDR (as every edge socket: see sockopt.ReuseAddr) and
// SO_REUSEPORT; pktinfo also asks for each datagram's destination.
func listenUDPReusePort(family int, addr netip.AddrPort, pktinfo bool) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	opts := []struct{ level, opt, v int }{
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, 1},
		{unix.SOL_SOCKET, unix.SO_REUSEPORT, 1},
	}
	if family == unix.AF_INET6 && addr.Addr().IsUnspecified() {
		opts = append(opts, struct{ level, opt, v int }{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0})
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.v); err != nil {
			unix.Close(fd)
			return -1, os.NewSyscallError("setsockopt", err)
		}
	}
	if pktinfo {
		if err := setPktinfo(fd); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	var sa unix.RawSockaddrAny
	size := rawsys.PutSockaddr(&sa, family, addr)
	if _, _, e := unix.Syscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa)), size); e != 0 {
		unix.Close(fd)
		return -1, os.NewSyscallError("bind", e)
	}
	return fd, nil
}

// openRawUpstream opens a non-blocking UDP socket with SO_REUSEADDR
// connected to origin (a UDP connect only picks the local address).
func openRawUpstream(origin netip.AddrPort) (int, netip.AddrPort, error) {
	family := unix.AF_INET6
	if origin.Addr().Unmap().Is4() {
		family = unix.AF_INET
	}
	fd, err := rawsys.Socket(family, unix.SOCK_DGRAM)
	if err != nil {
		return -1, netip.AddrPort{}, os.NewSyscallError("socket", err)
	}
	if err := rawsys.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		rawsys.Close(fd)
		return -1, netip.AddrPort{}, os.NewSyscallError("setsockopt", err)
	}
	if err := rawsys.Connect(fd, origin); err != nil {
		rawsys.Close(fd)
		return -1, netip.AddrPort{}, fmt.Errorf("dial udp %v: %w", origin, os.NewSyscallError("connect", err))
	}
	local, err := rawsys.Getsockname(fd)
	if err != nil {
		rawsys.Close(fd)
		return -1, netip.AddrPort{}, os.NewSyscallError("getsockname", err)
	}
	return fd, local, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		rawsys.Close(fd)
	}
}

// addUDPPort registers p's sockets, one in each loop.
func (t *evLoops) addUDPPort(p *udpLoopPort) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.loops) != len(p.fds) {
		closeFDs(p.fds)
		p.fds = nil
		return errors.New("edge: epoll loops changed since the port was opened")
	}
	for i, l := range t.loops {
		var err error
		l.Call(func() { err = l.addUDP(p, p.fds[i]) })
		if err != nil {
			t.removeUDPPortLocked(p)
			return err
		}
	}
	return nil
}

// removeUDPPort stops every loop reading p, closes p's flows and then its
// sockets.
func (t *evLoops) removeUDPPort(p *udpLoopPort) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removeUDPPortLocked(p)
}

func (t *evLoops) removeUDPPortLocked(p *udpLoopPort) {
	for _, l := range t.loops {
		l.Call(func() { l.removeUDP(p) })
	}
	// Flows are made only by loops reading p, so none is left now
	// (unless the loops are gone, which closed every flow).
	closeFDs(p.fds)
	p.fds = nil
}

// closeFlows closes the flows of p, one call per loop.
func (t *evLoops) closeFlows(p *udpLoopPort) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range t.loops {
		l.Call(func() {
			for _, f := range l.flows {
				if f.p == p {
					f.closeInLoop()
				}
			}
		})
	}
}

func (l *evLoop) addUDP(p *udpLoopPort, fd int) error {
	tok, _ := l.NewTokens()
	if err := l.Add(fd, unix.EPOLLIN, tok); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	l.udps[tok] = &loopUDP{p: p, fd: fd, tok: tok}
	return nil
}

func (l *evLoop) removeUDP(p *udpLoopPort) {
	for tok, u := range l.udps {
		if u.p == p {
			l.Del(u.fd)
			delete(l.udps, tok)
		}
	}
	for _, f := range l.flows {
		if f.p == p {
			f.closeInLoop()
		}
	}
}

// newFlow opens the flow of a new client of p, or counts why it cannot;
// l, which received the client's datagram, owns it.
func (l *evLoop) newFlow(p *udpLoopPort, client netip.AddrPort, oob []byte) *udpLoopFlow {
	f := &udpLoopFlow{p: p, loop: l, ufd: -1, cfd: -1}
	if !f.begin(&p.udpBase, f, client, oob, l) || !openFlow(&f.udpFlow, &f.ufd, openRawUpstream, rawsys.Close) {
		return nil
	}
	if err := l.addFlow(f); err != nil {
		l.s.opts.Logger.Warn("edge: udp flow", "rule", f.b.rs.metrics.label, "client", client, "err", err)
		f.closeInLoop()
		return nil
	}
	kept, ok := p.flows.publish(f, &p.bind)
	if !ok {
		f.closeInLoop()
		return kept
	}
	return f
}

// addFlow registers a new flow's upstream socket; replies leave through
// this loop's socket of the flow's port.
func (l *evLoop) addFlow(f *udpLoopFlow) error {
	if l.idx >= len(f.p.fds) {
		return errors.New("edge: the loop does not serve the flow's port")
	}
	f.cfd = f.p.fds[l.idx]
	tok, _ := l.NewTokens()
	if err := l.Add(f.ufd, unix.EPOLLIN, tok); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	f.utok = tok
	l.flows[tok] = f
	return nil
}

// closeInLoop closes f; only its loop may call it.
func (f *udpLoopFlow) closeInLoop() {
	f.closeOnce.Do(func() {
		if l := f.loop; f.utok != 0 {
			l.Del(f.ufd)
			delete(l.flows, f.utok)
		}
		rawsys.Close(f.ufd)
		f.p.flows.release(f)
	})
}

// evict closes f, given up for another flow by the loop by. A flow of
// another loop is closed by its own loop, and by does not wait for that,
// since a loop must never wait for another.
func (f *udpLoopFlow) evict(by *evLoop) {
	if f.loop == by {
		f.closeInLoop()
		return
	}
	f.loop.Post(f.closeInLoop)
}

// udpVlen is the datagrams one recvmmsg takes. Fewer than that means the
// socket was empty at the time, so the loop need not look again before it
// waits (see evloop.Loop.turn); more than a few rarely wait in a socket.
const udpVlen = 8

// clientDatagrams forwards what clients sent to u's port; it reports
// whether the socket was found empty.
func (l *evLoop) clientDatagrams(u *loopUDP) bool {
	sc := l.udp
	n, err := sc.recvmmsg(u.fd, headroom, u.p.pktinfo)
	if err != nil {
		if err != unix.EAGAIN && err != unix.EINTR {
			l.s.opts.Logger.Warn("edge: udp read", "port", u.p.port, "err", os.NewSyscallError("recvmmsg", err))
		}
		return err == unix.EAGAIN
	}
	for i := range n {
		buf, size := sc.bufs[i], int(sc.hdrs[i].n)
		from := rawsys.SockaddrAddrPort(&sc.names[i])
		f := u.p.flow(from)
		if f == nil {
			oob := sc.oobs[i][:sc.hdrs[i].hdr.Controllen]
			if f = l.newFlow(u.p, from, oob); f == nil {
				continue
			}
		}
		if f.loop != l {
			l.handOver(f, buf[headroom:headroom+size])
			continue
		}
		l.forward(f, buf, size)
	}
	return n < udpVlen
}

// forward sends a client's datagram buf[headroom:headroom+n] on f, a flow
// of this loop (see udpFlow.datagram and sent).
func (l *evLoop) forward(f *udpLoopFlow, buf []byte, n int) {
	d, first, ok := f.datagram(buf, n)
	if !ok {
		return
	}
	_, err := rawsys.Write(f.ufd, d)
	if err = f.sent(err, n, first); err == nil {
		return // sent, or dropped (too big, a full send buffer) as UDP does
	}
	f.b.rs.pool.MarkDown(f.origin, os.NewSyscallError("write", err)) // refused: ICMP unreachable came back
	f.closeInLoop()
}

// handOver gives a copy of a client's datagram to the loop owning its flow.
func (l *evLoop) handOver(f *udpLoopFlow, d []byte) {
	buf := make([]byte, headroom+len(d))
	copy(buf[headroom:], d)
	f.loop.Post(func() {
		if !f.closed.Load() {
			f.loop.forward(f, buf, len(d))
		}
	})
}

// originDatagrams relays what f's origin sent back to the client; it
// reports whether the socket was found empty.
func (l *evLoop) originDatagrams(f *udpLoopFlow) bool {
	sc := l.udp
	m := f.b.rs.metrics
	n, err := sc.recvmmsg(f.ufd, 0, false)
	if err != nil {
		if err == unix.EAGAIN || err == unix.EINTR {
			return err == unix.EAGAIN
		}
		f.b.rs.pool.MarkDown(f.origin, os.NewSyscallError("recvmmsg", err)) // refused: ICMP unreachable came back
		f.closeInLoop()
		return true
	}
	f.last.Store(l.Now().UnixNano())
	for i := range n {
		payload, ok := f.replyPayload(sc.bufs[i][:sc.hdrs[i].n])
		if !ok {
			continue
		}
		if err := sc.sendmsg(f.cfd, payload, f.oob, f.client, f.p.local); err != nil {
			l.s.opts.Logger.Debug("edge: udp reply", "client", f.client, "err", os.NewSyscallError("sendmsg", err))
			continue
		}
		m.dgToClient.Inc()
		m.toClient.Add(float64(len(payload)))
	}
	return n < udpVlen
}

// sweepFlows closes the flows idle for UDPIdle.
func (l *evLoop) sweepFlows() {
	now, idle := l.Now(), l.s.opts.UDPIdle
	for _, f := range l.flows {
		if now.Sub(time.Unix(0, f.last.Load())) >= idle {
			f.closeInLoop()
		}
	}
}

// closeFlows closes every flow of the loop (its end).
func (l *evLoop) closeFlows() {
	for _, f := range l.flows {
		f.closeInLoop()
	}
}

// mmsghdr is struct mmsghdr of a 64-bit Linux.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// udpScratch is a loop's buffers for datagrams: udpVlen for recvmmsg,
// each with headroom for a header in front, and a message for sendmsg.
type udpScratch struct {
	bufs  [udpVlen][]byte
	oobs  [udpVlen][]byte
	names [udpVlen]unix.RawSockaddrAny
	iovs  [udpVlen]unix.Iovec
	hdrs  [udpVlen]mmsghdr

	name unix.RawSockaddrAny
	iov  unix.Iovec
	msg  unix.Msghdr
}

func newUDPScratch() *udpScratch {
	sc := &udpScratch{}
	for i := range udpVlen {
		sc.bufs[i] = make([]byte, headroom+maxDatagram)
		sc.oobs[i] = make([]byte, 128)
	}
	return sc
}

// recvmmsg reads up to udpVlen datagrams from fd, each into bufs[i][off:]
// with its sender in names[i] and, with oob, its control messages in
// oobs[i]; hdrs[i].n is its length and hdrs[i].hdr.Controllen the control
// messages'.
func (sc *udpScratch) recvmmsg(fd, off int, oob bool) (int, error) {
	for i := range udpVlen {
		sc.iovs[i].Base = &sc.bufs[i][off]
		sc.iovs[i].SetLen(len(sc.bufs[i]) - off)
		h := &sc.hdrs[i].hdr
		*h = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&sc.names[i])), Namelen: uint32(unsafe.Sizeof(sc.names[i])), Iov: &sc.iovs[i], Iovlen: 1}
		if oob {
			h.Control = &sc.oobs[i][0]
			h.SetControllen(len(sc.oobs[i]))
		}
	}
	r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&sc.hdrs[0])), udpVlen, unix.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// sendmsg sends p to the client from the socket fd, bound to local, with
// the control messages oob (the source address).
func (sc *udpScratch) sendmsg(fd int, p, oob []byte, to, local netip.AddrPort) error {
	family := unix.AF_INET6
	if local.Addr().Is4() {
		family = unix.AF_INET
	}
	size := rawsys.PutSockaddr(&sc.name, family, to)
	sc.iov.Base = unsafe.SliceData(p)
	sc.iov.SetLen(len(p))
	sc.msg = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&sc.name)), Namelen: uint32(size), Iov: &sc.iov, Iovlen: 1}
	if len(oob) > 0 {
		sc.msg.Control = &oob[0]
		sc.msg.SetControllen(len(oob))
	}
	_, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&sc.msg)), 0)
	return rawsys.Err(e)
}
