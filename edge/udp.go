//go:build linux

package edge

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/realip/realip/wire"
)

const (
	// headroom is reserved in front of every datagram read from a client,
	// so a header can be put there without moving the payload.
	headroom = 64
	// maxDatagram is the largest UDP payload.
	maxDatagram = 65535
)

// A UDP forwarding port is served by one of two engines: the epoll loops,
// each reading its own socket of the port (udploop_linux.go: udpLoopPort,
// udpLoopFlow), or a goroutine reading the port's socket and one per flow
// reading the origin's replies (udprelay.go: udpGoPort, udpGoFlow). A
// server serves every port with the loops when they run. What the engines
// share is here: the port's address and binding (udpBase), a flow's
// client, header and bookkeeping (udpFlow), the flows by client
// (flowTable), and how a flow is opened, framed and counted.

// udpPort is a UDP forwarding port as the server sees it.
type udpPort interface {
	base() *udpBase
	// serve starts serving the port once its binding is stored; on error
	// the port is closed.
	serve() error
	// closeFlows closes the port's flows (its rule changed).
	closeFlows()
	// close stops reading the port and closes its flows.
	close()
	// closeUnserved closes a port opened but never served.
	closeUnserved()
}

// udpBase is what the engines' ports share.
type udpBase struct {
	srv     *Server
	port    uint16
	local   netip.AddrPort // the address the port is bound to
	pktinfo bool           // listening on every address: learn each flow's target
	bind    atomic.Pointer[binding]
}

func (p *udpBase) base() *udpBase { return p }

// udpFlow is what the engines' flows share: one client's flow, with its
// own socket to the origin.
type udpFlow struct {
	srv        *Server
	owner      flowOwner // the engine's flow around this one
	b          *binding
	client     netip.AddrPort
	target     netip.AddrPort // where the client sent to
	oob        []byte         // source-address control message for replies
	tuple      udpTuple       // the upstream socket's addresses, claimed in srv.tuples
	origin     netip.Addr
	hdr        []byte // in front of datagrams to the origin (passing.flowHeader), in hdrBuf
	hdrBuf     [headroom]byte
	last       atomic.Int64 // unix nanoseconds of the last datagram either way
	headerSent atomic.Bool
	ready      atomic.Bool // serving: newFlow is done with it, so it may be evicted
	closed     atomic.Bool
	closeOnce  sync.Once
}

func (f *udpFlow) base() *udpFlow { return f }

// flowOwner is an engine's flow as flowLimits' evictions reach it.
type flowOwner interface {
	// evict closes a flow given up for another. by is the loop asking
	// (nil in goroutine mode).
	evict(by *evLoop)
}

