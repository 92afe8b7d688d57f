//go:build linux

package unwrap

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/evloop"
	"github.com/realip/realip/internal/ilist"
	"github.com/realip/realip/internal/rawsys"
	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// The TCP relay's epoll loops (internal/evloop), one per CPU up to
// maxLoops, on raw non-blocking sockets (internal/rawsys), as realip-edge's
// relay does. Every loop accepts from the listening socket. Registered
// with EPOLLEXCLUSIVE, but the loops wait through Go's poller, not in
// epoll_wait, so the kernel wakes all of them for each connection and all
// but one find accept4 empty, as the edge's loops do; Go's own poller,
// which also holds the socket, is woken too and finds no waiter. A
// listening socket per loop (SO_REUSEPORT, raw, in no other epoll set)
// wakes one loop only, but measured no faster, here (bench/unwrap.sh
// LOADS=conn, 2026-12-08) as in the edge (edge/tcploop_linux.go), and
// would let another process of the same user join the port.
//
// A loop reads the connection's first bytes (TCP_DEFER_ACCEPT has them
// there) and, when the peer is trusted and they hold a whole header of a
// protocol the entry accepts naming a client (wire.ReadProxyHeader, the
// listener's own parser), relays the connection itself: the connect to
// the server from the client's address, the copies, half-closes and
// resets, with no goroutine and none of the calls Go's net package adds
// per socket (getsockname, getpeername, SO_ERROR, a context hook per
// connect, an epoll registration for each socket), its system calls
// skipping the scheduler (see package rawsys). On bench/unwrap.sh's
// connection load the goroutine relay cost 1.46x HAProxy's CPU per
// connection, the loops 0.80x to 0.95x (README, "Speed").
//
// Everything else goes to package listener with the bytes already read
// (connQueue, prefixConn): an untrusted peer, a header still on its way,
// a LOCAL header, an error. The listener applies its whole policy and
// counts, and the relay serves what it admits in goroutines. The loops
// count their own accepted headers into Stats.Listener.
//
// As in the edge, a connection leaves its loop for the goroutine relay
// (pipe, splice) when it turns out to be a stream (a read fills the
// loop's buffer) or when one side does not take a write at once; the
// bytes not yet written go first. A connect that takes longer than
// DefaultDialTimeout fails at the next sweep (a quarter of it later at
// most).

// loopBuf is a loop's copy buffer: a read that fills it makes the
// connection a stream, which goes to splice(2).
const loopBuf = 16 << 10

// socketFunc opens a non-blocking socket of family (AF_INET, AF_INET6)
// for a transparent connect; a test whose relay runs in a network
// namespace other than its goroutines' opens it there.
type socketFunc func(family int) (int, error)

func rawStreamSocket(family int) (int, error) { return rawsys.Socket(family, unix.SOCK_STREAM) }

// tcpLoop is one epoll loop of a TCP relay. Tokens: odd ones are server
// sockets, even ones client sockets (evloop.Loop.NewTokens).
type tcpLoop struct {
	evloop.Loop
	r           *tcpRelay
	buf         []byte
	conns       map[uint64]*loopConn  // by the token of either socket
	list        ilist.List[*loopConn] // every connection, for sweeps and close
	lnTok       uint64                // the listening socket's
	pausedUntil time.Time             // accept failed for lack of resources; zero: accepting
	closing     bool                  // closeAll ran: the relay is closing
	src         bytes.Reader          // a connection's first bytes, for hdr
	hdr         *bufio.Reader         // reads a header from src
}

// loopConn is a relayed connection owned by a loop.
type loopConn struct {
	cfd, sfd      int
	ctok, stok    uint64
	client, proxy netip.AddrPort
	pending       []byte // for the server, written once connected
	connecting    bool
	deadline      time.Time              // of the connect
	cEOF, sEOF    bool                   // the client, the server sent its FIN
	links         ilist.Links[*loopConn] // in the loop's list
}

