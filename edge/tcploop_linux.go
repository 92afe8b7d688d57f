//go:build linux

package edge

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/ilist"
	"github.com/realip/realip/internal/rawsys"
)

// On Linux the TCP relay of short connections runs in epoll loops, one per
// CPU, on raw non-blocking sockets, as HAProxy and nginx do: a connection
// costs accept4, socket, connect, two epoll registrations, a read and a
// write per message, shutdown and two closes, and no goroutine. Go's net
// package adds a getsockname and getpeername per socket, a getsockopt and
// a context hook per connect, a read that finds nothing before each wait,
// and two goroutines per connection with their wake-ups. The loops' calls
// are raw system calls (package internal/rawsys). On the machine of
// bench/edge.sh this took the relay from 1.3x HAProxy's CPU per short
// connection to about 0.8x.
//
// A connection leaves its loop for the goroutine relay (relay.go) when it
// turns out to be a stream (a read fills the buffer, which splice then
// moves without copying) or when the other side cannot take a message at
// once (a partial write): its sockets become *net.TCPConn and the bytes
// not yet written go first. Connections of toa rules go there at once,
// because their connect goes through the TOA sender's checks.
//
// Each loop owns its connections; other goroutines reach it only with
// commands (evloop.Loop.Call), woken through an eventfd. Idle connections
// and connects that take longer than DialTimeout are found by a sweep a
// few times per period, from the loop's own clock: a connection is idle
// when neither side has sent anything for IdleTimeout (the goroutine relay
// asks the kernel, which also counts bytes still leaving a full send
// buffer; the loops hand such a connection to the goroutines anyway). A
// connect may take up to a sweep period (a quarter of DialTimeout) longer
// to fail.
//
// Every loop registers every listening socket with EPOLLEXCLUSIVE, but the
// loops wait through Go's poller, not in epoll_wait, so the kernel wakes
// all of them for each connection and all but one find accept4 empty. A
// listening socket per loop with SO_REUSEPORT (as the UDP ports have)
// would wake only one, but multiplies the descriptors of a rules file with
// thousands of TCP ports by the CPUs, and measured no faster on 2 CPUs
// (bench/edge.sh LOADS=conn REPS=8: 1.01x HAProxy either way).

// Log lines from a loop (an origin that refuses, accept failing) are
// written in the loop: a slow log sink slows the loop's connections.

// addPort makes every loop accept from p.
func (t *evLoops) addPort(p *tcpPort) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.loops == nil {
		return errors.New("edge: epoll loops stopped")
	}
	rc, err := p.ln.SyscallConn()
	if err != nil {
		return err
	}
	for _, l := range t.loops {
		var aerr error
		l.Call(func() { aerr = l.addPort(p, rc) })
		if aerr != nil {
			t.removePortLocked(p)
			return aerr
		}
	}
	return nil
}

// removePort makes every loop forget p, closed or not; when it returns,
// no loop takes another connection from p.
func (t *evLoops) removePort(p *tcpPort) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removePortLocked(p)
}

func (t *evLoops) removePortLocked(p *tcpPort) {
	for _, l := range t.loops {
		l.Call(func() { l.removePort(p) })
	}
}

// loopPort is a listening port as one loop sees it.
type loopPort struct {
	p           *tcpPort
	rc          syscall.RawConn
	tok         uint64
	pausedUntil time.Time // accept failed for lack of resources; zero: accepting
	noDelay     bool      // TCP_NODELAY is set on the listening socket, so on what it accepts
}

// loopConn is a relayed connection owned by a loop.
type loopConn struct {
	cfd, ufd   int
	ctok, utok uint64 // 0: not registered
	b          *binding
	m          *ruleMetrics
	src        netip.AddrPort
	hdr        []byte // PROXY header to write once connected
	cands      []netip.Addr
	tried      int
	errs       []error
	connecting bool
	deadline   time.Time              // of the connect
	active     time.Time              // last byte read either way
	cEOF, uEOF bool                   // the client, the origin sent its FIN
	links      ilist.Links[*loopConn] // in the loop's list
}

// addPort registers p's listening socket; the rc.Control keeps the socket
// from being closed meanwhile.
func (l *evLoop) addPort(p *tcpPort, rc syscall.RawConn) error {
	tok, _ := l.NewTokens()
	lp := &loopPort{p: p, rc: rc, tok: tok}
	// An accepted socket inherits TCP_NODELAY from its listener (Linux
	// copies the listener's socket): one setsockopt per port, not per
	// connection.
	_ = rc.Control(func(fd uintptr) {
		lp.noDelay = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1) == nil
	})
	if err := l.arm(lp); err != nil {
		return err
	}
	l.ports[tok] = lp
	return nil
}

