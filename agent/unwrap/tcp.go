//go:build linux

package unwrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// tcpRelay is the TCP engine: it takes the edge's connections from a
// listener.Listener, which reads and checks their headers, and relays each
// to the server over a connection made from its client's address: in its
// epoll loops (tcploop.go) when the listener honoured a header, else in
// goroutines, to which the loops also hand their long transfers.
type tcpRelay struct {
	entry   Entry
	log     *slog.Logger
	inner   *net.TCPListener // the listening socket, accepted from by the loops
	rc      syscall.RawConn  // inner's
	queue   *connQueue       // what the loops leave to ln
	ln      *listener.Listener
	allowed [wire.NumProtos]bool // entry.Accept
	dial    dialFunc             // the goroutine path's connect
	socket  socketFunc           // the loops' sockets
	mark    uint32
	loops   []*tcpLoop
	// ctx ends with close; it cancels dials in progress.
	ctx       context.Context
	cancel    context.CancelFunc
	accepting sync.WaitGroup // the accept loop
	looping   sync.WaitGroup // the loops' Run
	stopping  sync.Once      // of the loops, by the first close
	wg        sync.WaitGroup // one per connection in goroutines

	mu       sync.Mutex
	closed   bool
	live     map[*tcpPair]struct{} // relayed in goroutines, not yet finished
	loopLive int                   // relayed in the loops

	noTarget, conns, refused, dialErrors atomic.Uint64
	toServer, toClient                   atomic.Uint64
	// The loops' share of the listener's counters (Stats.Listener).
	accepted [wire.NumProtos]atomic.Uint64
	shed     atomic.Uint64
}

// dialFunc connects to the server, from the client's address.
type dialFunc func(ctx context.Context, client, server netip.AddrPort) (net.Conn, error)

// tcpPair is one connection relayed in goroutines: the edge's, and the
// server's once connected.
type tcpPair struct {
	client tcpSide
	server *net.TCPConn   // set under tcpRelay.mu
	addr   netip.AddrPort // the client's, for logs
}

// tcpSide is the edge's side of a connection: a *listener.Conn, or a
// *net.TCPConn a loop handed over.
type tcpSide interface {
	net.Conn
	io.WriterTo
	io.ReaderFrom
	CloseWrite() error
}

// Backoff after a failing Accept (out of file descriptors, say).
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// meterChunk is how many bytes a copy moves between updates of the byte
// counters: they grow during a long transfer, not only at its end, while
// each chunk still goes through splice(2).
const meterChunk = 256 << 10

// startTCP listens on e.Listen and relays until close.
func startTCP(e Entry, opt Options) (relayImpl, error) {
	dial := func(ctx context.Context, client, server netip.AddrPort) (net.Conn, error) {
		return dialTransparent(ctx, "tcp", client, server, opt.Mark, DefaultDialTimeout)
	}
	r, err := listenTCP(e, opt, dial, rawStreamSocket)
	if err != nil {
		return nil, err // not a nil *tcpRelay in a non-nil relayImpl
	}
	return r, nil
}

