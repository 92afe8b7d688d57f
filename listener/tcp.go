package listener

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/realip/realip/wire"
)

// Listener is a net.Listener whose connections carry the real client
// address. Create it with New or Listen; it is safe for concurrent use.
type Listener struct {
	inner   net.Listener
	pol     *policy
	toa     toaLookup // set for a TOA listener
	stats   counters
	readers sync.Pool // *bufio.Reader of wire.MaxV2HeaderLen bytes

	ready chan *Conn    // validated connections, for Accept
	slots chan struct{} // one per connection between accept and Accept
	done  chan struct{} // closed by Close
	fatal chan struct{} // closed when the inner listener failed for good
	err   error         // the failure, set before fatal is closed
	errs  chan error    // transient errors of the inner Accept, for Accept
	once  sync.Once
	wg    sync.WaitGroup

	mu       sync.Mutex
	tick     uint64                 // advanced by runClock
	inFlight map[net.Conn]handshake // connections in handshake, closed by Close
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
// empty), or wire.TOA alone, which needs realip's toa.ko kernel module. The
// listener starts accepting from inner at once.
func New(inner net.Listener, cfg Config) (*Listener, error) {
	pol, err := newPolicy(cfg, wire.PPv1, wire.PPv2, wire.TOA)
	if err != nil {
		return nil, err
	}
	if len(cfg.Protocols) == 0 {
		pol.allowed[wire.TOA] = false // TOA only when asked for
	}
	toa, err := openTOA(cfg.Protocols)
	if err != nil {
		return nil, err
	}
	return start(inner, pol, toa), nil
}

// start builds the listener and starts its accept loop.
func start(inner net.Listener, pol *policy, toa toaLookup) *Listener {
	l := &Listener{
		inner: inner,
		pol:   pol,
		toa:   toa,
		// Buffered: a finished handshake does not wait for its Accept.
		ready: make(chan *Conn, pol.MaxPending),
		slots: make(chan struct{}, pol.MaxPending),
		done:  make(chan struct{}),
		fatal: make(chan struct{}),
		errs:  make(chan error),

		inFlight: make(map[net.Conn]handshake),
	}
	l.readers.New = func() any { return bufio.NewReaderSize(nil, wire.MaxV2HeaderLen) }
	l.wg.Add(2)
	go l.acceptLoop()
	go l.runClock()
	return l
}

// Accept returns the next connection whose client address is known. It
// returns an error only when the inner listener fails or is closed, never
// because of what a peer sent.
func (l *Listener) Accept() (net.Conn, error) {
	// A connection already waiting costs a plain receive, not a select
	// over every channel below.
	select {
	case c := <-l.ready:
		l.stats.accepted[c.via].Add(1)
		return c, nil
	default:
	}
	select {
	case c := <-l.ready:
		l.stats.accepted[c.via].Add(1)
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.fatal:
		return nil, l.err
	case <-l.done:
		return nil, net.ErrClosed
	}
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
		for c := range l.inFlight {
			c.Close()
		}
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

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.done:
			return
		}
		raw, err := l.inner.Accept()
		if err != nil {
			<-l.slots
			if !l.acceptFailed(err, &backoff) {
				return
			}
			continue
		}
		backoff = 0
		l.wg.Add(1)
		go l.serve(raw)
	}
}

// acceptFailed hands an error of the inner Accept to a caller of Accept and
// reports whether accepting should go on (after a backoff).
func (l *Listener) acceptFailed(err error, backoff *time.Duration) bool {
	if errors.Is(err, net.ErrClosed) {
		select {
		case <-l.done:
		default:
			l.err = err
			close(l.fatal)
		}
		return false
	}
	select {
	case l.errs <- err:
	case <-l.done:
		return false
	}
	*backoff = min(max(2*(*backoff), 5*time.Millisecond), time.Second)
	select {
	case <-time.After(*backoff):
		return true
	case <-l.done:
		return false
	}
}

// serve reads a connection's header (for trusted peers) and delivers it.
func (l *Listener) serve(raw net.Conn) {
	defer l.wg.Done()
	defer func() { <-l.slots }()
	peer := addrPort(raw.RemoteAddr())
	var c *Conn
	if l.toa != nil {
		c = l.serveTOA(raw)
	} else if l.pol.trusts(peer.Addr()) {
		if !l.track(raw) {
			return
		}
		l.stats.pending.Add(1)
		c = l.handshake(raw, peer)
		l.stats.pending.Add(-1)
	} else {
		l.stats.untrusted.Add(1)
		c = newConn(raw, l, peer, peer, wire.None)
		c.sniff = true
	}
	if c == nil {
		return
	}
	select {
	case l.ready <- c:
	case <-l.done:
		raw.Close()
	}
}

// handshake reads and checks the header of a trusted peer, whose
// connection is tracked. It returns nil after closing and counting a
// rejected connection.
func (l *Listener) handshake(raw net.Conn, peer netip.AddrPort) *Conn {
	br := l.readers.Get().(*bufio.Reader)
	br.Reset(raw)
	defer func() { br.Reset(nil); l.readers.Put(br) }()

	h, err := wire.ReadProxyHeader(br)
	if uerr := l.untrack(raw); uerr != nil && err == nil {
		err = uerr
	}
	c, reason, err := l.classify(raw, peer, h, err, br.Buffered())
	if err != nil {
		l.reject(raw, peer, reason, err)
		return nil
	}
	c.keepBuffered(br)
	return c
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