func newTCPLoop(r *tcpRelay) (*tcpLoop, error) {
	l := &tcpLoop{r: r, buf: make([]byte, loopBuf), conns: map[uint64]*loopConn{}}
	l.hdr = bufio.NewReaderSize(&l.src, wire.MaxV2HeaderLen)
	if err := l.Open(l, DefaultDialTimeout/4, r.log); err != nil {
		return nil, err
	}
	l.lnTok, _ = l.NewTokens()
	return l, nil
}

// arm registers the listening socket, shared with the other loops; the
// rc.Control keeps it from being closed meanwhile.
func (l *tcpLoop) arm() error {
	var err error
	if cerr := l.r.rc.Control(func(fd uintptr) { err = l.Add(int(fd), unix.EPOLLIN|unix.EPOLLEXCLUSIVE, l.lnTok) }); cerr != nil {
		return cerr
	}
	if err != nil {
		return fmt.Errorf("unwrap: epoll_ctl add %s: %w", l.r.entry.Listen, err)
	}
	return nil
}

// disarm unregisters the listening socket.
func (l *tcpLoop) disarm() {
	_ = l.r.rc.Control(func(fd uintptr) { l.Del(int(fd)) })
}

// acceptAll takes the connections waiting, a bounded number per event so
// that the connections already relayed are not starved. It reports
// whether it found none left (or paused accepting): the listening socket
// is level-triggered, so with more waiting the loop must poll again.
func (l *tcpLoop) acceptAll() bool {
	for range 16 {
		var (
			nfd  int
			peer netip.AddrPort
			aerr error
		)
		if err := l.r.rc.Control(func(fd uintptr) { nfd, peer, aerr = rawsys.Accept4(int(fd)) }); err != nil {
			return true // the socket is closing
		}
		switch aerr {
		case nil:
			l.admit(nfd, peer)
		case unix.EAGAIN:
			return true
		case unix.ECONNABORTED, unix.EINTR, unix.EPROTO:
		default:
			// Out of descriptors or memory: stop taking connections for
			// a sweep period instead of spinning on the socket.
			l.r.log.Warn("unwrap: accept failed", "listen", l.r.entry.Listen, "err", os.NewSyscallError("accept4", aerr), "retry_in", l.Period())
			l.disarm()
			l.pausedUntil = l.Now().Add(l.Period())
			return true
		}
	}
	return false
}

// admit relays a connection just accepted when its first bytes hold a
// header the loop can honour at once, and leaves it to the listener
// otherwise (handOff).
func (l *tcpLoop) admit(cfd int, peer netip.AddrPort) {
	r := l.r
	if !r.ln.Trusts(peer.Addr()) {
		r.handOff(cfd, nil)
		return
	}
	n, err := rawsys.Read(cfd, l.buf)
	if err != nil || n <= 0 { // nothing yet, the peer's end or a failure: the listener judges
		r.handOff(cfd, nil)
		return
	}
	h, used := l.parseHeader(l.buf[:n])
	if h == nil || h.Local || !h.Source.IsValid() || !r.allowed[viaOf(h)] {
		r.handOff(cfd, l.buf[:n])
		return
	}
	r.accepted[viaOf(h)].Add(1)
	to, ok := r.entry.target(h.Source.Addr())
	if !ok {
		r.noTarget.Add(1)
		r.log.Warn("unwrap: no target for the client's address family", "listen", r.entry.Listen, "client", h.Source, "proxy", peer)
		rawsys.ResetClose(cfd)
		return
	}
	if !r.reserve(h.Source) {
		rawsys.ResetClose(cfd)
		return
	}
	l.open(cfd, h.Source, peer, to, bytes.Clone(l.buf[used:n]))
}

// parseHeader reads a header from the start of b; nil when b does not
// hold a whole, valid one. used is its length.
func (l *tcpLoop) parseHeader(b []byte) (h *wire.ProxyHeader, used int) {
	l.src.Reset(b)
	l.hdr.Reset(&l.src)
	h, err := wire.ReadProxyHeader(l.hdr)
	if err != nil {
		return nil, 0
	}
	return h, len(b) - l.hdr.Buffered() - l.src.Len()
}

// viaOf is the protocol of a header.
func viaOf(h *wire.ProxyHeader) wire.Proto {
	if h.Version == 1 {
		return wire.PPv1
	}
	return wire.PPv2
}

