package listener

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/realip/realip/wire"
)

// udpPair is a wrapped server socket and a "proxy" socket that talks to it.
type udpPair struct {
	srv   *PacketConn
	proxy *net.UDPConn
	to    netip.AddrPort
}

func newUDPPair(t *testing.T, cfg Config) *udpPair {
	t.Helper()
	srv, err := ListenPacket("udp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	proxy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	srv.SetDeadline(time.Now().Add(waitLimit))
	proxy.SetDeadline(time.Now().Add(waitLimit))
	return &udpPair{srv: srv, proxy: proxy, to: srv.LocalAddr().(*net.UDPAddr).AddrPort()}
}

func (p *udpPair) send(t *testing.T, b []byte) {
	t.Helper()
	if _, err := p.proxy.WriteToUDPAddrPort(b, p.to); err != nil {
		t.Fatal(err)
	}
}

func (p *udpPair) read(t *testing.T) (string, Source) {
	t.Helper()
	buf := make([]byte, maxDatagram)
	n, src, err := p.srv.ReadFromSource(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n]), src
}

func (p *udpPair) proxyAddr() netip.AddrPort { return p.proxy.LocalAddr().(*net.UDPAddr).AddrPort() }

func sppDatagram(client, target netip.AddrPort, payload string) []byte {
	return append(wire.AppendSPP(nil, wire.SPPHeader{Client: client, Proxy: target}), payload...)
}

func TestSPPReadAndReply(t *testing.T) {
	for _, client := range []netip.AddrPort{client4, client6} {
		p := newUDPPair(t, Config{Trusted: loopback, Protocols: []wire.Proto{wire.SPP}})
		sent := sppDatagram(client, target4, "ping")
		p.send(t, sent)
		payload, src := p.read(t)
		want := Source{Client: client, Proxy: p.proxyAddr(), Target: target4, Via: wire.SPP}
		if payload != "ping" || src != want {
			t.Fatalf("got %q from %+v, want %q from %+v", payload, src, "ping", want)
		}
		if _, err := p.srv.WriteToSource([]byte("pong"), src); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		n, _, err := p.proxy.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		// The reply starts with the very header the request carried.
		if !bytes.Equal(buf[:wire.SPPHeaderLen], sent[:wire.SPPHeaderLen]) || string(buf[wire.SPPHeaderLen:n]) != "pong" {
			t.Fatalf("reply %x", buf[:n])
		}
	}
}

func TestNetPacketConnInterface(t *testing.T) {
	p := newUDPPair(t, Config{Trusted: loopback})
	var pc net.PacketConn = p.srv
	p.send(t, sppDatagram(client4, target4, "ping"))
	buf := make([]byte, 1500)
	n, addr, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "ping" || addr.String() != client4.String() {
		t.Fatalf("ReadFrom: %q %v %v", buf[:n], addr, err)
	}
	if _, err := pc.WriteTo([]byte("pong"), addr); err != nil {
		t.Fatal(err)
	}
	n, _, err = p.proxy.ReadFromUDPAddrPort(buf)
	if err != nil || n != wire.SPPHeaderLen+4 {
		t.Fatalf("reply of %d bytes, %v", n, err)
	}
}

