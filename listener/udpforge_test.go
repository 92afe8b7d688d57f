package listener

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/realip/realip/wire"
)

// The attack of issue 18: a client behind a trusted edge puts an SPP or
// PROXY v2 header at the start of its own payload. What the edge adds is
// modelled exactly: framing decides whether the edge puts its header on
// every datagram or on the first of a flow only.

var (
	forged4 = netip.MustParseAddrPort("203.0.113.66:4444")
	forged6 = netip.MustParseAddrPort("[2001:db8:66::66]:4444")
)

func ppv2Hdr(t testing.TB, client netip.AddrPort) []byte {
	dst := target4
	if client.Addr().Is6() {
		dst = target6
	}
	return header(t, wire.ProxyHeader{Version: 2, Datagram: true, Source: client, Destination: dst}, false)
}

func sppHdr(client netip.AddrPort) []byte {
	return wire.AppendSPP(nil, wire.SPPHeader{Client: client, Proxy: target4})
}

// edgeFrames returns what an edge sends for the client payloads: its own
// header (proto) for real on the first datagram, and on every later one
// unless first-datagram framing.
func edgeFrames(t testing.TB, proto wire.Proto, framing Framing, real netip.AddrPort, payloads [][]byte) [][]byte {
	out := make([][]byte, len(payloads))
	for i, pl := range payloads {
		switch {
		case proto == wire.SPP:
			out[i] = append(sppHdr(real), pl...)
		case i == 0 || framing == FramingEveryDatagram:
			out[i] = append(ppv2Hdr(t, real), pl...)
		default:
			out[i] = pl
		}
	}
	return out
}

func TestUDPHeaderInjection(t *testing.T) {
	type testCase struct {
		name    string
		protos  []wire.Proto
		framing Framing
		edge    wire.Proto // what the edge speaks
	}
	var cases []testCase
	for _, protos := range [][]wire.Proto{{wire.PPv2}, {wire.SPP, wire.PPv2}} {
		for _, framing := range []Framing{FramingEveryDatagram, FramingFirstDatagram} {
			cases = append(cases, testCase{"ppv2 " + framing.String(), protos, framing, wire.PPv2})
		}
	}
	cases = append(cases,
		testCase{"spp", []wire.Proto{wire.SPP}, FramingEveryDatagram, wire.SPP},
		testCase{"spp on a both socket", nil, FramingFirstDatagram, wire.SPP})
	for _, tc := range cases {
		for _, real := range []netip.AddrPort{client4, client6} {
			forged := forged4
			if real.Addr().Is6() {
				forged = forged6
			}
			t.Run(tc.name+" "+real.String(), func(t *testing.T) {
				p, err := NewPacketConn(nil, Config{Trusted: loopback, Protocols: tc.protos, Framing: tc.framing})
				if err != nil {
					t.Fatal(err)
				}
				payloads := [][]byte{
					[]byte("first"),
					append(ppv2Hdr(t, forged), "x"...),
					[]byte("plain-after"),
					append(sppHdr(forged), "y"...),
					append(ppv2Hdr(t, forged), "z"...),
				}
				edgeProxy := netip.MustParseAddrPort("127.0.0.1:53460")
				delivered := 0
				for i, d := range edgeFrames(t, tc.edge, tc.framing, real, payloads) {
					src, off, ok := p.inspect(d, edgeProxy)
					if !ok {
						continue
					}
					delivered++
					if src.Client != real {
						t.Errorf("datagram %d attributed to %v, want %v", i, src.Client, real)
					}
					if got := string(d[off:]); got != string(payloads[i]) {
						t.Errorf("datagram %d: payload %q, want %q", i, got, payloads[i])
					}
				}
				if delivered != len(payloads) {
					t.Errorf("delivered %d of %d datagrams (stats %+v)", delivered, len(payloads), p.Stats())
				}
			})
		}
	}
}