// listenTCP is startTCP with the dialer and the loops' socket opener as
// parameters: a test whose relay runs in a network namespace other than
// its goroutines' makes its sockets there.
func listenTCP(e Entry, opt Options, dial dialFunc, socket socketFunc) (*tcpRelay, error) {
	e = e.withDefaults()
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	inner, err := listenSocket(e)
	if err != nil {
		return nil, err
	}
	rc, err := inner.SyscallConn()
	if err != nil {
		inner.Close()
		return nil, err
	}
	queue := newConnQueue(inner.Addr(), handoffDepth)
	ln, err := listener.New(queue, listener.Config{
		Protocols:     e.Accept,
		Trusted:       e.Trusted,
		Untrusted:     e.Untrusted,
		HeaderTimeout: e.HeaderTimeout,
		Logger:        log,
	})
	if err != nil {
		inner.Close()
		return nil, err // says "listener:"; Start names the entry
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &tcpRelay{entry: e, log: log, inner: inner, rc: rc, queue: queue, ln: ln,
		dial: dial, socket: socket, mark: opt.Mark, ctx: ctx, cancel: cancel,
		live: make(map[*tcpPair]struct{})}
	for _, p := range e.Accept {
		r.allowed[p] = true
	}
	r.accepting.Add(1)
	go r.acceptLoop()
	if err := r.startLoops(); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// handoffDepth bounds the connections the loops have left to the listener
// and that it has not taken yet; beyond it they are shed (counted as
// listener.ReasonShed). The listener takes them as fast as they come, and
// bounds those whose header it waits for itself (MaxPending).
const handoffDepth = 1024

// startLoops opens and runs the relay's epoll loops, one per CPU up to
// maxLoops, each accepting from the listening socket.
func (r *tcpRelay) startLoops() error {
	for range relayLoops() {
		l, err := newTCPLoop(r)
		if err == nil {
			if err = l.arm(); err != nil {
				l.Close()
			}
		}
		if err != nil {
			for _, l := range r.loops {
				l.Close()
			}
			r.loops = nil
			return err
		}
		r.loops = append(r.loops, l)
	}
	for _, l := range r.loops {
		r.looping.Add(1)
		go func() { defer r.looping.Done(); l.Run() }()
	}
	return nil
}

// stopLoops closes the loops' connections and ends the loops, once; no
// connection may be handed to them any more.
func (r *tcpRelay) stopLoops() {
	r.stopping.Do(func() {
		for _, l := range r.loops {
			l.Call(func() { l.closeAll(); l.Stop() })
		}
		r.looping.Wait()
		for _, l := range r.loops {
			l.Close()
		}
	})
}

// listenSocket opens the socket the edge connects to.
//
// Connections from the edge keep the keep-alive probes Go gives them by
// default (a dead edge would otherwise hold its connections and theirs to
// the server for ever), and TCP_NODELAY, as Go sets it; both are set once,
// on the listening socket, whose accepted sockets inherit them, and not
// on every connection. TCP_DEFER_ACCEPT has the kernel hand a connection
// over once its first bytes (the header) arrived, so a loop reads the
// header at once, as package listener does for its own sockets.
func listenSocket(e Entry) (*net.TCPListener, error) {
	lc := net.ListenConfig{KeepAlive: -1, Control: setListenOptions}
	ln, err := lc.Listen(context.Background(), "tcp", e.Listen.String())
	if err != nil {
		return nil, err // names the address; Start names the entry
	}
	return ln.(*net.TCPListener), nil
}

// acceptLoop hands every connection the listener admits (those the loops
// left to it) to admit, until the listener is closed.
func (r *tcpRelay) acceptLoop() {
	defer r.accepting.Done()
	var backoff time.Duration
	for {
		nc, err := r.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || r.ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			r.log.Warn("unwrap: accept failed", "listen", r.entry.Listen, "err", err, "retry_in", backoff)
			if !r.sleep(backoff) {
				return
			}
			continue
		}
		backoff = 0
		c, ok := nc.(*listener.Conn)
		if !ok { // listener.Listener returns nothing else
			nc.Close()
			continue
		}
		r.admit(c)
	}
}

// sleep waits for d, or until close; it reports whether the relay still
// runs.
func (r *tcpRelay) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.ctx.Done():
		return false
	}
}

// admit refuses c when its client has no target or MaxConns are live, and
// starts serving it in goroutines otherwise. It runs in the accept loop,
// which close waits for before it waits for r.wg.
func (r *tcpRelay) admit(c *listener.Conn) {
	to, ok := r.entry.target(c.Client().Addr())
	if !ok {
		r.noTarget.Add(1)
		r.log.Warn("unwrap: no target for the client's address family", "listen", r.entry.Listen, "client", c.Client(), "proxy", c.Proxy())
		resetTCP(c)
		return
	}
	p := &tcpPair{client: c, addr: c.Client()}
	if !r.track(p) {
		resetTCP(c)
		return
	}
	r.wg.Add(1)
	go r.serve(p, to)
}

// track records p as live in goroutines; false when the relay is closed
// or MaxConns are live (counted).
func (r *tcpRelay) track(p *tcpPair) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.room(p.addr) {
		return false
	}
	r.live[p] = struct{}{}
	return true
}

// reserve counts a connection live in a loop; false when the relay is
// closed or MaxConns are live (counted).
func (r *tcpRelay) reserve(client netip.AddrPort) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.room(client) {
		return false
	}
	r.loopLive++
	return true
}

// room reports whether another connection may go live, counting one
// refused for MaxConns; r.mu is held.
func (r *tcpRelay) room(client netip.AddrPort) bool {
	if r.closed {
		return false
	}
	if len(r.live)+r.loopLive >= r.entry.MaxConns {
		r.refused.Add(1)
		r.log.Debug("unwrap: connection refused, limit reached", "listen", r.entry.Listen, "client", client, "max_conns", r.entry.MaxConns)
		return false
	}
	return true
}