func TestPPv2FirstDatagramFlows(t *testing.T) {
	p := newUDPPair(t, Config{Trusted: loopback, Protocols: []wire.Proto{wire.PPv2}, Framing: FramingFirstDatagram})
	hdr := header(t, wire.ProxyHeader{Version: 2, Datagram: true, Source: client6, Destination: target6}, true)
	p.send(t, append(hdr, "first"...))
	payload, src := p.read(t)
	if payload != "first" || src.Client != client6 || src.Via != wire.PPv2 || src.Target != target6 {
		t.Fatalf("first: %q %+v", payload, src)
	}
	// Later datagrams of the flow carry no header (EdgeOne, Cloudflare).
	p.send(t, []byte("second"))
	payload, src = p.read(t)
	if payload != "second" || src.Client != client6 {
		t.Fatalf("second: %q %+v", payload, src)
	}
	// A header in a later datagram is the client's payload: delivered as
	// it is, attributed to the flow's client, never parsed.
	forged := append(header(t, wire.ProxyHeader{Version: 2, Datagram: true, Source: client4, Destination: target4}, false), "third"...)
	p.send(t, forged)
	if payload, src = p.read(t); payload != string(forged) || src.Client != client6 {
		t.Fatalf("third: %q %+v", payload, src)
	}
	// Replies go to the proxy as they are: no header on the way back.
	if _, err := p.srv.WriteToSource([]byte("reply"), src); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	if n, _, err := p.proxy.ReadFromUDPAddrPort(buf); err != nil || string(buf[:n]) != "reply" {
		t.Fatalf("reply %q %v", buf[:n], err)
	}
	if s := p.srv.Stats(); s.FlowsLive != 1 || s.Accepted[wire.PPv2] != 3 || s.HeadersInFlow != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPPv2EveryDatagram(t *testing.T) {
	p := newUDPPair(t, Config{Trusted: loopback, Protocols: []wire.Proto{wire.PPv2}})
	hdr := func(c netip.AddrPort) []byte {
		return header(t, wire.ProxyHeader{Version: 2, Datagram: true, Source: c, Destination: target4}, false)
	}
	// The header of each datagram tells its client; a second header behind
	// it is payload.
	p.send(t, append(hdr(client4), "one"...))
	inner := append(hdr(client6), "two"...)
	p.send(t, append(hdr(client4), inner...))
	if payload, src := p.read(t); payload != "one" || src.Client != client4 {
		t.Fatalf("one: %q %+v", payload, src)
	}
	if payload, src := p.read(t); payload != string(inner) || src.Client != client4 {
		t.Fatalf("two: %q %+v", payload, src)
	}
	// A datagram without a header is dropped, whatever came before.
	p.send(t, []byte("plain"))
	p.send(t, append(hdr(client4), "three"...))
	if payload, _ := p.read(t); payload != "three" {
		t.Fatalf("three: %q", payload)
	}
	if s := p.srv.Stats(); s.Rejected[ReasonMissing] != 1 || s.FlowsLive != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestUDPDrops(t *testing.T) {
	good := sppDatagram(client4, target4, "good")
	pp := header(t, wire.ProxyHeader{Version: 2, Datagram: true, Source: client4, Destination: target4}, true)
	badCRC := bytes.Clone(pp)
	badCRC[len(badCRC)-1] ^= 1
	tests := []struct {
		name   string
		cfg    Config
		send   []byte
		reason Reason
	}{
		{"spp truncated", Config{}, good[:20], ReasonTruncated},
		{"spp unspecified client", Config{}, sppDatagram(netip.MustParseAddrPort("[::]:5"), target4, "x"), ReasonMalformed},
		{"no header, spp only", Config{Protocols: []wire.Proto{wire.SPP}}, []byte("plain"), ReasonMissing},
		{"no header, every datagram", Config{}, []byte("plain"), ReasonMissing},
		{"no header, no flow", Config{Framing: FramingFirstDatagram}, []byte("plain"), ReasonNoFlow},
		{"ppv2 bad crc", Config{}, append(badCRC, "x"...), ReasonChecksum},
		{"ppv2 truncated", Config{}, pp[:20], ReasonTruncated},
		{"ppv1 in a datagram", Config{}, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\nx"), ReasonMalformed},
		{"ppv2 on an spp socket", Config{Protocols: []wire.Proto{wire.SPP}}, append(bytes.Clone(pp), "x"...), ReasonProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Trusted = loopback
			p := newUDPPair(t, tt.cfg)
			p.send(t, tt.send)
			p.send(t, good)
			if payload, src := p.read(t); payload != "good" || src.Client != client4 {
				t.Fatalf("read %q from %+v", payload, src)
			}
			if s := p.srv.Stats(); s.Rejected[tt.reason] != 1 || s.TotalRejected() != 1 {
				t.Fatalf("rejected %v, want one %v", s.Rejected, tt.reason)
			}
		})
	}
}

func TestUDPUntrustedAndOptional(t *testing.T) {
	spp := sppDatagram(client4, target4, "data")
	tests := []struct {
		name    string
		cfg     Config
		send    []byte
		want    string // "" means dropped
		via     wire.Proto
		dropped Reason
	}{
		{"untrusted plain served", Config{Trusted: docNet}, []byte("data"), "data", wire.None, 0},
		{"untrusted spp dropped", Config{Trusted: docNet}, spp, "", 0, ReasonUntrusted},
		{"untrusted spp ignored", Config{Trusted: docNet, Untrusted: UntrustedIgnore}, spp, "data", wire.None, 0},
		{"untrusted ppv2 dropped", Config{Trusted: docNet}, append(header(t, wire.ProxyHeader{Version: 2, Datagram: true, Source: client4, Destination: target4}, false), "data"...), "", 0, ReasonUntrusted},
		{"optional plain served", Config{Trusted: loopback, Optional: true}, []byte("data"), "data", wire.None, 0},
		{"ppv2 local served direct", Config{Trusted: loopback}, append(header(t, wire.ProxyHeader{Version: 2, Local: true}, false), "data"...), "data", wire.None, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newUDPPair(t, tt.cfg)
			p.send(t, tt.send)
			if tt.want == "" {
				p.srv.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				if payload, src, err := p.srv.ReadFromSource(make([]byte, 1500)); err == nil {
					t.Fatalf("delivered %d bytes from %+v", payload, src)
				}
				if n := p.srv.Stats().Rejected[tt.dropped]; n != 1 {
					t.Fatalf("rejected[%v] = %d", tt.dropped, n)
				}
				return
			}
			payload, src := p.read(t)
			if payload != tt.want || src.Via != tt.via || src.Client != p.proxyAddr() {
				t.Fatalf("got %q %+v", payload, src)
			}
		})
	}
}

func TestFlowTableBounds(t *testing.T) {
	var c counters
	ft := newFlowTable(2, time.Minute, &c)
	t0 := time.Unix(1000, 0)
	proxy := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(1000+i))
	}
	info := func(client netip.AddrPort) flowInfo {
		return flowInfo{opened: wire.PPv2, src: Source{Client: client, Via: wire.PPv2}}
	}
	ft.open(proxy(1), info(client4), t0)
	ft.open(proxy(2), info(client6), t0)
	ft.lookup(proxy(1), t0) // proxy(2) is now the least recently used
	ft.open(proxy(3), info(client4), t0)
	if _, ok := ft.lookup(proxy(2), t0); ok {
		t.Fatal("least recently used flow was not evicted")
	}
	if _, ok := ft.lookup(proxy(1), t0); !ok {
		t.Fatal("recently used flow was evicted")
	}
	// A flow, once open, is never re-pointed.
	ft.open(proxy(1), info(client6), t0)
	if f, _ := ft.lookup(proxy(1), t0); f.src.Client != client4 {
		t.Fatalf("flow re-pointed to %v", f.src.Client)
	}
	// A reply keeps a flow alive.
	ft.touch(proxy(1), t0.Add(50*time.Second))
	if _, ok := ft.lookup(proxy(3), t0.Add(2*time.Minute)); ok {
		t.Fatal("idle flow did not expire")
	}
	ft.open(proxy(4), info(client4), t0.Add(3*time.Minute)) // expires proxy(1) at the tail
	s := c.snapshot()
	if s.FlowsLive != 1 || s.FlowsEvicted != 1 || s.FlowsExpired != 2 {
		t.Fatalf("live %d evicted %d expired %d", s.FlowsLive, s.FlowsEvicted, s.FlowsExpired)
	}
}