// A flow keeps the protocol that opened it: on a socket of both, a bare
// header of the other protocol (an edge that lost its framing, or a forger
// where the edge frames the first datagram only) is dropped and counted.
func TestUDPFlowKeepsItsProtocol(t *testing.T) {
	edgeProxy := netip.MustParseAddrPort("127.0.0.1:53460")
	tests := []struct {
		name          string
		framing       Framing
		first, second []byte
		secondClient  netip.AddrPort // invalid: dropped
		reason        Reason
		headersInFlow uint64
	}{
		{"ppv2 every, then spp", FramingEveryDatagram, append(ppv2Hdr(t, client4), 'a'), append(sppHdr(forged4), 'b'), netip.AddrPort{}, ReasonFlowSwitch, 0},
		{"spp, then ppv2", FramingEveryDatagram, append(sppHdr(client4), 'a'), append(ppv2Hdr(t, forged4), 'b'), netip.AddrPort{}, ReasonFlowSwitch, 0},
		{"spp first-framing, then ppv2", FramingFirstDatagram, append(sppHdr(client6), 'a'), append(ppv2Hdr(t, forged6), 'b'), netip.AddrPort{}, ReasonFlowSwitch, 0},
		{"spp, then nothing", FramingFirstDatagram, append(sppHdr(client4), 'a'), []byte("b"), netip.AddrPort{}, ReasonMissing, 0},
		{"ppv2 first, then spp", FramingFirstDatagram, append(ppv2Hdr(t, client4), 'a'), append(sppHdr(forged4), 'b'), client4, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPacketConn(nil, Config{Trusted: loopback, Framing: tt.framing})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, ok := p.inspect(tt.first, edgeProxy); !ok {
				t.Fatal("first datagram dropped")
			}
			src, _, ok := p.inspect(tt.second, edgeProxy)
			s := p.Stats()
			switch {
			case !tt.secondClient.IsValid() && ok:
				t.Fatalf("second datagram delivered from %v", src.Client)
			case !tt.secondClient.IsValid() && s.Rejected[tt.reason] != 1:
				t.Fatalf("rejected %v, want one %v", s.Rejected, tt.reason)
			case tt.secondClient.IsValid() && (!ok || src.Client != tt.secondClient):
				t.Fatalf("second datagram: ok %v from %v", ok, src.Client)
			case s.HeadersInFlow != tt.headersInFlow:
				t.Fatalf("HeadersInFlow %d, want %d", s.HeadersInFlow, tt.headersInFlow)
			}
		})
	}
}

// FuzzUDPFlowAttribution sends an edge's datagrams built around fuzzed
// client payloads and checks that no payload byte ever changes whom a
// datagram is attributed to. The first byte picks the edge's protocol and
// framing and the socket's protocols; the rest is split into payloads at
// each 2-byte length prefix.
func FuzzUDPFlowAttribution(f *testing.F) {
	f.Add([]byte{0, 0, 5, 'f', 'i', 'r', 's', 't'})
	f.Add(append([]byte{1, 0, 1, 'a', 0, 40}, append(ppv2Hdr(f, forged4), "x"...)...))
	f.Add(append([]byte{3, 0, 1, 'a', 0, 42}, append(sppHdr(forged6), "yyyy"...)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		mode, rest := data[0], data[1:]
		proto, framing := wire.PPv2, Framing(mode&1)
		if mode&2 != 0 {
			proto = wire.SPP
		}
		var protos []wire.Proto // both
		if mode&4 != 0 {
			protos = []wire.Proto{proto}
		}
		p, err := NewPacketConn(nil, Config{Trusted: loopback, Protocols: protos, Framing: framing, MaxFlows: 4})
		if err != nil {
			t.Fatal(err)
		}
		real := client4
		if mode&8 != 0 {
			real = client6
		}
		payloads := splitPayloads(rest)
		edgeProxy := netip.MustParseAddrPort("127.0.0.1:53460")
		for i, d := range edgeFrames(t, proto, framing, real, payloads) {
			src, off, ok := p.inspect(d, edgeProxy)
			if !ok {
				continue
			}
			if src.Client != real || string(d[off:]) != string(payloads[i]) {
				t.Fatalf("datagram %d (%q): client %v payload %q, want %v %q", i, d, src.Client, d[off:], real, payloads[i])
			}
		}
	})
}

// splitPayloads cuts b into payloads, each preceded by a big-endian length
// (cut short at the end); at most 16.
func splitPayloads(b []byte) [][]byte {
	var out [][]byte
	for len(b) >= 2 && len(out) < 16 {
		n := min(int(binary.BigEndian.Uint16(b)), len(b)-2)
		out = append(out, b[2:2+n])
		b = b[2+n:]
	}
	return out
}
