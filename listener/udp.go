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
	// flows fixes each proxy port's framing by its first datagram; nil
	// when every datagram stands alone (SPP only, or PROXY v2 only on
	// every datagram). readMu then orders reading a datagram and judging
	// it, so a flow's first datagram opens it before its second is read.
	flows  *flowTable
	readMu sync.Mutex
	bufs   sync.Pool // *[]byte of maxDatagram bytes, for SPP replies
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
// when empty); Config.Framing says how the proxies frame PROXY v2.
func NewPacketConn(inner net.PacketConn, cfg Config) (*PacketConn, error) {
	pol, err := newPolicy(cfg, wire.SPP, wire.PPv2)
	if err != nil {
		return nil, err
	}
	p := &PacketConn{inner: inner, pol: pol}
	p.udp, _ = inner.(*net.UDPConn)
	if pol.allowed[wire.PPv2] && (pol.Framing == FramingFirstDatagram || pol.allowed[wire.SPP]) {
		p.flows = newFlowTable(pol.MaxFlows, pol.FlowIdle, &p.stats)
	}
	p.bufs.New = func() any { b := make([]byte, maxDatagram); return &b }
	return p, nil
}

// ReadFromSource reads the next datagram that passes the policy into b and
// returns its payload length (the payload starts at b[0]) and its source.
// Datagrams that fail are dropped, counted and skipped.
func (p *PacketConn) ReadFromSource(b []byte) (int, Source, error) {
	for {
		n, src, off, ok, err := p.readOne(b)
		if err != nil {
			return 0, Source{}, err
		}
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
	if p.flows != nil && src.Via != wire.None {
		p.flows.touch(src.Proxy, time.Now())
	}
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

// readOne reads one datagram and judges it, under readMu when flows are
// kept: see PacketConn.flows.
func (p *PacketConn) readOne(b []byte) (n int, src Source, off int, ok bool, err error) {
	if p.flows != nil {
		p.readMu.Lock()
		defer p.readMu.Unlock()
	}
	n, peer, err := p.readRaw(b)
	if err != nil {
		return 0, Source{}, 0, false, err
	}
	src, off, ok = p.inspect(b[:n], peer)
	return n, src, off, ok, nil
}

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
