//go:build linux

package unwrap

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/evloop"
	"github.com/realip/realip/internal/rawsys"
	"github.com/realip/realip/listener"
)

// The TCP relay's fast path. A connection whose header the listener
// honoured leaves Go's poller right after Accept: its socket goes to one
// of the relay's epoll loops (internal/evloop, one per CPU up to
// maxLoops), which connects to the server from the client's address and
// relays on raw non-blocking sockets (internal/rawsys), as realip-edge's
// relay does. A short connection then costs no goroutine and none of the
// calls Go's net package adds per socket (getsockname, getpeername,
// SO_ERROR, a context hook per connect, a read that finds nothing before
// each wait), and its system calls skip the scheduler (see package
// rawsys): on bench/unwrap.sh's connection load the goroutine relay cost
// 1.46x HAProxy's CPU per connection.
//
// Taking the socket from Go's poller costs a dup and a close (the listener
// keeps its policy, timeouts and counters for every connection, and a
// connection whose header is still on its way waits in a goroutine of the
// listener, not in a loop). Connections served with their peer as the
// client (an untrusted peer, a LOCAL header) stay on the goroutine path,
// whose first read looks for a header to drop or strip.
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
	r     *tcpRelay
	buf   []byte
	conns map[uint64]*loopConn // by the token of either socket
	head  *loopConn            // every connection, for sweeps and close
}

// loopConn is a relayed connection owned by a loop.
type loopConn struct {
	cfd, sfd      int
	ctok, stok    uint64
	client, proxy netip.AddrPort
	pending       []byte // for the server, written once connected
	connecting    bool
	deadline      time.Time // of the connect
	cEOF, sEOF    bool      // the client, the server sent its FIN
	prev, next    *loopConn
}

func newTCPLoop(r *tcpRelay) (*tcpLoop, error) {
	l := &tcpLoop{r: r, buf: make([]byte, loopBuf), conns: map[uint64]*loopConn{}}
	if err := l.Open(l, DefaultDialTimeout/4, r.log); err != nil {
		return nil, err
	}
	return l, nil
}

// Events handles a batch of events (evloop.Handler). Every socket is
// edge-triggered, so the loop may always park after a batch.
func (l *tcpLoop) Events(evs []unix.EpollEvent) bool {
	for i := range evs {
		tok, ev := evloop.Token(&evs[i]), evs[i].Events
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
	return true
}

// Sweep fails the connects that took longer than DefaultDialTimeout
// (evloop.Handler).
func (l *tcpLoop) Sweep() {
	now := l.Now()
	for c := l.head; c != nil; {
		next := c.next
		if c.connecting && !now.Before(c.deadline) {
			l.r.dialFailed(c.client, c.proxy, fmt.Errorf("unwrap: connect from %s: %w", c.client, os.ErrDeadlineExceeded))
			l.finish(c, true)
		}
		c = next
	}
}

// open starts relaying a client socket handed over by the accept loop:
// the connect to the server from the client's address.
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
	l.link(c)
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
	l.r.adopt(&tcpPair{client: client, server: server, addr: c.client}, pending, toServer)
}

func (l *tcpLoop) link(c *loopConn) {
	c.next = l.head
	if l.head != nil {
		l.head.prev = c
	}
	l.head = c
}

// unlink forgets c: its tokens and its place in the list.
func (l *tcpLoop) unlink(c *loopConn) {
	delete(l.conns, c.ctok)
	delete(l.conns, c.stok)
	if c.prev != nil {
		c.prev.next = c.next
	} else if l.head == c {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next = nil, nil
}

// closeAll closes every connection of the loop (the relay is closing).
func (l *tcpLoop) closeAll() {
	for l.head != nil {
		l.finish(l.head, false)
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

// detach takes c's socket out of Go's poller: a duplicate descriptor,
// which the caller owns, and c closed.
func detach(c *listener.Conn) (int, error) {
	tc, ok := c.NetConn().(*net.TCPConn)
	if !ok {
		return -1, fmt.Errorf("unwrap: a %T, not a TCP connection", c.NetConn())
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("unwrap: %w", err)
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, fmt.Errorf("unwrap: %w", err)
	}
	if derr != nil {
		return -1, fmt.Errorf("unwrap: %w", os.NewSyscallError("fcntl", derr))
	}
	c.Close() // Go's descriptor: the socket lives on in fd
	return fd, nil
}