// arm registers lp's socket, shared with the other loops (see the comment
// at the top about EPOLLEXCLUSIVE).
func (l *evLoop) arm(lp *loopPort) error {
	var err error
	if cerr := lp.rc.Control(func(fd uintptr) { err = l.Add(int(fd), unix.EPOLLIN|unix.EPOLLEXCLUSIVE, lp.tok) }); cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("edge: epoll_ctl add port %d: %w", lp.p.port, err)
	}
	return nil
}

// disarm unregisters lp's socket; a closed socket has left the epoll set
// by itself.
func (l *evLoop) disarm(lp *loopPort) {
	_ = lp.rc.Control(func(fd uintptr) { l.Del(int(fd)) })
}

func (l *evLoop) removePort(p *tcpPort) {
	for tok, lp := range l.ports {
		if lp.p == p {
			if lp.pausedUntil.IsZero() {
				l.disarm(lp)
			}
			delete(l.ports, tok)
		}
	}
}

// acceptFrom takes the connections waiting on lp, a bounded number per
// event so that one busy port does not starve the others. It reports
// whether it found none left (or paused the port).
func (l *evLoop) acceptFrom(lp *loopPort) bool {
	for range 16 {
		var (
			nfd  int
			peer netip.AddrPort
			aerr error
		)
		if err := lp.rc.Control(func(fd uintptr) {
			nfd, peer, aerr = rawsys.Accept4(int(fd))
		}); err != nil {
			return true // the port is closing
		}
		switch aerr {
		case nil:
			l.open(lp.p, nfd, peer, lp.noDelay)
		case unix.EAGAIN:
			return true
		case unix.ECONNABORTED, unix.EINTR, unix.EPROTO:
		default:
			// Out of descriptors or memory: stop taking from this port
			// for a sweep period instead of spinning on it.
			l.s.opts.Logger.Warn("edge: accept", "port", lp.p.port, "err", aerr, "retry_in", l.Period())
			l.disarm(lp)
			lp.pausedUntil = l.Now().Add(l.Period())
			return true
		}
	}
	return false
}

