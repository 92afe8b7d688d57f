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
	"time"

	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// tcpRelay is the TCP engine: it takes the edge's connections from a
// listener.Listener, which reads and checks their headers, and relays each
// to the server over a connection made from its client's address.
type tcpRelay struct {
	entry Entry
	log   *slog.Logger
	ln    *listener.Listener
	dial  dialFunc
	// ctx ends with close; it cancels dials in progress.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and one per connection

	mu     sync.Mutex
	closed bool
	live   map[*tcpPair]struct{} // accepted, not yet finished

	noTarget, conns, refused, dialErrors atomic.Uint64
	toServer, toClient                   atomic.Uint64
}

// dialFunc connects to the server, from the client's address.
type dialFunc func(ctx context.Context, client, server netip.AddrPort) (net.Conn, error)

// tcpPair is one relayed connection: the edge's, and the server's once
// connected.
type tcpPair struct {
	client *listener.Conn
	server *net.TCPConn // set under tcpRelay.mu
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
	r, err := listenTCP(e, opt, dial)
	if err != nil {
		return nil, err // not a nil *tcpRelay in a non-nil relayImpl
	}
	return r, nil
}

// listenTCP is startTCP with the dialer as a parameter: a test whose relay
// runs in a network namespace other than its goroutines' dials there.
func listenTCP(e Entry, opt Options, dial dialFunc) (*tcpRelay, error) {
	e = e.withDefaults()
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := listenEdge(e, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &tcpRelay{
		entry:  e,
		log:    log,
		ln:     ln,
		dial:   dial,
		ctx:    ctx,
		cancel: cancel,
		live:   make(map[*tcpPair]struct{}),
	}
	r.wg.Add(1)
	go r.acceptLoop()
	return r, nil
}

// listenEdge opens the socket the edge connects to, wrapped in the
// listener's header policy.
//
// Connections from the edge keep the keep-alive probes Go gives them by
// default (a dead edge would otherwise hold its connections and theirs to
// the server for ever), but the options are set once, on the listening
// socket, whose accepted sockets inherit them, and not by four setsockopt
// calls on every connection (KeepAlive -1 turns those off).
func listenEdge(e Entry, log *slog.Logger) (*listener.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1, Control: setKeepAlive}
	inner, err := lc.Listen(context.Background(), "tcp", e.Listen.String())
	if err != nil {
		return nil, err // names the address; Start names the entry
	}
	ln, err := listener.New(inner, listener.Config{
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
	return ln, nil
}

// acceptLoop hands every connection the listener admits to admit, until
// the listener is closed.
func (r *tcpRelay) acceptLoop() {
	defer r.wg.Done()
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
// starts serving it otherwise. It runs in the accept loop, whose count in
// r.wg keeps Add legal while close waits.
func (r *tcpRelay) admit(c *listener.Conn) {
	to, ok := r.entry.target(c.Client().Addr())
	if !ok {
		r.noTarget.Add(1)
		r.log.Warn("unwrap: no target for the client's address family", "listen", r.entry.Listen, "client", c.Client(), "proxy", c.Proxy())
		resetTCP(c)
		return
	}
	p := &tcpPair{client: c}
	if !r.track(p) {
		resetTCP(c)
		return
	}
	r.wg.Add(1)
	go r.serve(p, to)
}

// track records p as live; false when the relay is closed or MaxConns are
// live (counted).
func (r *tcpRelay) track(p *tcpPair) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	if len(r.live) >= r.entry.MaxConns {
		r.refused.Add(1)
		r.log.Debug("unwrap: connection refused, limit reached", "listen", r.entry.Listen, "client", p.client.Client(), "max_conns", r.entry.MaxConns)
		return false
	}
	r.live[p] = struct{}{}
	return true
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
	c := p.client
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
		if r.ctx.Err() == nil { // not the relay closing
			r.dialErrors.Add(1)
			r.log.Warn("unwrap: cannot connect to the server", "listen", r.entry.Listen, "client", c.Client(), "proxy", c.Proxy(), "err", err)
		}
		resetTCP(c)
		return
	}
	server := nc.(*net.TCPConn)
	if !r.attach(p, server) {
		server.Close()
		return
	}
	r.conns.Add(1)
	r.pipe(p.client, server)
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
// resets both connections, which ends the other way too.
func (r *tcpRelay) pipe(client *listener.Conn, server *net.TCPConn) {
	var ended atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := client.WriteTo(byteMeter{dst: server, n: &r.toServer})
		endTCPWay(client, server, server, err, &ended)
	}()
	_, err := byteMeter{dst: client, n: &r.toClient}.ReadFrom(server)
	endTCPWay(client, server, client, err, &ended)
	<-done
}

// endTCPWay passes the end of the way into dst on: a half-close after a
// clean end, else a reset of both connections. Only the first way to end
// half-closes: when the second ends, both connections are closed at once
// (untrack), and close(2) sends the FIN itself; nothing is left unread
// that would turn it into a reset, as each way read its source to EOF.
func endTCPWay(client *listener.Conn, server *net.TCPConn, dst interface{ CloseWrite() error }, err error, ended *atomic.Int32) {
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
	if tc, ok := c.(*net.TCPConn); ok {
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
	live := len(r.live)
	r.mu.Unlock()
	return Stats{
		Listener:      r.ln.Stats(),
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
// relay's goroutines.
func (r *tcpRelay) close() error {
	r.cancel()
	err := r.ln.Close()
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
