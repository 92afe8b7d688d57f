package listener

import (
	"errors"
	"net/netip"
	"time"

	"github.com/realip/realip/wire"
)

// How a datagram from a trusted proxy is judged:
//
//   - With no flow table (SPP only, or PROXY v2 only with
//     FramingEveryDatagram) every datagram must start with a header of
//     the socket's protocol; what follows it is payload.
//   - Otherwise the first datagram of a proxy port opens a flow with its
//     header, and the flow fixes how the rest are read: an SPP flow and an
//     every-datagram PROXY v2 flow want their own header on every
//     datagram (the other protocol's is ReasonFlowSwitch); the datagrams
//     of a first-datagram PROXY v2 flow are payload, never parsed.
//
// Nothing a datagram carries after the header that opened its flow changes
// whom the flow belongs to.

// inspect applies the policy to datagram d from peer. It returns the source
// and the offset of the payload, or ok == false after counting a drop.
func (p *PacketConn) inspect(d []byte, peer netip.AddrPort) (src Source, off int, ok bool) {
	if !p.pol.trusts(peer.Addr()) {
		p.stats.untrusted.Add(1)
		return p.inspectUntrusted(d, peer)
	}
	if p.flows == nil {
		return p.inspectAlone(d, peer)
	}
	now := time.Now()
	if f, found := p.flows.lookup(peer, now); found {
		return p.inspectInFlow(d, peer, f)
	}
	return p.openFlow(d, peer, now)
}

// headerOf tells which enabled header d starts with: wire.SPP, wire.PPv2,
// or wire.None. A PROXY signature on a socket without PROXY v2 is
// reported as wire.PPv1 ("a PROXY header, not enabled").
func (p *PacketConn) headerOf(d []byte) wire.Proto {
	if p.pol.allowed[wire.SPP] && wire.IsSPP(d) {
		return wire.SPP
	}
	if v, _ := wire.Detect(d); v != 0 {
		if p.pol.allowed[wire.PPv2] {
			return wire.PPv2
		}
		return wire.PPv1
	}
	return wire.None
}

// inspectAlone judges a datagram on a socket that keeps no flows.
func (p *PacketConn) inspectAlone(d []byte, peer netip.AddrPort) (Source, int, bool) {
	switch p.headerOf(d) {
	case wire.SPP:
		return p.parseSPP(d, peer)
	case wire.PPv2:
		return p.parseProxy(d, peer)
	case wire.PPv1:
		return p.drop(peer, ReasonProtocol, errors.New("PROXY header, not enabled on this socket"))
	}
	return p.noHeader(peer, ReasonMissing, "no header")
}

// inspectInFlow judges a datagram of the live flow f.
func (p *PacketConn) inspectInFlow(d []byte, peer netip.AddrPort, f flowInfo) (Source, int, bool) {
	h := p.headerOf(d)
	if f.opened == wire.PPv2 && p.pol.Framing == FramingFirstDatagram {
		if h != wire.None {
			p.stats.headersInFlow.Add(1)
			p.pol.Logger.Debug("realip: header-like payload in a PROXY v2 flow, delivered as payload", "peer", peer, "client", f.src.Client)
		}
		return f.src, 0, true
	}
	switch {
	case h == f.opened && h == wire.SPP:
		return p.parseSPP(d, peer)
	case h == f.opened:
		return p.parseProxy(d, peer)
	case h != wire.None:
		return p.drop(peer, ReasonFlowSwitch, errors.New("a "+h.String()+" header in a flow opened by "+f.opened.String()))
	}
	return p.drop(peer, ReasonMissing, errors.New("no "+f.opened.String()+" header in a flow framed on every datagram"))
}

// openFlow judges the first datagram of a proxy port and, when it carries
// a header, opens the port's flow with it.
func (p *PacketConn) openFlow(d []byte, peer netip.AddrPort, now time.Time) (Source, int, bool) {
	var (
		src Source
		off int
		ok  bool
	)
	h := p.headerOf(d)
	switch h {
	case wire.SPP:
		src, off, ok = p.parseSPP(d, peer)
	case wire.PPv2:
		src, off, ok = p.parseProxy(d, peer)
	default:
		if p.pol.Framing == FramingFirstDatagram {
			return p.noHeader(peer, ReasonNoFlow, "no header and no PROXY v2 flow for this proxy port")
		}
		return p.noHeader(peer, ReasonMissing, "no header")
	}
	if ok {
		p.flows.open(peer, flowInfo{opened: h, src: src}, now)
	}
	return src, off, ok
}

// noHeader serves a headerless datagram of a trusted peer as the peer's
// own when headers are optional, and drops it for reason otherwise.
func (p *PacketConn) noHeader(peer netip.AddrPort, reason Reason, why string) (Source, int, bool) {
	if p.pol.Optional {
		return direct(peer), 0, true
	}
	return p.drop(peer, reason, errors.New(why))
}

func (p *PacketConn) parseSPP(d []byte, peer netip.AddrPort) (Source, int, bool) {
	h, err := wire.ParseSPP(d)
	if err != nil {
		return p.drop(peer, reasonOf(err), err)
	}
	return Source{Client: h.Client, Proxy: peer, Target: h.Proxy, Via: wire.SPP}, wire.SPPHeaderLen, true
}

func (p *PacketConn) parseProxy(d []byte, peer netip.AddrPort) (Source, int, bool) {
	h, payload, err := wire.ParseProxyDatagram(d)
	if err != nil {
		return p.drop(peer, reasonOf(err), err)
	}
	off := len(d) - len(payload)
	if h.Local {
		return direct(peer), off, true
	}
	return Source{Client: h.Source, Proxy: peer, Target: h.Destination, Via: wire.PPv2}, off, true
}

// inspectUntrusted serves an untrusted peer as itself, and drops or strips
// what looks like a header from it.
func (p *PacketConn) inspectUntrusted(d []byte, peer netip.AddrPort) (Source, int, bool) {
	h := p.headerOf(d)
	if h == wire.None || h == wire.PPv1 {
		return direct(peer), 0, true
	}
	if p.pol.Untrusted == UntrustedDrop {
		return p.drop(peer, ReasonUntrusted, errors.New("header from an untrusted peer"))
	}
	off := wire.SPPHeaderLen
	var err error
	if h == wire.SPP {
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
