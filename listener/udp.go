package listener

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/realip/realip/wire"
)

// maxDatagram is the largest UDP payload, header included.
const maxDatagram = 65535

// Source tells where a datagram came from and how to answer it.
type Source struct {
	// Client is the real client (the socket's peer when Via is wire.None).
	Client netip.AddrPort
	// Proxy is the socket's peer: where replies are sent.
	Proxy netip.AddrPort
	// Target is the address the client sent to, as the header told it (the
	// SPP proxy field, the PROXY v2 destination); invalid without a header.
	Target netip.AddrPort
	// Via is the protocol that carried the client address.
	Via wire.Proto
}

// Addr is the net.Addr that PacketConn.ReadFrom returns: it prints as the
// client and remembers the proxy, so WriteTo routes a reply through it.
type Addr struct{ Source }

// Network returns "udp".
func (a *Addr) Network() string { return "udp" }

// String returns the client address.
func (a *Addr) String() string { return a.Client.String() }

// PacketConn is a net.PacketConn whose reads report the real client. Use
// ReadFromSource and WriteToSource on a hot path: they do not allocate when
// the inner connection is a *net.UDPConn. Reads need a buffer large enough
// for the header and the payload (64 KiB is always enough).
type PacketConn struct {
	inner net.PacketConn
	udp   *net.UDPConn // inner, when it is one
	pol   *policy
	stats counters
	flows *flowTable
	bufs  sync.Pool // *[]byte of maxDatagram bytes, for SPP replies
}

// ListenPacket announces on the local UDP address and wraps the socket.
func ListenPacket(network, address string, cfg Config) (*PacketConn, error) {
	inner, err := net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	p, err := NewPacketConn(inner, cfg)
	if err != nil {
		inner.Close()
		return nil, err
	}
	return p, nil
}

// NewPacketConn wraps inner. Protocols may hold wire.SPP and wire.PPv2 (both
// when empty).
func NewPacketConn(inner net.PacketConn, cfg Config) (*PacketConn, error) {
	pol, err := newPolicy(cfg, wire.SPP, wire.PPv2)
	if err != nil {
		return nil, err
	}
	p := &PacketConn{inner: inner, pol: pol}
	p.udp, _ = inner.(*net.UDPConn)
	p.flows = newFlowTable(pol.MaxFlows, pol.FlowIdle, &p.stats)
	p.bufs.New = func() any { b := make([]byte, maxDatagram); return &b }
	return p, nil
}

// ReadFromSource reads the next datagram that passes the policy into b and
// returns its payload length (the payload starts at b[0]) and its source.
// Datagrams that fail are dropped, counted and skipped.
func (p *PacketConn) ReadFromSource(b []byte) (int, Source, error) {
	for {
		n, peer, err := p.readRaw(b)
		if err != nil {
			return 0, Source{}, err
		}
		src, off, ok := p.inspect(b[:n], peer)
		if !ok {
			continue
		}
		if off > 0 {
			n = copy(b, b[off:n])
		}
		p.stats.accepted[src.Via].Add(1)
		return n, src, nil
	}
}

// WriteToSource sends b to the client of src through its proxy, with the
// SPP header in front when the datagram came with one. It returns the
// number of payload bytes written.
func (p *PacketConn) WriteToSource(b []byte, src Source) (int, error) {
	if src.Via != wire.SPP {
		return p.writeRaw(b, src.Proxy)
	}
	if len(b) > maxDatagram-wire.SPPHeaderLen {
		return 0, errors.New("listener: payload too long for an SPP datagram")
	}
	bp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bp)
	buf := (*bp)[:wire.SPPHeaderLen+len(b)]
	wire.PutSPP(buf, wire.SPPHeader{Client: src.Client, Proxy: src.Target})
	copy(buf[wire.SPPHeaderLen:], b)
	n, err := p.writeRaw(buf, src.Proxy)
	return max(n-wire.SPPHeaderLen, 0), err
}

// ReadFrom implements net.PacketConn; the address is an *Addr.
func (p *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, src, err := p.ReadFromSource(b)
	if err != nil {
		return 0, nil, err
	}
	return n, &Addr{src}, nil
}

// WriteTo implements net.PacketConn. An *Addr from ReadFrom routes the reply
// through its proxy; any other address is written to as is.
func (p *PacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	switch a := addr.(type) {
	case *Addr:
		return p.WriteToSource(b, a.Source)
	case *net.UDPAddr:
		return p.writeRaw(b, a.AddrPort())
	default:
		return p.inner.WriteTo(b, addr)
	}
}

// Close closes the socket.
func (p *PacketConn) Close() error { return p.inner.Close() }

// LocalAddr returns the socket's address.
func (p *PacketConn) LocalAddr() net.Addr { return p.inner.LocalAddr() }

