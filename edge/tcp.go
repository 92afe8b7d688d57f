//go:build linux

package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/realip/realip/edge/rules"
	"github.com/realip/realip/internal/sockopt"
	"github.com/realip/realip/wire"
)

// tcpPort is one listening forwarding port.
type tcpPort struct {
	port uint16
	ln   *net.TCPListener
	bind atomic.Pointer[binding]
}

func (p *tcpPort) close() { p.ln.Close() }

// listenAddr is the address to bind a forwarding port on.
func (s *Server) listenAddr(port uint16) string {
	ip := ""
	if s.opts.ListenIP.IsValid() {
		ip = s.opts.ListenIP.String()
	}
	return net.JoinHostPort(ip, strconv.Itoa(int(port)))
}

// openPorts opens the listeners of the ports in want that are not open yet.
// On failure it closes what it opened.
func (s *Server) openPorts(want map[rules.Proto]map[uint16]binding) (map[uint16]*tcpPort, map[uint16]udpPort, error) {
	newTCP, newUDP := map[uint16]*tcpPort{}, map[uint16]udpPort{}
	fail := func(err error) (map[uint16]*tcpPort, map[uint16]udpPort, error) {
		for _, p := range newTCP {
			p.close()
		}
		for _, p := range newUDP {
			p.closeUnserved()
		}
		return nil, nil, err
	}
	for port := range want[rules.TCP] {
		if s.tcp[port] != nil {
			continue
		}
		ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(context.Background(), "tcp", s.listenAddr(port))
		if err != nil {
			return fail(fmt.Errorf("edge: tcp port %d: %w", port, err))
		}
		newTCP[port] = &tcpPort{port: port, ln: ln.(*net.TCPListener)}
	}
	for port := range want[rules.UDP] {
		if s.udp[port] != nil {
			continue
		}
		p, err := s.openUDP(port)
		if err != nil {
			return fail(fmt.Errorf("edge: udp port %d: %w", port, err))
		}
		newUDP[port] = p
	}
	return newTCP, newUDP, nil
}

// commitTCP points every port at its new binding, starts the new ports and
// closes the ports no rule wants any more (their connections go on).
func (s *Server) commitTCP(want map[uint16]binding, opened map[uint16]*tcpPort) {
	for port, p := range s.tcp {
		if b, ok := want[port]; ok {
			p.bind.Store(&b)
			continue
		}
		s.closeTCPPort(p)
		delete(s.tcp, port)
	}
	if len(opened) > 0 {
		s.sweeper.Do(func() { go s.tcpConns.sweep(s.ctx) })
	}
	for port, p := range opened {
		b := want[port]
		p.bind.Store(&b)
		s.tcp[port] = p
		if s.serveTCPInLoops(p) {
			continue
		}
		s.loops.Add(1)
		go s.serveTCP(p)
	}
}

// serveTCPInLoops gives p to the epoll loops; false leaves it to serveTCP
// (not Linux, GoroutineRelay, or the loops could not start).
func (s *Server) serveTCPInLoops(p *tcpPort) bool {
	if s.evLoops == nil {
		return false
	}
	err := s.evLoops.start()
	if err == nil {
		err = s.evLoops.addPort(p)
	}
	if err != nil {
		s.opts.Logger.Warn("edge: tcp port relayed by goroutines", "port", p.port, "err", err)
		return false
	}
	return true
}

// closeTCPPort stops accepting on p; its connections go on. The socket is
// closed first, so that no connection waits in its backlog for a loop that
// no longer takes from it (closing resets those); then the loops let go
// of it, and none is still opening a connection from p when this returns.
func (s *Server) closeTCPPort(p *tcpPort) {
	p.close()
	if s.evLoops != nil {
		s.evLoops.removePort(p)
	}
}

// Waits of serveTCP after a failed accept, as net/http's Server waits.
const (
	minAcceptWait = 5 * time.Millisecond
	maxAcceptWait = time.Second
)

// acceptBackoff is serveTCP's wait after a failed accept: minAcceptWait,
// doubling up to maxAcceptWait. Unlike net/http, an accept that succeeds
// in between does not start it over: a process out of descriptors accepts
// one now and then, as its connections close, and would otherwise retry
// (and log) every 5 ms. A whole maxAcceptWait without failure does.
type acceptBackoff struct {
	wait  time.Duration
	until time.Time // the end of the last wait
}

// failed returns how long to wait after an accept failed at now.
func (b *acceptBackoff) failed(now time.Time) time.Duration {
	if now.Sub(b.until) >= maxAcceptWait {
		b.wait = 0
	}
	b.wait = min(max(2*b.wait, minAcceptWait), maxAcceptWait)
	b.until = now.Add(b.wait)
	return b.wait
}

func (s *Server) serveTCP(p *tcpPort) {
	defer s.loops.Done()
	var backoff acceptBackoff
	for {
		c, err := p.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			wait := backoff.failed(time.Now())
			s.opts.Logger.Warn("edge: accept", "port", p.port, "err", err, "retry_in", wait)
			time.Sleep(wait)
			continue
		}
		s.active.Add(1)
		go s.handleTCP(c, p.bind.Load())
	}
}