// Events handles a batch of events (evloop.Handler). A connection's
// sockets are edge-triggered; the listening socket is not, so a batch
// that left connections waiting there must be polled again.
func (l *tcpLoop) Events(evs []unix.EpollEvent) bool {
	if l.closing { // the rest of the batch that ran closeAll
		return true
	}
	settled := true
	for i := range evs {
		tok, ev := evloop.Token(&evs[i]), evs[i].Events
		if tok == l.lnTok {
			settled = l.acceptAll() && settled
			continue
		}
		c := l.conns[tok]
		switch {
		case c == nil: // a socket closed earlier in this batch
		case tok == c.stok && c.connecting:
			l.connected(c, ev)
		case tok == c.stok:
			l.pump(c, false, ev)
		default:
			l.pump(c, true, ev)
		}
	}
	return settled
}

// Sweep fails the connects that took longer than DefaultDialTimeout and
// accepts again after a pause (evloop.Handler).
func (l *tcpLoop) Sweep() {
	if l.closing {
		return
	}
	now := l.Now()
	if !l.pausedUntil.IsZero() && !now.Before(l.pausedUntil) && l.arm() == nil {
		l.pausedUntil = time.Time{}
	}
	for c := l.list.Front(); c != nil; {
		next := ilist.Next(c)
		if c.connecting && !now.Before(c.deadline) {
			l.r.dialFailed(c.client, c.proxy, fmt.Errorf("unwrap: connect from %s: %w", c.client, os.ErrDeadlineExceeded))
			l.finish(c, true)
		}
		c = next
	}
}

// open starts relaying a client socket just accepted: the connect to the
// server from the client's address.
func (l *tcpLoop) open(cfd int, client, proxy, to netip.AddrPort, pending []byte) {
	sfd, err := l.r.connectTransparent(client, to)
	if err != nil {
		l.r.dialFailed(client, proxy, err)
		rawsys.ResetClose(cfd)
		l.r.loopEnded()
		return
	}
	c := &loopConn{cfd: cfd, sfd: sfd, client: client, proxy: proxy, pending: pending,
		connecting: true, deadline: l.Now().Add(DefaultDialTimeout)}
	c.ctok, c.stok = l.NewTokens()
	if err := l.Add(sfd, unix.EPOLLIN|unix.EPOLLOUT|unix.EPOLLRDHUP|unix.EPOLLPRI|unix.EPOLLET, c.stok); err != nil {
		l.r.dialFailed(client, proxy, fmt.Errorf("unwrap: epoll_ctl: %w", err))
		rawsys.ResetClose(sfd)
		rawsys.ResetClose(cfd)
		l.r.loopEnded()
		return
	}
	l.conns[c.stok] = c
	l.list.PushFront(c)
	l.tryEarly(c)
}

// tryEarly writes the bytes that came with the header at once. Over
// loopback the handshake with a local server is usually done before
// connect returns, and then the write goes through: the connection is
// established without waiting for the loop's next turn (a round through
// Go's poller per connection). A connect still on its way answers EAGAIN
// (the loop then waits for the socket's first event, as without bytes to
// write); one that failed answers its error.
func (l *tcpLoop) tryEarly(c *loopConn) {
	if len(c.pending) == 0 {
		return
	}
	n, err := rawsys.Write(c.sfd, c.pending)
	switch {
	case err == unix.EAGAIN:
		return
	case err != nil:
		l.r.dialFailed(c.client, c.proxy, fmt.Errorf("unwrap: connect from %s: %w", c.client, os.NewSyscallError("connect", err)))
		l.finish(c, true)
		return
	}
	l.r.toServer.Add(uint64(n))
	c.pending = c.pending[n:]
	l.established(c, 0)
}

// connected handles the first events of a connect: once it is done, the
// bytes that came with the header go to the server, then what the client
// sent meanwhile, and the client's socket is registered, which reports
// anything newer.
func (l *tcpLoop) connected(c *loopConn, ev uint32) {
	if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
		return
	}
	if err := rawsys.ConnectError(c.sfd, ev); err != nil {
		l.r.dialFailed(c.client, c.proxy, fmt.Errorf("unwrap: connect from %s: %w", c.client, err))
		l.finish(c, true)
		return
	}
	l.established(c, ev)
}

