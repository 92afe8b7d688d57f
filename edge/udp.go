//go:build linux

package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/realip/realip/edge/rules"
	"github.com/realip/realip/internal/sockopt"
	"github.com/realip/realip/wire"
)

const (
	// headroom is reserved in front of every datagram read from a client,
	// so a header can be put there without moving the payload.
	headroom = 64
	// maxDatagram is the largest UDP payload.
	maxDatagram = 65535
)

// udpPort is one UDP forwarding port with its flows. It is served either
// by a goroutine reading conn (serveUDP) or, on Linux, by the epoll loops,
// each reading its own socket of fds (udploop_linux.go).
type udpPort struct {
	srv     *Server
	port    uint16
	conn    *net.UDPConn   // goroutine mode
	fds     []int          // loop mode: one SO_REUSEPORT socket per loop, by loop index
	local   netip.AddrPort // the address the port is bound to
	pktinfo bool           // listening on every address: learn each flow's target
	bind    atomic.Pointer[binding]

	mu    sync.Mutex
	flows map[netip.AddrPort]*udpFlow
}

// udpFlow is one client's flow: its own socket to the origin.
type udpFlow struct {
	p          *udpPort
	b          *binding
	client     netip.AddrPort
	target     netip.AddrPort // where the client sent to
	oob        []byte         // source-address control message for replies
	up         *net.UDPConn   // goroutine mode: connected to the origin
	loop       *evLoop        // loop mode: the loop that owns the flow
	ufd        int            // loop mode: the socket connected to the origin
	utok       uint64         // loop mode: ufd's token in the loop
	cfd        int            // loop mode: the port's socket replies leave from
	tuple      udpTuple       // up's addresses, claimed in srv.tuples
	origin     netip.Addr
	ppv2       []byte       // the PROXY v2 header of the flow, for ModePPv2
	last       atomic.Int64 // unix nanoseconds of the last datagram either way
	headerSent atomic.Bool
	ready      atomic.Bool // serving: newFlow is done with it, so it may be evicted
	closed     atomic.Bool
	closeOnce  sync.Once
}

// openUDP opens a forwarding port: in the epoll loops when they run,
// otherwise for serveUDP.
func (s *Server) openUDP(port uint16) (*udpPort, error) {
	p := &udpPort{srv: s, port: port, flows: map[netip.AddrPort]*udpFlow{}}
	if s.evLoops != nil && s.evLoops.start() == nil {
		if err := s.evLoops.openUDP(p); err != nil {
			return nil, err
		}
		return p, nil
	}
	addr, err := net.ResolveUDPAddr("udp", s.listenAddr(port))
	if err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: sockopt.ReuseAddr}
	pc, err := lc.ListenPacket(context.Background(), "udp", addr.String())
	if err != nil {
		return nil, err
	}
	conn := pc.(*net.UDPConn)
	p.conn, p.local = conn, unmapped(conn.LocalAddr())
	if !s.opts.ListenIP.IsValid() {
		if err := enablePktinfo(conn); err != nil {
			conn.Close()
			return nil, err
		}
		p.pktinfo = true
	}
	return p, nil
}

// commitUDP mirrors commitTCP; flows of a port whose rule changed are
// closed, flows of unchanged rules go on.
func (s *Server) commitUDP(want map[uint16]binding, opened map[uint16]*udpPort) {
	for port, p := range s.udp {
		b, ok := want[port]
		if !ok {
			p.close()
			delete(s.udp, port)
			continue
		}
		old := p.bind.Swap(&b)
		if old.rs != b.rs || old.originPort != b.originPort {
			p.closeFlows(func(f *udpFlow) bool { return true })
		}
	}
	for port, p := range opened {
		b := want[port]
		p.bind.Store(&b)
		if p.fds != nil {
			if err := s.evLoops.addUDPPort(p); err != nil {
				s.opts.Logger.Error("edge: udp port not served", "port", port, "err", err)
				continue // addUDPPort closed the sockets
			}
			s.udp[port] = p
			continue
		}
		s.udp[port] = p
		s.loops.Add(1)
		go s.serveUDP(p)
	}
}

// closeUnserved closes a port opened but never served.
func (p *udpPort) closeUnserved() {
	if p.fds != nil {
		closeFDs(p.fds)
		p.fds = nil
	}
	if p.conn != nil {
		p.conn.Close()
	}
}

