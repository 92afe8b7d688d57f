//go:build linux

package unwrap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// maxUDPPayload is the largest UDP payload; every read buffer has room
// for it.
const maxUDPPayload = 65535

// minJanitorPeriod bounds how often the janitor looks for idle flows.
const minJanitorPeriod = 10 * time.Millisecond

// udpRelay is the UDP engine: read loops read the listening sockets and
// send each payload to the server through its client's flow, one
// goroutine per flow carries the server's replies back, and a janitor
// closes idle flows.
//
// There is a listening socket and a read loop per CPU (relayLoops), all
// bound to the entry's address with SO_REUSEPORT: the kernel spreads the
// edge's datagrams over them by a hash of their addresses and ports, so
// the datagrams of one edge socket always reach the same loop, in order.
// The flows are one table for all loops: a client is one flow whichever
// socket its datagrams came in by.
type udpRelay struct {
	entry Entry
	log   *slog.Logger
	pcs   []*listener.PacketConn // the listening sockets, one per loop
	// dial connects a flow's socket from the client to the server.
	dial  func(ctx context.Context, client, server netip.AddrPort) (net.Conn, error)
	flows *flowTable
	bufs  sync.Pool // *[]byte of maxUDPPayload bytes, for replies
	ctr   udpCounters

	ctx    context.Context // cancelled by close: stops dials
	cancel context.CancelFunc
	stop   chan struct{}  // closed by close: stops the janitor
	loops  sync.WaitGroup // the read loops
	wg     sync.WaitGroup // the janitor and the flows' reply readers

	closeOnce sync.Once
	closeErr  error
}

// udpCounters are the UDP engine's own counters (Stats without Listener).
type udpCounters struct {
	noTarget, dialErrors                       atomic.Uint64
	opened, expired, evicted                   atomic.Uint64
	toServer, toClient, datagrams, repliesSent atomic.Uint64
}

