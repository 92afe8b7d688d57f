//go:build linux

package edge

import (
	"errors"
	"net/netip"

	"github.com/realip/realip/wire"
)

// passing is what a rule's IP passing mode means for the relays. It is
// decided here, once per rule when the rule is applied (newRuleState), and
// kept in its ruleState: both TCP engines (tcp.go, tcploop_linux.go), both
// UDP engines (udprelay.go, udploop_linux.go) and the origin health checks
// ask it, and nothing else in the package looks at the mode.
type passing struct {
	// tcpProxy is the PROXY protocol version of the header written to the
	// origin before a TCP connection's first payload byte; 0: none.
	tcpProxy int
	// toa: a TCP connect goes through the TOA sender, which then checks
	// that the handshake carried the client address. Only the goroutine
	// relay connects that way.
	toa bool
	// dgram is the header a UDP flow puts in front of datagrams to the
	// origin (wire.PPv2 or wire.SPP, built once per flow: flowHeader;
	// wire.None: none), on every datagram if dgramEvery, else on the
	// first one only.
	dgram      wire.Proto
	dgramEvery bool
	// sppReplies: the origin's replies start with an SPP header, cut off
	// before the client gets them (udpFlow.replyPayload).
	sppReplies bool
}

// passingFor returns what mode means; ppv2Every is
// Options.PPv2EveryDatagram.
func passingFor(mode wire.Proto, ppv2Every bool) passing {
	switch mode {
	case wire.PPv1:
		return passing{tcpProxy: 1}
	case wire.PPv2:
		return passing{tcpProxy: 2, dgram: wire.PPv2, dgramEvery: ppv2Every}
	case wire.SPP:
		return passing{dgram: wire.SPP, dgramEvery: true, sppReplies: true}
	case wire.TOA:
		return passing{toa: true}
	}
	return passing{}
}

// tcpHeader is the header written to the origin before any payload of a
// connection from src to dst; nil when none.
func (p *passing) tcpHeader(src, dst netip.AddrPort) ([]byte, error) {
	if p.tcpProxy == 0 {
		return nil, nil
	}
	return wire.AppendProxyHeader(nil, &wire.ProxyHeader{Version: p.tcpProxy, Source: src, Destination: dst}, wire.MarshalOptions{})
}

// checkHello is what a health check of an origin writes: the origin of a
// PROXY rule expects a header on every connection, and HAProxy's
// check-send-proxy sends LOCAL / UNKNOWN for the same reason.
func (p *passing) checkHello() ([]byte, error) {
	if p.tcpProxy == 0 {
		return nil, nil
	}
	return wire.AppendProxyHeader(nil, &wire.ProxyHeader{Version: p.tcpProxy, Local: true}, wire.MarshalOptions{})
}

// flowHeader appends to dst the header the flow from client to target
// puts in front of its datagrams; it must fit in the headroom.
func (p *passing) flowHeader(dst []byte, client, target netip.AddrPort) ([]byte, error) {
	switch p.dgram {
	case wire.SPP:
		return wire.AppendSPP(dst, wire.SPPHeader{Client: client, Proxy: target}), nil
	case wire.PPv2:
		hdr, err := wire.AppendProxyHeader(dst, &wire.ProxyHeader{Version: 2, Datagram: true, Source: client, Destination: target}, wire.MarshalOptions{})
		if err == nil && len(hdr) > headroom {
			err = errors.New("PROXY v2 header longer than the headroom")
		}
		return hdr, err
	}
	return dst, nil
}