// open starts relaying a connection just accepted.
func (l *evLoop) open(p *tcpPort, cfd int, peer netip.AddrPort, noDelay bool) {
	s := l.s
	b := p.bind.Load()
	s.active.Add(1)
	if b.rs.pass.toa {
		l.toGoroutine(cfd, b)
		return
	}
	m := b.rs.metrics
	if reason := s.admitConn(peer.Addr()); reason != "" {
		m.fail(reason)
		rawsys.ResetClose(cfd)
		s.endTCP(nil, netip.Addr{})
		return
	}
	m.connections.Inc()
	m.active.Inc()
	c := &loopConn{cfd: cfd, ufd: -1, b: b, m: m, src: peer, active: l.Now()}
	if !noDelay {
		rawsys.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	if pass := &b.rs.pass; pass.tcpProxy != 0 {
		local, err := rawsys.Getsockname(cfd)
		if err == nil {
			c.hdr, err = pass.tcpHeader(c.src, local)
		}
		if err != nil {
			m.fail("header_write")
			rawsys.ResetClose(cfd)
			s.endTCP(m, c.src.Addr())
			return
		}
	}
	cands := b.rs.pool.Candidates(c.src.Addr())
	if len(cands) == 0 {
		m.fail("no_origin")
		s.opts.Logger.Warn("edge: no origin", "rule", m.label, "client", c.src, "err", "no origin address resolved")
		rawsys.ResetClose(cfd)
		s.endTCP(m, c.src.Addr())
		return
	}
	c.cands = cands[:min(len(cands), 3)]
	c.ctok, _ = l.NewTokens()
	l.list.PushFront(c)
	l.dial(c)
}

// toGoroutine hands a just accepted connection to the goroutine relay.
func (l *evLoop) toGoroutine(cfd int, b *binding) {
	client, err := edgeTCPConn(cfd)
	if err != nil {
		l.s.opts.Logger.Warn("edge: accept", "err", err)
		l.s.active.Done()
		return
	}
	go l.s.handleTCP(client, b)
}

// dial connects to the next candidate origin; when none is left the client
// is reset, as the goroutine relay does.
func (l *evLoop) dial(c *loopConn) {
	for c.tried < len(c.cands) {
		addr := c.cands[c.tried]
		c.tried++
		fd, err := connectNonblock(netip.AddrPortFrom(addr, c.b.originPort))
		if err != nil {
			l.dialFailed(c, addr, err)
			continue
		}
		_, utok := l.NewTokens()
		if err := l.Add(fd, unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLPRI|unix.EPOLLET, utok); err != nil {
			unix.Close(fd)
			l.dialFailed(c, addr, fmt.Errorf("epoll_ctl: %w", err))
			continue
		}
		c.ufd, c.utok = fd, utok
		l.conns[utok] = c
		c.connecting = true
		c.deadline = l.Now().Add(l.s.opts.DialTimeout)
		return
	}
	l.s.opts.Logger.Warn("edge: no origin", "rule", c.m.label, "client", c.src, "err", errors.Join(c.errs...))
	l.finish(c, true)
}

// dialFailed counts a failed connect and blames addr for it, unless the
// failure is the edge's own: then no other candidate is tried.
func (l *evLoop) dialFailed(c *loopConn, addr netip.Addr, err error) {
	if blameDial(c.b.rs, addr, err) {
		c.tried = len(c.cands)
	}
	c.errs = append(c.errs, fmt.Errorf("dial tcp %v: %w", netip.AddrPortFrom(addr, c.b.originPort), err))
}

// dropUpstream closes a failed connect's socket.
func (l *evLoop) dropUpstream(c *loopConn) {
	delete(l.conns, c.utok)
	rawsys.Close(c.ufd)
	c.ufd, c.utok, c.connecting = -1, 0, false
}

// connected handles the first events of a connect.
func (l *evLoop) connected(c *loopConn, ev uint32) {
	if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
		return
	}
	addr := c.cands[c.tried-1]
	if err := rawsys.ConnectError(c.ufd, ev); err != nil {
		l.dropUpstream(c)
		l.dialFailed(c, addr, err)
		l.dial(c)
		return
	}
	c.connecting = false
	c.b.rs.pool.MarkUp(addr)
	rawsys.SetsockoptInt(c.ufd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if len(c.hdr) > 0 {
		if n, err := rawsys.Write(c.ufd, c.hdr); err != nil || n != len(c.hdr) {
			c.m.fail("header_write")
			l.finish(c, true)
			return
		}
		c.hdr = nil
	}
	// What the client sent while the connect was on its way goes now; then
	// its socket is registered, which reports anything newer.
	if !l.pump(c, true, unix.EPOLLIN) {
		return
	}
	if err := l.Add(c.cfd, unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLPRI|unix.EPOLLET, c.ctok); err != nil {
		l.s.opts.Logger.Warn("edge: epoll_ctl", "err", err)
		l.finish(c, true)
		return
	}
	l.conns[c.ctok] = c
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLPRI) != 0 {
		l.pump(c, false, ev)
	}
}

// pump moves what one side has to the other (rawsys.Pump). It reports
// whether the connection is still the loop's.
func (l *evLoop) pump(c *loopConn, fromClient bool, ev uint32) bool {
	src, dst, count := c.ufd, c.cfd, c.m.toClient
	if fromClient {
		src, dst, count = c.cfd, c.ufd, c.m.toOrigin
	}
	res := rawsys.Pump(src, dst, l.buf, ev)
	if res.Moved > 0 {
		c.active = l.Now()
		count.Add(float64(res.Moved))
	}
	switch res.Outcome {
	case rawsys.EOF:
		return l.sawEOF(c, fromClient)
	case rawsys.Failed:
		l.finish(c, true)
		return false
	case rawsys.Slow:
		// The other side is not keeping up: a goroutine waits for it.
		l.toRelay(c, fromClient, res.Rest)
		return false
	case rawsys.Stream:
		// A stream: splice moves the rest.
		l.toRelay(c, fromClient, nil)
		return false
	}
	return true
}

// sawEOF passes a FIN on; the second one ends the connection.
func (l *evLoop) sawEOF(c *loopConn, fromClient bool) bool {
	if fromClient {
		c.cEOF = true
	} else {
		c.uEOF = true
	}
	if c.cEOF && c.uEOF {
		l.finish(c, false)
		return false
	}
	dst := c.cfd
	if fromClient {
		dst = c.ufd
	}
	rawsys.Shutdown(dst, unix.SHUT_WR)
	return true
}