// startUDP listens on e.Listen and relays datagrams until close.
func startUDP(e Entry, opt Options) (relayImpl, error) {
	dial := func(ctx context.Context, client, server netip.AddrPort) (net.Conn, error) {
		return dialTransparent(ctx, "udp", client, server, opt.Mark, DefaultDialTimeout)
	}
	r, err := newUDPRelay(e, opt, dial)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// newUDPRelay is startUDP with the flows' dialer as a parameter: a test
// whose relay listens in a network namespace other than its goroutines'
// makes the flows' sockets there too.
func newUDPRelay(e Entry, opt Options, dial func(ctx context.Context, client, server netip.AddrPort) (net.Conn, error)) (*udpRelay, error) {
	return newUDPRelayLoops(e, opt, dial, relayLoops())
}

// relayLoops is how many sockets and read loops a UDP relay has, and how
// many epoll loops a TCP relay has: one per CPU the Go runtime runs on, up
// to maxLoops.
func relayLoops() int { return min(runtime.GOMAXPROCS(0), maxLoops) }

// maxLoops bounds a relay's loops (and a UDP relay's listening sockets)
// on a large machine: more loops than the server and the flows'
// goroutines can keep busy only cost descriptors and buffers.
const maxLoops = 8

// newUDPRelayLoops is newUDPRelay with loops listening sockets.
func newUDPRelayLoops(e Entry, opt Options, dial func(ctx context.Context, client, server netip.AddrPort) (net.Conn, error), loops int) (*udpRelay, error) {
	logger := opt.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	pcs, err := listenUDP(e, logger, loops)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &udpRelay{
		entry: e, log: logger, pcs: pcs, dial: dial,
		flows: newFlowTable(e.MaxFlows),
		ctx:   ctx, cancel: cancel,
		stop: make(chan struct{}),
	}
	r.bufs.New = func() any { b := make([]byte, maxUDPPayload); return &b }
	r.wg.Add(1)
	go r.janitor()
	r.loops.Add(len(pcs))
	for _, pc := range pcs {
		go r.readLoop(pc)
	}
	return r, nil
}

// listenUDP opens n listening sockets on the entry's address, each wrapped
// in the listener's header policy. More than one share the address with
// SO_REUSEPORT (the first one's port, should the entry's be 0).
//
// The listener keeps, per socket, the flows of edge ports whose framing
// their first datagram fixed (FramingFirstDatagram, or SPP and PROXY v2 on
// one socket). That stays right with several sockets: the kernel sends
// every datagram of an edge address and port to the same socket, as long
// as the group of sockets does not change, and the relay opens them all
// before reading and closes them all together.
//
// SO_REUSEPORT lets another socket of the same user bind the address too
// and take a share of the datagrams, where a second bind would otherwise
// fail; the agent never binds one address twice (its configuration refuses
// a listen address used by two entries).
func listenUDP(e Entry, logger *slog.Logger, n int) ([]*listener.PacketConn, error) {
	laddr := netip.AddrPortFrom(e.Listen.Addr().Unmap(), e.Listen.Port())
	cfg := listener.Config{
		Protocols: e.Accept,
		Framing:   e.Framing,
		Trusted:   e.Trusted,
		Untrusted: e.Untrusted,
		MaxFlows:  e.MaxFlows,
		FlowIdle:  e.Idle,
		Logger:    logger,
	}
	var lc net.ListenConfig
	if n > 1 {
		lc.Control = setReusePort
	}
	pcs := make([]*listener.PacketConn, 0, n)
	for range max(n, 1) {
		pc, err := listenUDPOne(&lc, laddr, cfg)
		if err != nil {
			for _, pc := range pcs {
				pc.Close()
			}
			return nil, err
		}
		pcs = append(pcs, pc)
		laddr = netip.AddrPortFrom(laddr.Addr(), wire.SocketAddrPort(pc.LocalAddr()).Port())
	}
	return pcs, nil
}

// listenUDPOne opens one listening socket at laddr and wraps it.
func listenUDPOne(lc *net.ListenConfig, laddr netip.AddrPort, cfg listener.Config) (*listener.PacketConn, error) {
	inner, err := lc.ListenPacket(context.Background(), "udp", laddr.String())
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	pc, err := listener.NewPacketConn(inner, cfg)
	if err != nil {
		inner.Close()
		return nil, fmt.Errorf("listener: %w", err)
	}
	return pc, nil
}

// readLoop reads the edge's datagrams from pc until it is closed.
func (r *udpRelay) readLoop(pc *listener.PacketConn) {
	defer r.loops.Done()
	buf := make([]byte, maxUDPPayload)
	for {
		n, src, err := pc.ReadFromSource(buf)
		if err != nil {
			select {
			case <-r.stop:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			r.log.Warn("unwrap: udp: read", "listen", r.entry.Listen, "err", err)
			continue
		}
		r.forward(buf[:n], route{src: src, pc: pc})
	}
}

// forward sends payload to the server through the flow of its client,
// opening it first when there is none; rt is where payload came from.
func (r *udpRelay) forward(payload []byte, rt route) {
	client := netip.AddrPortFrom(rt.src.Client.Addr().Unmap(), rt.src.Client.Port())
	now := time.Now()
	f := r.flows.lookup(client, rt, now)
	if f == nil {
		if f = r.open(client, rt, now); f == nil {
			return
		}
	}
	if _, err := f.conn.Write(payload); err != nil {
		// The server's port was unreachable (an earlier ICMP error), or
		// the flow was closed meanwhile: the datagram is lost, as on any
		// UDP path.
		r.log.Debug("unwrap: udp: send to server", "client", client, "err", err)
		return
	}
	r.ctr.datagrams.Add(1)
	r.ctr.toServer.Add(uint64(len(payload)))
}

// open makes the flow of client: a transparent socket from the client's
// address to the server of its family, and the goroutine that reads the
// server's replies. It returns nil when the client cannot be served. When
// another read loop opened the client's flow meanwhile, that flow is
// returned and the socket made here is closed.
func (r *udpRelay) open(client netip.AddrPort, rt route, now time.Time) *udpFlow {
	to, ok := r.entry.target(client.Addr())
	if !ok {
		r.ctr.noTarget.Add(1)
		r.log.Debug("unwrap: udp: no target for the client's address family", "client", client)
		return nil
	}
	c, err := r.dial(r.ctx, client, to)
	if err != nil {
		r.ctr.dialErrors.Add(1)
		r.log.Warn("unwrap: udp: open flow", "client", client, "err", err)
		return nil
	}
	uc, ok := c.(*net.UDPConn)
	if !ok {
		c.Close()
		r.ctr.dialErrors.Add(1)
		r.log.Warn("unwrap: udp: open flow: not a UDP socket", "client", client)
		return nil
	}
	f := &udpFlow{client: client, conn: uc}
	cur, old := r.flows.insert(f, rt, now)
	if cur != f {
		uc.Close()
		return cur
	}
	if old != nil {
		old.conn.Close()
		r.ctr.evicted.Add(1)
	}
	r.ctr.opened.Add(1)
	r.wg.Add(1)
	go r.replies(f)
	return f
}

// replies carries the server's datagrams on f back to the edge until f's
// socket is closed. It holds a buffer only while a datagram is in hand, so
// idle flows cost no buffer memory.
func (r *udpRelay) replies(f *udpFlow) {
	defer r.wg.Done()
	rc, err := f.conn.SyscallConn()
	if err != nil {
		r.endFlow(f, err)
		return
	}
	var (
		bp   *[]byte
		n    int
		rerr error
	)
	read := func(fd uintptr) bool {
		bp = r.bufs.Get().(*[]byte)
		for {
			n, rerr = unix.Read(int(fd), *bp)
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == unix.EAGAIN {
			r.bufs.Put(bp)
			return false // wait until readable
		}
		return true
	}
	for {
		if err := rc.Read(read); err != nil {
			r.endFlow(f, nil) // closed: evicted, expired or relay closed
			return
		}
		err := r.reply(f, (*bp)[:max(n, 0)], rerr)
		r.bufs.Put(bp)
		if err != nil {
			r.endFlow(f, err)
			return
		}
	}
}

// reply sends one datagram read from the server (or the read's error
// rerr) to the edge. An error ends the flow.
func (r *udpRelay) reply(f *udpFlow, payload []byte, rerr error) error {
	switch {
	case rerr == unix.ECONNREFUSED:
		// An ICMP port unreachable from the server: it may come back.
		r.log.Debug("unwrap: udp: server unreachable", "client", f.client, "to", f.conn.RemoteAddr())
		return nil
	case rerr != nil:
		return fmt.Errorf("read from server: %w", rerr)
	}
	rt, ok := r.flows.reply(f, time.Now())
	if !ok {
		return nil // the flow is being closed
	}
	if _, err := rt.pc.WriteToSource(payload, rt.src); err != nil {
		r.log.Debug("unwrap: udp: reply to edge", "client", f.client, "edge", rt.src.Proxy, "err", err)
		return nil
	}
	r.ctr.repliesSent.Add(1)
	r.ctr.toClient.Add(uint64(len(payload)))
	return nil
}

// endFlow takes f out of the table and closes its socket, logging err.
func (r *udpRelay) endFlow(f *udpFlow, err error) {
	if err != nil {
		r.log.Warn("unwrap: udp: flow ended", "client", f.client, "err", err)
	}
	if r.flows.remove(f) {
		f.conn.Close()
	}
}

// janitor closes the flows idle for the entry's Idle until close.
func (r *udpRelay) janitor() {
	defer r.wg.Done()
	tick := time.NewTicker(max(r.entry.Idle/4, minJanitorPeriod))
	defer tick.Stop()
	var idle []*udpFlow
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		idle = r.flows.expire(time.Now(), r.entry.Idle, idle[:0])
		for _, f := range idle {
			f.conn.Close()
			r.ctr.expired.Add(1)
		}
		clear(idle)
	}
}

// stats returns the relay's counters.
func (r *udpRelay) stats() Stats {
	c := &r.ctr
	var ls listener.Stats
	for _, pc := range r.pcs {
		ls = addListenerStats(ls, pc.Stats())
	}
	return Stats{
		Listener:      ls,
		NoTarget:      c.noTarget.Load(),
		DialErrors:    c.dialErrors.Load(),
		FlowsOpened:   c.opened.Load(),
		FlowsLive:     uint64(r.flows.len()),
		FlowsExpired:  c.expired.Load(),
		FlowsEvicted:  c.evicted.Load(),
		BytesToServer: c.toServer.Load(),
		BytesToClient: c.toClient.Load(),
		Datagrams:     c.datagrams.Load(),
		Replies:       c.repliesSent.Load(),
	}
}

// addListenerStats returns the sum of the counters of two listening
// sockets.
func addListenerStats(a, b listener.Stats) listener.Stats {
	for i := range a.Accepted {
		a.Accepted[i] += b.Accepted[i]
	}
	for i := range a.Rejected {
		a.Rejected[i] += b.Rejected[i]
	}
	a.Untrusted += b.Untrusted
	a.IgnoredHeaders += b.IgnoredHeaders
	a.HeadersInFlow += b.HeadersInFlow
	a.Pending += b.Pending
	a.Parked += b.Parked
	a.FlowsLive += b.FlowsLive
	a.FlowsEvicted += b.FlowsEvicted
	a.FlowsExpired += b.FlowsExpired
	return a
}

// close closes the listening sockets and every flow and returns once every
// goroutine of the relay has.
func (r *udpRelay) close() error {
	r.closeOnce.Do(func() {
		r.cancel()
		close(r.stop)
		var errs []error
		for _, pc := range r.pcs {
			if err := pc.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			r.closeErr = fmt.Errorf("close listening socket: %w", err)
		}
		r.loops.Wait() // no flow is opened after this
		for _, f := range r.flows.drain() {
			f.conn.Close()
		}
		r.wg.Wait()
	})
	return r.closeErr
}
