//go:build linux

package edge

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/realip/realip/internal/sockopt"
)

// udpGoPort is a UDP forwarding port served by goroutines
// (Options.GoroutineRelay, or where the epoll loops cannot start): one
// reads the port's socket and forwards each datagram on its client's flow
// (serveUDP), and one per flow relays the origin's replies (replies).
type udpGoPort struct {
	udpBase
	conn  *net.UDPConn
	flows flowTable[*udpGoFlow]
}

// udpGoFlow is a flow of a udpGoPort.
type udpGoFlow struct {
	udpFlow
	p  *udpGoPort
	up *net.UDPConn // connected to the origin
}

// openGoUDP opens a forwarding port for serveUDP.
func openGoUDP(s *Server, port uint16) (*udpGoPort, error) {
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
	p := &udpGoPort{udpBase: udpBase{srv: s, port: port, local: unmapped(conn.LocalAddr())}, conn: conn}
	p.flows.m = map[netip.AddrPort]*udpGoFlow{}
	if !s.opts.ListenIP.IsValid() {
		if err := enablePktinfo(conn); err != nil {
			conn.Close()
			return nil, err
		}
		p.pktinfo = true
	}
	return p, nil
}

func (p *udpGoPort) serve() error {
	p.srv.loops.Add(1)
	go p.serveUDP()
	return nil
}

func (p *udpGoPort) closeUnserved() { p.conn.Close() }

func (p *udpGoPort) close() {
	p.conn.Close()
	p.closeFlows()
}

func (p *udpGoPort) closeFlows() {
	p.flows.mu.Lock()
	var victims []*udpGoFlow
	for _, f := range p.flows.m {
		victims = append(victims, f)
	}
	p.flows.mu.Unlock()
	for _, f := range victims {
		f.close()
	}
}

// serveUDP reads client datagrams and forwards them on their flows.
func (p *udpGoPort) serveUDP() {
	s := p.srv
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
			if f = p.newFlow(from, oob[:oobn]); f == nil {
				continue
			}
		}
		if err := f.forward(buf, n); err != nil && !errors.Is(err, net.ErrClosed) {
			f.upstreamFailed(err) // refused: ICMP unreachable came back
		}
	}
}

// flow returns the live flow of client, if any.
func (p *udpGoPort) flow(client netip.AddrPort) *udpGoFlow {
	if f := p.flows.get(client); f != nil && !f.closed.Load() {
		return f
	}
	return nil
}

// newFlow opens the flow of a new client, or counts why it cannot.
func (p *udpGoPort) newFlow(client netip.AddrPort, oob []byte) *udpGoFlow {
	f := &udpGoFlow{p: p}
	if !f.begin(&p.udpBase, f, client, oob, nil) || !openFlow(&f.udpFlow, &f.up, openUpstream, closeUpstream) {
		return nil
	}
	if kept, ok := p.flows.publish(f, &p.bind); !ok {
		f.close()
		return kept
	}
	p.srv.active.Add(1)
	go f.replies()
	return f
}

// openUpstream opens a UDP socket with SO_REUSEADDR connected to origin.
func openUpstream(origin netip.AddrPort) (*net.UDPConn, netip.AddrPort, error) {
	d := net.Dialer{Control: sockopt.ReuseAddr}
	c, err := d.Dial("udp", origin.String())
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	up := c.(*net.UDPConn)
	return up, unmapped(up.LocalAddr()), nil
}

func closeUpstream(c *net.UDPConn) { c.Close() }

// forward sends the datagram buf[headroom:headroom+n] to the origin (see
// udpFlow.datagram and sent); an error ends the flow.
func (f *udpGoFlow) forward(buf []byte, n int) error {
	d, first, ok := f.datagram(buf, n)
	if !ok {
		return nil
	}
	_, err := f.up.Write(d)
	return f.sent(err, n, first)
}

// replies relays the origin's datagrams back to the client until the flow
// is idle for UDPIdle or closed.
func (f *udpGoFlow) replies() {
	s := f.srv
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

// upstreamFailed marks the origin down after a refusal (ICMP unreachable)
// and closes the flow, so the client's next datagram picks another origin.
func (f *udpGoFlow) upstreamFailed(err error) {
	f.b.rs.pool.MarkDown(f.origin, err)
	f.close()
}

// close ends the flow.
func (f *udpGoFlow) close() {
	f.closeOnce.Do(func() {
		f.closed.Store(true)
		f.up.Close()
		f.p.flows.release(f)
	})
}

func (f *udpGoFlow) evict(*evLoop) { f.close() }