// close stops reading the port and closes its flows.
func (p *udpPort) close() {
	if p.fds != nil {
		p.srv.evLoops.removeUDPPort(p)
		return
	}
	p.conn.Close()
	p.closeFlows(func(*udpFlow) bool { return true })
}

func (p *udpPort) closeFlows(match func(*udpFlow) bool) {
	if p.fds != nil {
		p.srv.evLoops.closeFlows(p, match)
		return
	}
	p.mu.Lock()
	var victims []*udpFlow
	for _, f := range p.flows {
		if match(f) {
			victims = append(victims, f)
		}
	}
	p.mu.Unlock()
	for _, f := range victims {
		f.close()
	}
}

// serveUDP reads client datagrams and forwards them on their flows.
func (s *Server) serveUDP(p *udpPort) {
	defer s.loops.Done()
	buf := make([]byte, headroom+maxDatagram)
	oob := make([]byte, 128)
	for {
		n, oobn, _, from, err := p.conn.ReadMsgUDPAddrPort(buf[headroom:], oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.opts.Logger.Warn("edge: udp read", "port", p.port, "err", err)
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		f := p.flow(from)
		if f == nil {
			if f = s.newFlow(p, from, oob[:oobn], nil); f == nil {
				continue
			}
		}
		if err := f.forward(buf, n); err != nil && !errors.Is(err, net.ErrClosed) {
			f.upstreamFailed(err) // refused: ICMP unreachable came back
		}
	}
}

// flow returns the live flow of client, if any.
func (p *udpPort) flow(client netip.AddrPort) *udpFlow {
	p.mu.Lock()
	f := p.flows[client]
	p.mu.Unlock()
	if f != nil && f.closed.Load() {
		return nil
	}
	return f
}

// newFlow opens the flow of a new client, or counts why it cannot. In loop
// mode l is the loop that received the datagram and owns the flow.
func (s *Server) newFlow(p *udpPort, client netip.AddrPort, oob []byte, l *evLoop) *udpFlow {
	b := p.bind.Load()
	m := b.rs.metrics
	f := &udpFlow{p: p, b: b, client: client, target: s.udpTarget(p, oob), loop: l, ufd: -1, cfd: -1}
	if !s.admitFlow(f, l) {
		return nil
	}
	if p.pktinfo {
		f.oob = replyControl(f.target.Addr())
	}
	err := f.prepareHeader()
	if err == nil {
		err = f.dial()
	}
	if err != nil {
		s.flows.remove(f)
		s.opts.Logger.Warn("edge: no origin", "rule", m.label, "client", client, "err", err)
		return nil
	}
	f.last.Store(time.Now().UnixNano())
	m.flowsActive.Inc() // given back by release
	if l != nil {
		if err := l.addFlow(f); err != nil {
			s.opts.Logger.Warn("edge: udp flow", "rule", m.label, "client", client, "err", err)
			f.closeInLoop()
			return nil
		}
	}
	p.mu.Lock()
	if cur := p.bind.Load(); cur.rs != b.rs || cur.originPort != b.originPort {
		// A reload changed the port's rule while the flow was dialled,
		// after it closed the port's flows: drop the datagram rather
		// than keep a flow of the old rule.
		p.mu.Unlock()
		f.discard()
		return nil
	}
	if old := p.flows[client]; old != nil && !old.closed.Load() {
		// Another loop made the client's flow meanwhile (loop mode only:
		// a client's datagrams reach one loop unless the port's
		// SO_REUSEPORT group changed). Keep that one.
		p.mu.Unlock()
		f.discard()
		return old
	}
	p.flows[client] = f
	p.mu.Unlock()
	f.ready.Store(true)
	m.flows.Inc()
	if l == nil {
		s.active.Add(1)
		go s.replies(f)
	}
	return f
}

// admitFlow admits f under MaxUDPFlowsPerIP and MaxUDPFlows, or counts
// why not. At MaxUDPFlows it closes the flow given up for f (counted as
// flow_evicted on that flow's rule); l is the loop making f, nil in
// goroutine mode.
func (s *Server) admitFlow(f *udpFlow, l *evLoop) bool {
	victim, reason := s.flows.admit(f)
	if reason != "" {
		f.b.rs.metrics.fail(reason)
		return false
	}
	if victim != nil {
		victim.b.rs.metrics.fail("flow_evicted")
		victim.evict(l)
	}
	return true
}

// evict closes a flow given up for another. l is the loop asking (nil in
// goroutine mode): a flow of another loop is closed by its own loop, and l
// does not wait for that, since a loop must never wait for another.
func (f *udpFlow) evict(l *evLoop) {
	switch {
	case f.loop == nil:
		f.close()
	case f.loop == l:
		f.closeInLoop()
	default:
		f.loop.post(f.closeInLoop)
	}
}

// udpTarget is the address the client sent its datagram to.
func (s *Server) udpTarget(p *udpPort, oob []byte) netip.AddrPort {
	if s.opts.ListenIP.IsValid() {
		return netip.AddrPortFrom(s.opts.ListenIP.Unmap(), p.port)
	}
	if a, ok := pktinfoDst(oob); ok {
		return netip.AddrPortFrom(a.Unmap(), p.port)
	}
	return p.local
}

// prepareHeader builds the flow's PROXY v2 header once.
func (f *udpFlow) prepareHeader() error {
	if f.b.rs.rule.IPMode != rules.ModePPv2 {
		return nil
	}
	hdr, err := wire.AppendProxyHeader(nil, &wire.ProxyHeader{Version: 2, Datagram: true, Source: f.client, Destination: f.target}, wire.MarshalOptions{})
	if err != nil {
		f.b.rs.metrics.fail("header_write")
		return err
	}
	if len(hdr) > headroom {
		f.b.rs.metrics.fail("header_write")
		return errors.New("PROXY v2 header longer than the headroom")
	}
	f.ppv2 = hdr
	return nil
}

// dial connects the flow to the first candidate origin.
func (f *udpFlow) dial() error {
	cands := f.b.rs.pool.Candidates(f.client.Addr())
	if len(cands) == 0 {
		f.b.rs.metrics.fail("no_origin")
		return errors.New("no origin address resolved")
	}
	var errs []error
	for _, addr := range cands[:min(len(cands), 3)] {
		up, t, err := f.p.srv.dialUpstream(netip.AddrPortFrom(addr, f.b.originPort), f.b.rs.metrics, f.loop != nil)
		if err == nil {
			f.up, f.ufd, f.tuple, f.origin = up.conn, up.fd, t, addr
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

// upstream is a flow's socket connected to its origin: a *net.UDPConn
// (goroutine mode) or a raw non-blocking descriptor (loop mode, fd >= 0).
type upstream struct {
	conn  *net.UDPConn
	fd    int
	local netip.AddrPort
}

func (u upstream) close() {
	if u.conn != nil {
		u.conn.Close()
		return
	}
	closeFD(u.fd)
}

// openUpstream opens a goroutine mode upstream socket with SO_REUSEADDR.
func openUpstream(origin netip.AddrPort) (upstream, error) {
	d := net.Dialer{Control: sockopt.ReuseAddr}
	c, err := d.Dial("udp", origin.String())
	if err != nil {
		return upstream{fd: -1}, err
	}
	up := c.(*net.UDPConn)
	return upstream{conn: up, fd: -1, local: unmapped(up.LocalAddr())}, nil
}

// dialUpstream opens a UDP socket connected to origin (raw for loop mode)
// whose address pair no other flow of the edge holds, and claims that
// pair. Each clash is counted as the error "upstream_port_clash" of the
// rule.
func (s *Server) dialUpstream(origin netip.AddrPort, m *ruleMetrics, raw bool) (upstream, udpTuple, error) {
	open := openUpstream
	if raw {
		open = openRawUpstream
	}
	for range maxTupleClashes {
		up, err := open(origin)
		if err != nil {
			return up, udpTuple{}, err
		}
		t := udpTuple{local: up.local, remote: origin}
		if s.tuples.claim(t) {
			return up, t, nil
		}
		// Keep the clashing socket open until the redial, so the
		// kernel cannot hand out the same port again at once.
		defer up.close()
		m.fail("upstream_port_clash")
	}
	return upstream{fd: -1}, udpTuple{}, fmt.Errorf("no free local port towards %v after %d tries", origin, maxTupleClashes)
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

// forward sends the datagram buf[headroom:headroom+n] to the origin, with
// the header the rule asks for in the headroom. A datagram that the header
// makes too big for UDP is dropped and counted (datagram_too_big), and
// one the kernel has no room for is dropped and counted (upstream_write),
// as UDP does: the flow goes on. Any other failure (a refusal: ICMP
// unreachable came back) is counted and returned; the caller ends the
// flow.
func (f *udpFlow) forward(buf []byte, n int) error {
	f.last.Store(time.Now().UnixNano())
	start := headroom
	first := false
	switch f.b.rs.rule.IPMode {
	case rules.ModeSPP:
		start -= wire.SPPHeaderLen
		wire.PutSPP(buf[start:], wire.SPPHeader{Client: f.client, Proxy: f.target})
	case rules.ModePPv2:
		if first = !f.headerSent.Load(); first || f.p.srv.opts.PPv2EveryDatagram {
			start -= len(f.ppv2)
			copy(buf[start:], f.ppv2)
		}
	}
	d := buf[start : headroom+n]
	if len(d) > maxUDPPayload(f.origin) {
		f.b.rs.metrics.fail("datagram_too_big")
		return nil
	}
	switch err := f.send(d); {
	case err == nil:
	case errors.Is(err, syscall.EMSGSIZE):
		f.b.rs.metrics.fail("datagram_too_big")
		return nil
	case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ENOBUFS):
		f.b.rs.metrics.fail("upstream_write")
		return nil
	default:
		f.b.rs.metrics.fail("upstream_write")
		return err
	}
	if first {
		f.headerSent.Store(true) // only the flow's reader forwards: no race
	}
	f.b.rs.metrics.dgToOrigin.Inc()
	f.b.rs.metrics.toOrigin.Add(float64(n))
	return nil
}

// send writes one datagram to the origin.
func (f *udpFlow) send(d []byte) error {
	if f.loop != nil {
		_, err := rawWriteFD(f.ufd, d)
		return err
	}
	_, err := f.up.Write(d)
	return err
}

// replies relays the origin's datagrams back to the client until the flow
// is idle for UDPIdle or closed.
func (s *Server) replies(f *udpFlow) {
	defer s.active.Done()
	defer f.close()
	stop := context.AfterFunc(s.ctx, f.close)
	defer stop()
	buf := make([]byte, maxDatagram)
	idle := s.opts.UDPIdle
	m := f.b.rs.metrics
	for {
		f.up.SetReadDeadline(time.Now().Add(idle))
		n, err := f.up.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, f.last.Load())) < idle {
				continue
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, net.ErrClosed) {
				f.upstreamFailed(err)
			}
			return
		}
		f.last.Store(time.Now().UnixNano())
		payload, ok := f.replyPayload(buf[:n])
		if !ok {
			continue
		}
		if _, _, err := f.p.conn.WriteMsgUDPAddrPort(payload, f.oob, f.client); err != nil {
			s.opts.Logger.Debug("edge: udp reply", "client", f.client, "err", err)
			continue
		}
		m.dgToClient.Inc()
		m.toClient.Add(float64(len(payload)))
	}
}

// replyPayload strips the SPP header of a reply. A reply without one is cut
// by 38 bytes all the same, as EdgeOne does, and counted.
func (f *udpFlow) replyPayload(d []byte) ([]byte, bool) {
	if f.b.rs.rule.IPMode != rules.ModeSPP {
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

// upstreamFailed marks the origin down after a refusal (ICMP unreachable)
// and closes the flow, so the client's next datagram picks another origin.
func (f *udpFlow) upstreamFailed(err error) {
	f.b.rs.pool.MarkDown(f.origin, err)
	f.close()
}

// discard closes a flow newFlow made but did not keep, from the goroutine
// that made it (in loop mode, its loop).
func (f *udpFlow) discard() {
	if f.loop != nil {
		f.closeInLoop()
		return
	}
	f.close()
}

// close ends the flow; in loop mode it waits for the owning loop to do it
// (never call it from a loop: closeInLoop).
func (f *udpFlow) close() {
	if f.loop != nil {
		f.p.srv.evLoops.closeFlow(f)
		return
	}
	f.closeOnce.Do(func() {
		f.closed.Store(true)
		f.up.Close()
		f.release()
	})
}

// release is what closing a flow does besides its socket: it forgets the
// flow and gives back its address pair and its place under MaxUDPFlows.
func (f *udpFlow) release() {
	f.closed.Store(true)
	f.p.mu.Lock()
	if f.p.flows[f.client] == f {
		delete(f.p.flows, f.client)
	}
	f.p.mu.Unlock()
	if f.tuple != (udpTuple{}) {
		f.p.srv.tuples.release(f.tuple)
	}
	f.b.rs.metrics.flowsActive.Dec()
	f.p.srv.flows.remove(f)
}