// loopEnded forgets a connection a loop has closed or handed over.
func (r *tcpRelay) loopEnded() {
	r.mu.Lock()
	r.loopLive--
	r.mu.Unlock()
}

// adopt relays p, handed over by a loop, in goroutines (pipe), each way
// from where the loop left it (up: client to server). It runs in a loop,
// which close stops before it waits for r.wg.
func (r *tcpRelay) adopt(p *tcpPair, up, down way) {
	r.mu.Lock()
	r.loopLive--
	r.live[p] = struct{}{}
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.untrack(p)
		r.pipe(p.client, p.server, up, down)
	}()
}

// way is where a loop left one direction of a connection it hands over:
// bytes it read and did not write yet, or the direction's end, already
// passed on as a half-close.
type way struct {
	pending []byte
	ended   bool
}

// dialFailed counts a connect to the server that failed, unless the relay
// is closing.
func (r *tcpRelay) dialFailed(client, proxy netip.AddrPort, err error) {
	if r.ctx.Err() != nil {
		return
	}
	r.dialErrors.Add(1)
	r.log.Warn("unwrap: cannot connect to the server", "listen", r.entry.Listen, "client", client, "proxy", proxy, "err", err)
}

// attach sets p's server connection; false when the relay was closed
// meanwhile.
func (r *tcpRelay) attach(p *tcpPair, server *net.TCPConn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	p.server = server
	return true
}

// untrack closes both of p's connections and forgets p.
func (r *tcpRelay) untrack(p *tcpPair) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p.close()
	delete(r.live, p)
}

// serve connects p's client to the server at to and relays until both
// ways have ended, or close.
func (r *tcpRelay) serve(p *tcpPair, to netip.AddrPort) {
	defer r.wg.Done()
	defer r.untrack(p)
	c := p.client.(*listener.Conn) // admit's
	if c.Via() == wire.None {
		if err := r.sniff(c); err != nil {
			r.log.Debug("unwrap: connection ended before it was relayed", "listen", r.entry.Listen, "client", c.Client(), "err", err)
			return
		}
	}
	nc, err := r.dial(r.ctx, c.Client(), to)
	if err == nil {
		if _, ok := nc.(*net.TCPConn); !ok {
			nc.Close()
			err = fmt.Errorf("unwrap: connect %s: got a %T, not a TCP connection", to, nc)
		}
	}
	if err != nil {
		r.dialFailed(c.Client(), c.Proxy(), err)
		resetTCP(c)
		return
	}
	server := nc.(*net.TCPConn)
	if !r.attach(p, server) {
		server.Close()
		return
	}
	r.conns.Add(1)
	r.pipe(c, server, way{}, way{})
}