// SetDeadline sets the read and write deadlines.
func (p *PacketConn) SetDeadline(t time.Time) error { return p.inner.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (p *PacketConn) SetReadDeadline(t time.Time) error { return p.inner.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (p *PacketConn) SetWriteDeadline(t time.Time) error { return p.inner.SetWriteDeadline(t) }

// Stats returns a snapshot of the counters.
func (p *PacketConn) Stats() Stats { return p.stats.snapshot() }

func (p *PacketConn) readRaw(b []byte) (int, netip.AddrPort, error) {
	if p.udp != nil {
		n, ap, err := p.udp.ReadFromUDPAddrPort(b)
		return n, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), err
	}
	n, addr, err := p.inner.ReadFrom(b)
	return n, addrPort(addr), err
}

func (p *PacketConn) writeRaw(b []byte, to netip.AddrPort) (int, error) {
	if p.udp != nil {
		return p.udp.WriteToUDPAddrPort(b, to)
	}
	return p.inner.WriteTo(b, net.UDPAddrFromAddrPort(to))
}

// inspect applies the policy to datagram d from peer. It returns the source
// and the offset of the payload, or ok == false after counting a drop.
func (p *PacketConn) inspect(d []byte, peer netip.AddrPort) (src Source, off int, ok bool) {
	if !p.pol.trusts(peer.Addr()) {
		p.stats.untrusted.Add(1)
		return p.inspectUntrusted(d, peer)
	}
	if p.pol.allowed[wire.SPP] && wire.IsSPP(d) {
		h, err := wire.ParseSPP(d)
		if err != nil {
			return p.drop(peer, reasonOf(err), err)
		}
		return Source{Client: h.Client, Proxy: peer, Target: h.Proxy, Via: wire.SPP}, wire.SPPHeaderLen, true
	}
	if v, _ := wire.Detect(d); v != 0 {
		return p.inspectProxyHeader(d, peer)
	}
	now := time.Now()
	if p.pol.allowed[wire.PPv2] {
		if client, target, found := p.flows.lookup(peer, now); found {
			return Source{Client: client, Proxy: peer, Target: target, Via: wire.PPv2}, 0, true
		}
	}
	if p.pol.Optional {
		return direct(peer), 0, true
	}
	if p.pol.allowed[wire.PPv2] {
		return p.drop(peer, ReasonNoFlow, errors.New("no header and no PROXY v2 flow for this proxy port"))
	}
	return p.drop(peer, ReasonMissing, errors.New("no SPP header"))
}

// inspectProxyHeader handles a datagram from a trusted peer that starts with
// a PROXY signature.
func (p *PacketConn) inspectProxyHeader(d []byte, peer netip.AddrPort) (Source, int, bool) {
	if !p.pol.allowed[wire.PPv2] {
		return p.drop(peer, ReasonProtocol, errors.New("PROXY header, not enabled on this socket"))
	}
	h, payload, err := wire.ParseProxyDatagram(d)
	if err != nil {
		return p.drop(peer, reasonOf(err), err)
	}
	off := len(d) - len(payload)
	if h.Local {
		return direct(peer), off, true
	}
	p.flows.update(peer, h.Source, h.Destination, time.Now())
	return Source{Client: h.Source, Proxy: peer, Target: h.Destination, Via: wire.PPv2}, off, true
}

// inspectUntrusted serves an untrusted peer as itself, and drops or strips
// what looks like a header from it.
func (p *PacketConn) inspectUntrusted(d []byte, peer netip.AddrPort) (Source, int, bool) {
	isSPP := p.pol.allowed[wire.SPP] && wire.IsSPP(d)
	v, _ := wire.Detect(d)
	isPP := p.pol.allowed[wire.PPv2] && v != 0
	if !isSPP && !isPP {
		return direct(peer), 0, true
	}
	if p.pol.Untrusted == UntrustedDrop {
		return p.drop(peer, ReasonUntrusted, errors.New("header from an untrusted peer"))
	}
	off := wire.SPPHeaderLen
	var err error
	if isSPP {
		_, err = wire.ParseSPP(d)
	} else {
		var payload []byte
		_, payload, err = wire.ParseProxyDatagram(d)
		off = len(d) - len(payload)
	}
	if err != nil {
		return p.drop(peer, reasonOf(err), err)
	}
	p.stats.ignoredHeaders.Add(1)
	return direct(peer), off, true
}

func direct(peer netip.AddrPort) Source {
	return Source{Client: peer, Proxy: peer, Via: wire.None}
}

func (p *PacketConn) drop(peer netip.AddrPort, reason Reason, err error) (Source, int, bool) {
	p.stats.rejected[reason].Add(1)
	level := p.pol.Logger.Warn
	if reason == ReasonUntrusted {
		level = p.pol.Logger.Debug
	}
	level("realip: datagram dropped", "peer", peer, "reason", reason.String(), "err", err)
	return Source{}, 0, false
}
