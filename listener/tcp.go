package listener

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/realip/realip/wire"
)

// Listener is a net.Listener whose connections carry the real client
// address. Create it with New or Listen; it is safe for concurrent use.
//
// Accepting runs in one of two modes, chosen by New. When the inner
// listener is a *net.TCPListener or *net.UnixListener, Accept
// takes connections from the kernel in the caller's goroutine, as a plain
// listener does (accept_direct.go); otherwise a goroutine of the listener
// accepts ahead of Accept and queues them (accept_loop.go). Either way a
// header that is already complete is read where the connection was
// accepted, and only a header still on its way is waited for, in a
// goroutine of its own.
type Listener struct {
	inner   net.Listener
	pol     *policy
	toa     toaLookup // set for a TOA listener
	stats   counters
	readers sync.Pool // *headerReader

	ready chan *Conn    // validated connections, for Accept
	done  chan struct{} // closed by Close
	once  sync.Once
	wg    sync.WaitGroup

	// Direct mode: inner's deadline, and the number of callers of Accept
	// inside inner.Accept, whom a queued connection wakes.
	deadline deadliner
	waiting  atomic.Int32

	// Loop mode.
	fatal chan struct{} // closed when the inner listener failed for good
	err   error         // the failure, set before fatal is closed
	errs  chan error    // transient errors of the inner Accept, for Accept

	// Connections whose header is being waited for (pending.go).
	mu      sync.Mutex
	tick    uint64 // advanced by runClock
	pending pendingSet
}

// Listen announces on the local TCP address and wraps the listener with New.
func Listen(network, address string, cfg Config) (*Listener, error) {
	inner, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	l, err := New(inner, cfg)
	if err != nil {
		inner.Close()
		return nil, err
	}
	return l, nil
}

// New wraps inner. Protocols may hold wire.PPv1 and wire.PPv2 (both when
// empty), or wire.TOA alone, which needs a TOA receiver on the machine:
// realip's toa.ko kernel module, or else its eBPF receiver pinned in
// Config.TOAPinDir (see TOA in the package documentation).
//
// Unless Config.NoDeferAccept is set, a listener of PROXY headers sets
// TCP_DEFER_ACCEPT on inner (Linux, TCP sockets): the kernel hands over a
// connection once its first bytes arrived, so its header is read at once.
func New(inner net.Listener, cfg Config) (*Listener, error) {
	pol, err := newPolicy(cfg, wire.PPv1, wire.PPv2, wire.TOA)
	if err != nil {
		return nil, err
	}
	if len(cfg.Protocols) == 0 {
		pol.allowed[wire.TOA] = false // TOA only when asked for
	}
	toa, err := openTOA(cfg.Protocols, cfg.TOAPinDir)
	if err != nil {
		return nil, err
	}
	return start(inner, pol, toa), nil
}

// start builds the listener and starts its goroutines.
func start(inner net.Listener, pol *policy, toa toaLookup) *Listener {
	if toa == nil && !pol.NoDeferAccept {
		if err := deferAccept(inner); err != nil {
			// An optimisation only: headers are read either way.
			pol.Logger.Debug("realip: TCP_DEFER_ACCEPT not set", "addr", inner.Addr(), "err", err)
		}
	}
	l := &Listener{
		inner: inner,
		pol:   pol,
		toa:   toa,
		// Buffered: a finished handshake does not wait for its Accept.
		ready: make(chan *Conn, pol.MaxPending),
		done:  make(chan struct{}),
		fatal: make(chan struct{}),
		errs:  make(chan error),

		pending: newPendingSet(),
	}
	l.readers.New = func() any { return newHeaderReader() }
	l.wg.Add(1)
	go l.runClock()
	if d := wakeable(inner); d != nil {
		l.deadline = d
		return l
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

// Accept returns the next connection whose client address is known. It
// returns an error only when the inner listener fails or is closed, never
// because of what a peer sent: a rejected connection is closed, counted
// and passed over.
func (l *Listener) Accept() (net.Conn, error) {
	if l.deadline != nil {
		return l.acceptDirect()
	}
	return l.acceptQueued()
}

// Close stops accepting and closes every connection not yet handed out.
// Connections already returned by Accept stay open.
func (l *Listener) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		close(l.done)
		err = l.inner.Close()
		if l.toa != nil {
			l.toa.Close()
		}
		l.mu.Lock()
		l.closePending()
		l.mu.Unlock()
	})
	l.wg.Wait()
	for {
		select {
		case c := <-l.ready:
			c.Close()
		default:
			return err
		}
	}
}