// sniff makes the listener look for a header on a connection served with
// its peer as the client (an untrusted peer, or a LOCAL header) before the
// server is connected: a header from an untrusted peer is dropped or
// stripped on the connection's first read, as the entry's Untrusted says,
// and a dropped one must not reach the server even as a connection. The
// read is empty and waits for the first bytes, up to HeaderTimeout.
func (r *tcpRelay) sniff(c *listener.Conn) error {
	if err := c.SetReadDeadline(time.Now().Add(r.entry.HeaderTimeout)); err != nil {
		return fmt.Errorf("set deadline: %w", err)
	}
	if _, err := c.Read(nil); err != nil {
		return fmt.Errorf("first read: %w", err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("clear deadline: %w", err)
	}
	return nil
}

// pipe copies both ways, between the two TCP sockets with splice(2) (the
// bytes that came with the header first), until both ways have ended. A
// way that ends cleanly (EOF) is passed on as a half-close; one that fails
// resets both connections, which ends the other way too. up and down say
// where a loop left each way (nothing for a connection that did not come
// from one): its bytes not yet written go first, in that way's own
// goroutine, so that a peer that reads only once it has written cannot
// hold the other way up; a way that already ended is not run again.
func (r *tcpRelay) pipe(client tcpSide, server *net.TCPConn, up, down way) {
	var ended atomic.Int32
	for _, w := range [...]way{up, down} {
		if w.ended {
			ended.Add(1)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.runWay(client, server, server, up, &r.toServer, func() error {
			_, err := client.WriteTo(byteMeter{dst: server, n: &r.toServer})
			return err
		}, &ended)
	}()
	r.runWay(client, server, client, down, &r.toClient, func() error {
		_, err := byteMeter{dst: client, n: &r.toClient}.ReadFrom(server)
		return err
	}, &ended)
	<-done
}

// runWay copies one way (into dst) unless it has ended already: w's
// pending bytes, then the rest with copy; then it passes the end on.
func (r *tcpRelay) runWay(client tcpSide, server *net.TCPConn, dst tcpSide, w way, count *atomic.Uint64, copy func() error, ended *atomic.Int32) {
	if w.ended {
		return
	}
	var err error
	if len(w.pending) > 0 {
		var n int
		n, err = dst.Write(w.pending)
		count.Add(uint64(n))
	}
	if err == nil {
		err = copy()
	}
	endTCPWay(client, server, dst, err, ended)
}

// endTCPWay passes the end of the way into dst on: a half-close after a
// clean end, else a reset of both connections. Only the first way to end
// half-closes: when the second ends, both connections are closed at once
// (untrack), and close(2) sends the FIN itself; nothing is left unread
// that would turn it into a reset, as each way read its source to EOF.
func endTCPWay(client tcpSide, server *net.TCPConn, dst interface{ CloseWrite() error }, err error, ended *atomic.Int32) {
	last := ended.Add(1) == 2
	if err == nil && !last {
		err = dst.CloseWrite()
	}
	if err != nil {
		resetTCP(client)
		resetTCP(server)
	}
}

// resetTCP closes c with a reset (SO_LINGER 0): its peer sees the connection
// fail, not end.
func resetTCP(c net.Conn) {
	if lc, ok := c.(*listener.Conn); ok {
		c = lc.NetConn()
	}
	if tc, ok := c.(interface{ SetLinger(int) error }); ok { // *net.TCPConn, *prefixConn
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// close closes both connections of p.
func (p *tcpPair) close() {
	p.client.Close()
	if p.server != nil {
		p.server.Close()
	}
}

// byteMeter writes to dst and counts what it wrote in n. Its ReadFrom keeps
// dst's own (splice between TCP sockets), in chunks of meterChunk so that
// n grows while a long transfer runs.
type byteMeter struct {
	dst interface {
		io.Writer
		io.ReaderFrom
	}
	n *atomic.Uint64
}

// Write writes b to dst.
func (m byteMeter) Write(b []byte) (int, error) {
	n, err := m.dst.Write(b)
	m.n.Add(uint64(n))
	return n, err
}

// ReadFrom copies from r to dst until EOF (a nil error) or an error.
func (m byteMeter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		lr := &io.LimitedReader{R: r, N: meterChunk}
		n, err := m.dst.ReadFrom(lr)
		total += n
		m.n.Add(uint64(n))
		if err != nil || lr.N > 0 { // short of the chunk: EOF
			return total, err
		}
	}
}

// stats returns the relay's counters.
func (r *tcpRelay) stats() Stats {
	r.mu.Lock()
	live := len(r.live) + r.loopLive
	r.mu.Unlock()
	ls := r.ln.Stats()
	for i := range r.accepted {
		ls.Accepted[i] += r.accepted[i].Load()
	}
	ls.Rejected[listener.ReasonShed] += r.shed.Load()
	return Stats{
		Listener:      ls,
		NoTarget:      r.noTarget.Load(),
		Conns:         r.conns.Load(),
		ConnsLive:     uint64(live),
		ConnsRefused:  r.refused.Load(),
		DialErrors:    r.dialErrors.Load(),
		BytesToServer: r.toServer.Load(),
		BytesToClient: r.toClient.Load(),
	}
}

// close stops listening, closes every live connection and waits for the
// relay's goroutines. The order keeps every hand-off safe: the loops end
// first (they hand connections to the listener and to goroutines), then
// the listening socket is closed, then the listener and its accept loop,
// and only then does close wait for the goroutines.
func (r *tcpRelay) close() error {
	r.cancel()
	r.stopLoops()
	ierr := r.inner.Close()
	err := r.ln.Close()
	r.accepting.Wait()
	if errors.Is(err, net.ErrClosed) { // a second close
		err = nil
	}
	if err == nil && ierr != nil && !errors.Is(ierr, net.ErrClosed) {
		err = ierr
	}
	r.mu.Lock()
	r.closed = true
	for p := range r.live {
		p.close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	if err != nil {
		return fmt.Errorf("close listener: %w", err)
	}
	return nil
}