// openUDP opens a forwarding port: in the epoll loops when they run,
// otherwise for the goroutines.
func (s *Server) openUDP(port uint16) (udpPort, error) {
	if s.evLoops != nil && s.evLoops.start() == nil {
		p := &udpLoopPort{udpBase: udpBase{srv: s, port: port}}
		p.flows.m = map[netip.AddrPort]*udpLoopFlow{}
		if err := s.evLoops.openUDP(p); err != nil {
			return nil, err
		}
		return p, nil
	}
	p, err := openGoUDP(s, port)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// commitUDP mirrors commitTCP; flows of a port whose rule changed are
// closed, flows of unchanged rules go on.
func (s *Server) commitUDP(want map[uint16]binding, opened map[uint16]udpPort) {
	for port, p := range s.udp {
		b, ok := want[port]
		if !ok {
			p.close()
			delete(s.udp, port)
			continue
		}
		old := p.base().bind.Swap(&b)
		if old.rs != b.rs || old.originPort != b.originPort {
			p.closeFlows()
		}
	}
	for port, p := range opened {
		b := want[port]
		p.base().bind.Store(&b)
		if err := p.serve(); err != nil {
			s.opts.Logger.Error("edge: udp port not served", "port", port, "err", err)
			continue // serve closed the sockets
		}
		s.udp[port] = p
	}
}

// flowTable is a port's flows by client address; F is the engine's flow.
type flowTable[F interface {
	comparable
	base() *udpFlow
}] struct {
	mu sync.Mutex
	m  map[netip.AddrPort]F
}

// get returns the flow of client, closed or not.
func (t *flowTable[F]) get(client netip.AddrPort) F {
	t.mu.Lock()
	f := t.m[client]
	t.mu.Unlock()
	return f
}

// publish makes f the flow of its client and counts it, unless the port
// no longer forwards by f's binding (nil, false) or the client has
// another live flow (that one, false).
func (t *flowTable[F]) publish(f F, bind *atomic.Pointer[binding]) (F, bool) {
	fb := f.base()
	var none F
	t.mu.Lock()
	if cur := bind.Load(); cur.rs != fb.b.rs || cur.originPort != fb.b.originPort {
		// A reload changed the port's rule while the flow was dialled,
		// after it closed the port's flows: drop the datagram rather
		// than keep a flow of the old rule.
		t.mu.Unlock()
		return none, false
	}
	if old := t.m[fb.client]; old != none && !old.base().closed.Load() {
		// Another loop made the client's flow meanwhile (loop mode only:
		// a client's datagrams reach one loop unless the port's
		// SO_REUSEPORT group changed). Keep that one.
		t.mu.Unlock()
		return old, false
	}
	t.m[fb.client] = f
	t.mu.Unlock()
	fb.ready.Store(true)
	fb.b.rs.metrics.flows.Inc()
	return f, true
}

// release is what closing a flow does besides its socket: it forgets the
// flow and gives back its address pair and its place under MaxUDPFlows.
func (t *flowTable[F]) release(f F) {
	fb := f.base()
	fb.closed.Store(true)
	t.mu.Lock()
	if t.m[fb.client] == f {
		delete(t.m, fb.client)
	}
	t.mu.Unlock()
	if fb.tuple != (udpTuple{}) {
		fb.srv.tuples.release(fb.tuple)
	}
	fb.b.rs.metrics.flowsActive.Dec()
	fb.srv.flows.remove(fb)
}

// begin fills in f, the new flow of client on port p (oob: the control
// messages of its first datagram), and admits it under MaxUDPFlowsPerIP
// and MaxUDPFlows, or counts why not. At MaxUDPFlows it closes the flow
// given up for f (counted as flow_evicted on that flow's rule); by is the
// loop making f, nil in goroutine mode.
func (f *udpFlow) begin(p *udpBase, owner flowOwner, client netip.AddrPort, oob []byte, by *evLoop) bool {
	s := p.srv
	f.srv, f.owner, f.b, f.client, f.target = s, owner, p.bind.Load(), client, s.udpTarget(p, oob)
	victim, reason := s.flows.admit(f)
	if reason != "" {
		f.b.rs.metrics.fail(reason)
		return false
	}
	if victim != nil {
		victim.b.rs.metrics.fail("flow_evicted")
		victim.owner.evict(by)
	}
	if p.pktinfo {
		f.oob = replyControl(f.target.Addr())
	}
	return true
}

// openFlow builds the header of f, admitted by begin, and connects it to
// the first candidate origin that takes a socket (*sock) of the engine's
// (S, opened with openS and closed with closeS; see claimTuple). On
// failure it logs, gives back f's admission and returns false.
func openFlow[S any](f *udpFlow, sock *S, openS func(netip.AddrPort) (S, netip.AddrPort, error), closeS func(S)) bool {
	m := f.b.rs.metrics
	err := f.prepareHeader()
	if err == nil {
		err = connect(f, sock, openS, closeS)
	}
	if err != nil {
		f.srv.flows.remove(f)
		f.srv.opts.Logger.Warn("edge: no origin", "rule", m.label, "client", f.client, "err", err)
		return false
	}
	f.last.Store(time.Now().UnixNano())
	m.flowsActive.Inc() // given back by release
	return true
}

// udpTarget is the address the client sent its datagram to.
func (s *Server) udpTarget(p *udpBase, oob []byte) netip.AddrPort {
	if s.opts.ListenIP.IsValid() {
		return netip.AddrPortFrom(s.opts.ListenIP.Unmap(), p.port)
	}
	if a, ok := pktinfoDst(oob); ok {
		return netip.AddrPortFrom(a.Unmap(), p.port)
	}
	return p.local
}

// prepareHeader builds the flow's header once.
func (f *udpFlow) prepareHeader() error {
	hdr, err := f.b.rs.pass.flowHeader(f.hdrBuf[:0], f.client, f.target)
	if err != nil {
		f.b.rs.metrics.fail("header_write")
		return err
	}
	f.hdr = hdr
	return nil
}

// connect connects f to the first candidate origin (see openFlow).
func connect[S any](f *udpFlow, sock *S, openS func(netip.AddrPort) (S, netip.AddrPort, error), closeS func(S)) error {
	cands := f.b.rs.pool.Candidates(f.client.Addr())
	if len(cands) == 0 {
		f.b.rs.metrics.fail("no_origin")
		return errors.New("no origin address resolved")
	}
	var errs []error
	for _, addr := range cands[:min(len(cands), 3)] {
		s, t, err := claimTuple(f.srv, netip.AddrPortFrom(addr, f.b.originPort), f.b.rs.metrics, openS, closeS)
		if err == nil {
			*sock, f.tuple, f.origin = s, t, addr
			return nil
		}
		errs = append(errs, err)
		if blameDial(f.b.rs, addr, err) {
			break
		}
	}
	return errors.Join(errs...)
}

// maxTupleClashes bounds the redials of one flow whose socket got the
// address pair of another flow's (see tupleSet).
const maxTupleClashes = 16

// claimTuple opens a UDP socket connected to origin with open (the
// engine's: S is its socket) whose address pair no other flow of the edge
// holds, and claims that pair. Each clash is counted as the error
// "upstream_port_clash" of the rule.
func claimTuple[S any](s *Server, origin netip.AddrPort, m *ruleMetrics, open func(netip.AddrPort) (S, netip.AddrPort, error), closeS func(S)) (S, udpTuple, error) {
	for range maxTupleClashes {
		sock, local, err := open(origin)
		if err != nil {
			return sock, udpTuple{}, err
		}
		t := udpTuple{local: local, remote: origin}
		if s.tuples.claim(t) {
			return sock, t, nil
		}
		// Keep the clashing socket open until the redial, so the
		// kernel cannot hand out the same port again at once.
		defer closeS(sock)
		m.fail("upstream_port_clash")
	}
	var none S
	return none, udpTuple{}, fmt.Errorf("no free local port towards %v after %d tries", origin, maxTupleClashes)
}

// maxUDPPayload is the largest UDP payload towards an address: an IP
// datagram of 65535 bytes less the IPv4 and UDP headers, or less the UDP
// header for IPv6 (whose payload length leaves its own header out).
func maxUDPPayload(to netip.Addr) int {
	if to.Unmap().Is4() {
		return 65535 - 20 - 8
	}
	return 65535 - 8
}

// datagram returns the client's datagram buf[headroom:headroom+n] with
// the flow's header in the headroom, as the rule's passing says, and
// whether that is the flow's first header (for sent). A datagram that the
// header makes too big for UDP is dropped and counted (datagram_too_big):
// ok is false.
func (f *udpFlow) datagram(buf []byte, n int) (d []byte, first, ok bool) {
	f.last.Store(time.Now().UnixNano())
	start := headroom
	if len(f.hdr) > 0 {
		every := f.b.rs.pass.dgramEvery
		if first = !every && !f.headerSent.Load(); first || every {
			start -= len(f.hdr)
			copy(buf[start:], f.hdr)
		}
	}
	d = buf[start : headroom+n]
	if len(d) > maxUDPPayload(f.origin) {
		f.b.rs.metrics.fail("datagram_too_big")
		return nil, false, false
	}
	return d, first, true
}

// sent counts the sending of a datagram of n payload bytes from datagram,
// which failed with err if not nil. One the kernel has no room for is
// dropped and counted (upstream_write), as UDP does: the flow goes on. Any
// other failure (a refusal: ICMP unreachable came back) is counted and
// returned; the caller ends the flow.
func (f *udpFlow) sent(err error, n int, first bool) error {
	m := f.b.rs.metrics
	switch {
	case err == nil:
	case errors.Is(err, syscall.EMSGSIZE):
		m.fail("datagram_too_big")
		return nil
	case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ENOBUFS):
		m.fail("upstream_write")
		return nil
	default:
		m.fail("upstream_write")
		return err
	}
	if first {
		f.headerSent.Store(true) // only the flow's reader forwards: no race
	}
	m.dgToOrigin.Inc()
	m.toOrigin.Add(float64(n))
	return nil
}

// replyPayload strips the SPP header of a reply. A reply without one is cut
// by 38 bytes all the same, as EdgeOne does, and counted.
func (f *udpFlow) replyPayload(d []byte) ([]byte, bool) {
	if !f.b.rs.pass.sppReplies {
		return d, true
	}
	m := f.b.rs.metrics
	if len(d) < wire.SPPHeaderLen {
		m.fail("reply_short")
		return nil, false
	}
	if !wire.IsSPP(d) {
		m.fail("spp_reply_without_header")
	}
	return d[wire.SPPHeaderLen:], true
}