// Addr returns the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Stats returns a snapshot of the counters.
func (l *Listener) Stats() Stats { return l.stats.snapshot() }

// Trusts reports whether the listener honours headers from peer
// (Config.Trusted, an IPv4-mapped peer matched as IPv4): for a caller
// that reads a header itself and leaves everything else to the listener,
// as realip-agent's unwrap loops do.
func (l *Listener) Trusts(peer netip.Addr) bool { return l.pol.trusts(peer) }

// admit turns a connection just taken from the kernel into one Accept can
// return, without waiting for anything: a TOA lookup, an untrusted peer,
// and a header already complete in the socket's buffer (the usual case: a
// proxy sends its header first, and TCP_DEFER_ACCEPT hands a connection
// over once it did) are dealt with here. It returns nil when the
// connection was rejected, or when its header is still on its way: a
// goroutine of its own then waits for it (awaitHeader) and queues the
// connection, so a slow or silent peer delays nobody else.
func (l *Listener) admit(raw net.Conn) *Conn {
	peer := addrPort(raw.RemoteAddr())
	switch {
	case l.toa != nil:
		return l.serveTOA(raw)
	case !l.pol.trusts(peer.Addr()):
		l.stats.untrusted.Add(1)
		c := newConn(raw, l, peer, peer, wire.None)
		c.sniff = true
		return c
	}
	hr := l.readers.Get().(*headerReader)
	hr.reset(raw, false)
	if hr.src.wait {
		// No way to read without waiting (a wrapped conn, or not unix):
		// every header is waited for in its own goroutine.
		l.handOff(raw, peer, hr)
		return nil
	}
	h, err := wire.ReadProxyHeader(hr.br)
	if errors.Is(err, errWouldBlock) {
		l.handOff(raw, peer, hr)
		return nil
	}
	return l.finish(raw, peer, hr, h, err)
}

// enqueue queues c for Accept and wakes a caller waiting in the kernel.
func (l *Listener) enqueue(c *Conn) {
	select {
	case l.ready <- c:
		l.wakeWaiters()
	case <-l.done:
		c.raw.Close()
	}
}

// finish turns the outcome of a header read into a connection, keeping
// what was read beyond the header, or rejects it (nil); hr goes back to
// the pool.
func (l *Listener) finish(raw net.Conn, peer netip.AddrPort, hr *headerReader, h *wire.ProxyHeader, err error) *Conn {
	defer l.putReader(hr)
	c, reason, err := l.classify(raw, peer, h, err, hr.br.Buffered())
	if err != nil {
		l.reject(raw, peer, reason, err)
		return nil
	}
	c.keepBuffered(hr.br)
	return c
}

func (l *Listener) putReader(hr *headerReader) {
	hr.reset(nil, true)
	l.readers.Put(hr)
}

// classify turns the outcome of a header read into a connection, or into a
// reason to reject it.
func (l *Listener) classify(raw net.Conn, peer netip.AddrPort, h *wire.ProxyHeader, err error, buffered int) (*Conn, Reason, error) {
	if err != nil {
		reason := reasonOf(err)
		silent := reason == ReasonTimeout && buffered == 0
		if l.pol.Optional && (reason == ReasonMissing || silent) {
			return newConn(raw, l, peer, peer, wire.None), 0, nil
		}
		return nil, reason, err
	}
	via := wire.PPv1
	if h.Version == 2 {
		via = wire.PPv2
	}
	if !l.pol.allowed[via] {
		return nil, ReasonProtocol, errors.New("listener: " + via.String() + " header, not enabled on this listener")
	}
	if h.Local {
		c := newConn(raw, l, peer, peer, wire.None)
		c.header = h
		return c, 0, nil
	}
	c := newConn(raw, l, h.Source, peer, via)
	c.header = h
	return c, 0, nil
}

func (l *Listener) reject(raw net.Conn, peer netip.AddrPort, reason Reason, err error) {
	l.stats.rejected[reason].Add(1)
	l.pol.Logger.Warn("realip: connection rejected", "peer", peer, "reason", reason.String(), "err", err)
	raw.Close()
}