// established relays a connection whose connect is done, ev being the
// server socket's first event (0 when tryEarly found it done).
func (l *tcpLoop) established(c *loopConn, ev uint32) {
	c.connecting = false
	l.r.conns.Add(1)
	if len(c.pending) > 0 {
		n, err := rawsys.Write(c.sfd, c.pending)
		n = max(n, 0)
		l.r.toServer.Add(uint64(n))
		switch {
		case err != nil && err != unix.EAGAIN:
			l.finish(c, true)
			return
		case n < len(c.pending):
			l.toGoroutines(c, true, c.pending[n:])
			return
		}
		c.pending = nil
	}
	if !l.pump(c, true, unix.EPOLLIN) {
		return
	}
	if err := l.Add(c.cfd, unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLPRI|unix.EPOLLET, c.ctok); err != nil {
		l.r.log.Warn("unwrap: epoll_ctl", "listen", l.r.entry.Listen, "client", c.client, "err", err)
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
func (l *tcpLoop) pump(c *loopConn, fromClient bool, ev uint32) bool {
	src, dst, count := c.sfd, c.cfd, &l.r.toClient
	if fromClient {
		src, dst, count = c.cfd, c.sfd, &l.r.toServer
	}
	res := rawsys.Pump(src, dst, l.buf, ev)
	count.Add(uint64(res.Moved))
	switch res.Outcome {
	case rawsys.EOF:
		return l.sawEOF(c, fromClient)
	case rawsys.Failed:
		l.finish(c, true)
		return false
	case rawsys.Slow:
		l.toGoroutines(c, fromClient, res.Rest)
		return false
	case rawsys.Stream:
		l.toGoroutines(c, fromClient, nil)
		return false
	}
	return true
}

// sawEOF passes a FIN on as a half-close; the second one ends the
// connection.
func (l *tcpLoop) sawEOF(c *loopConn, fromClient bool) bool {
	dst := c.cfd
	if fromClient {
		c.cEOF, dst = true, c.sfd
	} else {
		c.sEOF = true
	}
	if c.cEOF && c.sEOF {
		l.finish(c, false)
		return false
	}
	rawsys.Shutdown(dst, unix.SHUT_WR)
	return true
}

// finish closes both sockets (reset: with an RST, as for errors) and
// forgets the connection.
func (l *tcpLoop) finish(c *loopConn, reset bool) {
	l.unlink(c)
	end := rawsys.Close
	if reset {
		end = rawsys.ResetClose
	}
	end(c.cfd)
	end(c.sfd)
	l.r.loopEnded()
}

// toGoroutines hands a connection to the goroutine relay, with pending
// (bytes read and not yet written: toward the server if toServer, else
// toward the client) written first.
func (l *tcpLoop) toGoroutines(c *loopConn, toServer bool, pending []byte) {
	l.unlink(c)
	l.Del(c.cfd) // ENOENT if not registered yet
	l.Del(c.sfd)
	pending = append([]byte(nil), pending...)
	client, cerr := rawsys.TCPConn(c.cfd)
	server, serr := rawsys.TCPConn(c.sfd)
	if cerr != nil || serr != nil {
		l.r.log.Warn("unwrap: hand-off to the goroutine relay", "listen", l.r.entry.Listen, "client", c.client, "err", fmt.Errorf("%w; %w", cerr, serr))
		for _, tc := range []*net.TCPConn{client, server} {
			if tc != nil {
				resetTCP(tc)
			}
		}
		l.r.loopEnded()
		return
	}
	// The server is on this host (see dialTransparent): no keep-alive.
	_ = server.SetKeepAlive(false)
	up, down := way{ended: c.cEOF}, way{ended: c.sEOF}
	if toServer {
		up.pending = pending
	} else {
		down.pending = pending
	}
	l.r.adopt(&tcpPair{client: client, server: server, addr: c.client}, up, down)
}

// Links places c in its loop's list (ilist.Item).
func (c *loopConn) Links() *ilist.Links[*loopConn] { return &c.links }

// unlink forgets c: its tokens and its place in the list.
func (l *tcpLoop) unlink(c *loopConn) {
	delete(l.conns, c.ctok)
	delete(l.conns, c.stok)
	l.list.Remove(c)
}

// closeAll stops accepting and closes every connection of the loop (the
// relay is closing).
func (l *tcpLoop) closeAll() {
	l.closing = true
	if l.pausedUntil.IsZero() {
		l.disarm()
	}
	for c := l.list.Front(); c != nil; c = l.list.Front() {
		l.finish(c, false)
	}
}

// connectTransparent starts a connect to the server at to from a new
// non-blocking socket bound to the client's address (setTransparent's
// options, and TCP_NODELAY, as Go sets on its connections).
func (r *tcpRelay) connectTransparent(client, to netip.AddrPort) (int, error) {
	from := netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	family, ipLevel, transparent := unix.AF_INET, unix.SOL_IP, unix.IP_TRANSPARENT
	if from.Addr().Is6() {
		family, ipLevel, transparent = unix.AF_INET6, unix.SOL_IPV6, unix.IPV6_TRANSPARENT
	}
	fd, err := r.socket(family)
	if err != nil {
		return -1, fmt.Errorf("unwrap: connect %s from %s: %w", to, from, os.NewSyscallError("socket", err))
	}
	opts := [...]struct {
		level, name, value int
		what               string
	}{
		{ipLevel, transparent, 1, "IP_TRANSPARENT (needs CAP_NET_ADMIN)"},
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, "SO_REUSEADDR"},
		{unix.SOL_SOCKET, unix.SO_MARK, int(r.mark), "SO_MARK"},
		{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1, "TCP_NODELAY"},
	}
	for _, o := range opts {
		if o.name == unix.SO_MARK && r.mark == 0 {
			continue
		}
		if err := rawsys.SetsockoptInt(fd, o.level, o.name, o.value); err != nil {
			rawsys.Close(fd)
			return -1, fmt.Errorf("unwrap: connect %s from %s: %s: %w", to, from, o.what, err)
		}
	}
	if err := rawsys.Bind(fd, family, from); err != nil {
		rawsys.Close(fd)
		return -1, fmt.Errorf("unwrap: connect %s from %s: %w", to, from, os.NewSyscallError("bind", err))
	}
	if err := rawsys.Connect(fd, to); err != nil && err != unix.EINPROGRESS {
		rawsys.Close(fd)
		return -1, fmt.Errorf("unwrap: connect %s from %s: %w", to, from, os.NewSyscallError("connect", err))
	}
	return fd, nil
}

// handOff leaves a connection just accepted to the listener, with the
// bytes a loop read from it; when the listener's queue is full (or the
// descriptor cannot be handed over: out of descriptors) it is closed and
// counted as shed. A connection with bytes read ahead reaches the listener
// as a prefixConn, whose header the listener reads in a goroutine of its
// own, in one of its MaxPending slots, as it would a header still on its
// way; such connections are the rare ones from a trusted edge (a LOCAL
// header, a split or bad header), and their goroutine ends at once.
func (r *tcpRelay) handOff(cfd int, read []byte) {
	tc, err := rawsys.TCPConn(cfd) // closes cfd, also on failure
	if err != nil {
		r.shed.Add(1)
		r.log.Warn("realip: connection shed", "listen", r.entry.Listen, "reason", listener.ReasonShed.String(),
			"err", fmt.Errorf("hand-off to the listener: %w", err))
		return
	}
	var c net.Conn = tc
	if len(read) > 0 {
		c = &prefixConn{tc: tc, rest: bytes.Clone(read)}
	}
	if !r.queue.put(c) {
		r.shed.Add(1)
		r.log.Warn("realip: connection shed", "listen", r.entry.Listen, "peer", c.RemoteAddr(), "reason", listener.ReasonShed.String(),
			"err", "the listener's queue is full")
		resetTCP(c)
	}
}