// handleTCP relays one client connection to an origin. It returns when
// the client-to-origin direction is done; the relay's other goroutine may
// finish the connection after it.
func (s *Server) handleTCP(client *net.TCPConn, b *binding) {
	m := b.rs.metrics
	src := unmapped(client.RemoteAddr())
	if reason := s.admitConn(src.Addr()); reason != "" {
		m.fail(reason)
		client.SetLinger(0)
		client.Close()
		s.endTCP(nil, netip.Addr{})
		return
	}
	m.connections.Inc()
	m.active.Inc()
	upstream, err := s.dialOrigin(b, src)
	if err != nil {
		s.opts.Logger.Warn("edge: no origin", "rule", m.label, "client", src, "err", err)
		client.SetLinger(0)
		client.Close()
		s.endTCP(m, src.Addr())
		return
	}
	if pass := &b.rs.pass; pass.tcpProxy != 0 {
		hdr, err := pass.tcpHeader(src, unmapped(client.LocalAddr()))
		if err != nil || !writeAll(upstream, hdr) {
			m.fail("header_write")
			client.Close()
			upstream.Close()
			s.endTCP(m, src.Addr())
			return
		}
	}
	c := &relayConn{client: client, upstream: upstream, toOrigin: m.toOrigin, toClient: m.toClient}
	c.onEnd = func() { s.endTCP(m, src.Addr()) }
	if !s.tcpConns.add(c) { // draining is over
		client.Close()
		upstream.Close()
		s.endTCP(m, src.Addr())
		return
	}
	c.run()
}

// admitConn counts a new connection from src under the server's bound and
// src's, or returns the reason it is refused (conn_limit, per_ip_limit);
// a refused connection ends with endTCP(nil, netip.Addr{}).
func (s *Server) admitConn(src netip.Addr) string {
	if s.conns.Add(1) > s.maxConns.Load() {
		return "conn_limit"
	}
	if !s.connIPs.acquire(src) {
		return "per_ip_limit"
	}
	return ""
}

// endTCP is the bookkeeping of a connection that ended: m and src are
// those admitConn counted, nil and invalid for one it refused.
func (s *Server) endTCP(m *ruleMetrics, src netip.Addr) {
	if m != nil {
		m.active.Dec()
	}
	if src.IsValid() {
		s.connIPs.release(src)
	}
	s.conns.Add(-1)
	s.active.Done()
}

// dialOrigin connects to the first candidate origin that answers, marking
// the ones that do not as down. It tries at most three.
func (s *Server) dialOrigin(b *binding, client netip.AddrPort) (*net.TCPConn, error) {
	cands := b.rs.pool.Candidates(client.Addr())
	if len(cands) == 0 {
		b.rs.metrics.fail("no_origin")
		return nil, errors.New("no origin address resolved")
	}
	d := net.Dialer{Timeout: s.opts.DialTimeout, KeepAlive: -1, Control: sockopt.ReuseAddr}
	toa := b.rs.pass.toa
	if toa {
		d.Control = chainControl(sockopt.ReuseAddr, s.toa.Control(client))
	}
	var errs []error
	for _, addr := range cands[:min(len(cands), 3)] {
		// Not Dialer.DialTCP: given no local address it binds to an
		// unspecified one, a port search per connection that also loses
		// connect's sharing of ephemeral ports between destinations.
		c, err := d.DialContext(s.ctx, "tcp", netip.AddrPortFrom(addr, b.originPort).String())
		if err == nil {
			b.rs.pool.MarkUp(addr)
			if toa {
				return s.checkTOACarried(b, c.(*net.TCPConn))
			}
			return c.(*net.TCPConn), nil
		}
		errs = append(errs, err)
		if blameDial(b.rs, addr, err) {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// checkTOACarried makes sure the handshake carried the client address: a
// socket the eBPF program never saw (the process moved out of the attached
// cgroup, say) is closed rather than forwarded without it.
func (s *Server) checkTOACarried(b *binding, c *net.TCPConn) (*net.TCPConn, error) {
	syn, ack, err := s.toa.Carried(c)
	if err == nil && (syn || ack) {
		return c, nil
	}
	c.Close()
	b.rs.metrics.fail("toa_not_sent")
	if err == nil {
		err = errors.New("the TOA option went out on neither the SYN nor the handshake ACK")
	}
	return nil, fmt.Errorf("toa: %w", err)
}

// chainControl runs Control functions in order.
func chainControl(fns ...func(string, string, syscall.RawConn) error) func(string, string, syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		for _, fn := range fns {
			if err := fn(network, address, c); err != nil {
				return err
			}
		}
		return nil
	}
}

func writeAll(c net.Conn, b []byte) bool {
	_, err := c.Write(b)
	return err == nil
}

// unmapped returns a socket address as an AddrPort, IPv4 unmapped.
func unmapped(a net.Addr) netip.AddrPort { return wire.SocketAddrPort(a) }