// finish closes both sockets (reset: with RST, as for errors and idle
// connections) and ends the connection's bookkeeping.
func (l *evLoop) finish(c *loopConn, reset bool) {
	l.unlink(c)
	if reset {
		rawsys.ResetClose(c.cfd)
		if c.ufd >= 0 {
			rawsys.ResetClose(c.ufd)
		}
	} else {
		rawsys.Close(c.cfd)
		if c.ufd >= 0 {
			rawsys.Close(c.ufd)
		}
	}
	l.s.endTCP(c.m, c.src.Addr())
}

// toRelay hands a connection to the goroutine relay, with pending (bytes
// read but not yet written toward the origin if toOrigin) written first.
func (l *evLoop) toRelay(c *loopConn, toOrigin bool, pending []byte) {
	l.unlink(c)
	l.Del(c.cfd) // ENOENT if not registered yet
	l.Del(c.ufd)
	pending = append([]byte(nil), pending...)
	client, cerr := edgeTCPConn(c.cfd)
	upstream, uerr := edgeTCPConn(c.ufd)
	if err := errors.Join(cerr, uerr); err != nil {
		l.s.opts.Logger.Warn("edge: relay hand-off", "err", err)
		for _, nc := range []*net.TCPConn{client, upstream} {
			if nc != nil {
				nc.SetLinger(0)
				nc.Close()
			}
		}
		l.s.endTCP(c.m, c.src.Addr())
		return
	}
	s, m, src := l.s, c.m, c.src.Addr()
	rc := &relayConn{client: client, upstream: upstream, toOrigin: m.toOrigin, toClient: m.toClient}
	rc.onEnd = func() { s.endTCP(m, src) }
	if !s.tcpConns.add(rc) { // draining is over
		client.Close()
		upstream.Close()
		s.endTCP(m, src)
		return
	}
	go rc.runPending(pending, toOrigin)
}

// Links places c in its loop's list (ilist.Item).
func (c *loopConn) Links() *ilist.Links[*loopConn] { return &c.links }

// unlink forgets c: its tokens and its place in the list.
func (l *evLoop) unlink(c *loopConn) {
	delete(l.conns, c.ctok)
	delete(l.conns, c.utok)
	l.list.Remove(c)
}

// sweepConns fails connects past DialTimeout and resets connections idle
// both ways for IdleTimeout.
func (l *evLoop) sweepConns() {
	now, idle := l.Now(), l.s.opts.IdleTimeout
	for c := l.list.Front(); c != nil; {
		next := ilist.Next(c)
		switch {
		case c.connecting && !now.Before(c.deadline):
			addr := c.cands[c.tried-1]
			l.dropUpstream(c)
			l.dialFailed(c, addr, errors.New("i/o timeout"))
			l.dial(c)
		case !c.connecting && now.Sub(c.active) >= idle:
			l.finish(c, true)
		}
		c = next
	}
}

// resumePorts arms again the ports paused for a sweep period.
func (l *evLoop) resumePorts() {
	for _, lp := range l.ports {
		if !lp.pausedUntil.IsZero() && !l.Now().Before(lp.pausedUntil) {
			if l.arm(lp) == nil {
				lp.pausedUntil = time.Time{}
			}
		}
	}
}

// cutAll closes every connection the ordinary way (the end of a drain).
func (l *evLoop) cutAll() {
	for c := l.list.Front(); c != nil; c = l.list.Front() {
		l.finish(c, false)
	}
}

// connectNonblock starts a connect to addr from a new non-blocking socket
// with SO_REUSEADDR (see sockopt.ReuseAddr).
func connectNonblock(addr netip.AddrPort) (int, error) {
	family := unix.AF_INET6
	if addr.Addr().Unmap().Is4() {
		family = unix.AF_INET
	}
	fd, err := rawsys.Socket(family, unix.SOCK_STREAM)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := rawsys.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		rawsys.Close(fd)
		return -1, os.NewSyscallError("setsockopt", err)
	}
	if err := rawsys.Connect(fd, addr); err != nil && err != unix.EINPROGRESS {
		rawsys.Close(fd)
		return -1, os.NewSyscallError("connect", err)
	}
	return fd, nil
}

// edgeTCPConn turns a socket into a *net.TCPConn (rawsys.TCPConn) without
// keep-alive: idleness is the edge's business.
func edgeTCPConn(fd int) (*net.TCPConn, error) {
	tc, err := rawsys.TCPConn(fd)
	if err != nil {
		return nil, fmt.Errorf("edge: %w", err)
	}
	tc.SetKeepAlive(false)
	return tc, nil
}
