//go:build linux

package unwrap

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// Servers of the origin, on loopback.
var (
	labEcho4   = netip.MustParseAddrPort("127.0.0.1:7007")
	labEcho6   = netip.MustParseAddrPort("[::1]:7007")
	labSilent4 = netip.MustParseAddrPort("127.0.0.1:7008")
	labClosed6 = netip.MustParseAddrPort("[::1]:7009") // nothing listens
)

// udpTrustEdge trusts the lab's edge only.
var udpTrustEdge = []netip.Prefix{netip.PrefixFrom(labEdge4, 32), netip.PrefixFrom(labEdge6, 128)}

// udpEntry is an entry of the lab's relay on port, to the echo servers.
func udpEntry(listen netip.Addr, port uint16, accept ...wire.Proto) Entry {
	return Entry{
		Network: "udp",
		Listen:  netip.AddrPortFrom(listen, port),
		To:      labEcho4,
		To6:     labEcho6,
		Accept:  accept,
		Trusted: udpTrustEdge,
	}
}

// TestUDPRelay sends datagrams of IPv4 and IPv6 clients through the relay,
// framed as SPP and as PROXY v2 (on every datagram, or on the first of a
// flow), to an echo server that knows nothing of headers, and checks what
// the server saw and what came back to the edge.
func TestUDPRelay(t *testing.T) {
	l := newUDPLab(t)
	l.startServer(t, labEcho4, true)
	l.startServer(t, labEcho6, true)
	cases := []struct {
		name    string
		proto   wire.Proto
		framing listener.Framing
		listen  netip.Addr // the relay's address, and the edge's family
		client  netip.AddrPort
		vip     netip.AddrPort
	}{
		{"spp/ipv4", wire.SPP, 0, labOrigin4, labClient4, labVIP4},
		{"spp/ipv6", wire.SPP, 0, labOrigin6, labClient6, labVIP6},
		{"spp/ipv6-client-ipv4-edge", wire.SPP, 0, labOrigin4, labClient6, labVIP6},
		{"ppv2-every/ipv4", wire.PPv2, listener.FramingEveryDatagram, labOrigin4, labClient4, labVIP4},
		{"ppv2-every/ipv6", wire.PPv2, listener.FramingEveryDatagram, labOrigin6, labClient6, labVIP6},
		{"ppv2-first/ipv4", wire.PPv2, listener.FramingFirstDatagram, labOrigin4, labClient4, labVIP4},
		{"ppv2-first/ipv6", wire.PPv2, listener.FramingFirstDatagram, labOrigin6, labClient6, labVIP6},
		{"ppv2-first/ipv4-client-ipv6-edge", wire.PPv2, listener.FramingFirstDatagram, labOrigin6, labClient4, labVIP4},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			baseline := runtime.NumGoroutine()
			e := udpEntry(tc.listen, uint16(9000+i), tc.proto)
			e.Framing = tc.framing
			r := l.relay(t, e)
			edgeAddr := labEdge4
			if tc.listen.Is6() {
				edgeAddr = labEdge6
			}
			edge := l.edgeSocket(t, edgeAddr)
			payloads := [][]byte{[]byte("first"), []byte("second"), {}, bytes.Repeat([]byte{0xa5}, 1400)}
			var toServer, toClient uint64
			for n, p := range payloads {
				d := udpFrame(t, tc.proto, tc.framing, n == 0, tc.client, tc.vip, p)
				got, from := udpExchange(t, edge, e.Listen, d)
				want := udpEchoReply(tc.client, p)
				udpCheckReply(t, tc.proto, got, from, e.Listen, tc.client, tc.vip, want)
				toServer += uint64(len(p))
				toClient += uint64(len(want))
			}
			udpWaitFor(t, "the counters", func() bool { // they grow after each send
				s := r.stats()
				return s.Replies == uint64(len(payloads)) && s.Datagrams == uint64(len(payloads))
			})
			udpCheckStats(t, r.stats(), Stats{
				FlowsOpened: 1, FlowsLive: 1, Datagrams: uint64(len(payloads)),
				Replies: uint64(len(payloads)), BytesToServer: toServer, BytesToClient: toClient,
			})
			if err := r.close(); err != nil {
				t.Errorf("close: %v", err)
			}
			if s := r.stats(); s.FlowsLive != 0 {
				t.Errorf("FlowsLive = %d after close", s.FlowsLive)
			}
			udpWaitGoroutines(t, baseline)
		})
	}
}

// udpFrame wraps payload as the edge would for proto and framing; first tells
// whether it is the first datagram of the client's flow.
func udpFrame(t *testing.T, proto wire.Proto, framing listener.Framing, first bool, client, vip netip.AddrPort, payload []byte) []byte {
	t.Helper()
	switch {
	case proto == wire.SPP:
		return udpSPP(client, vip, payload)
	case framing == listener.FramingFirstDatagram && !first:
		return bytes.Clone(payload)
	}
	return udpPPv2(t, client, vip, payload)
}

// udpCheckReply checks a reply the edge got: from the relay's port, with an
// SPP header naming the client and the address it sent to for SPP, raw
// for PROXY v2.
func udpCheckReply(t *testing.T, proto wire.Proto, got []byte, from, relay, client, vip netip.AddrPort, want []byte) {
	t.Helper()
	if from != relay {
		t.Errorf("reply from %s, want the relay's %s", from, relay)
	}
	if proto == wire.SPP {
		h, err := wire.ParseSPP(got)
		if err != nil {
			t.Fatalf("reply's SPP header: %v (%q)", err, got)
		}
		if h.Client != client || h.Proxy != vip {
			t.Errorf("reply's SPP header names client %s, proxy %s; want %s, %s", h.Client, h.Proxy, client, vip)
		}
		got = got[wire.SPPHeaderLen:]
	}
	if !bytes.Equal(got, want) {
		t.Errorf("reply payload %q, want %q", udpTrim(got), udpTrim(want))
	}
}

// udpTrim shortens long payloads in messages.
func udpTrim(b []byte) []byte { return b[:min(len(b), 80)] }

// udpCheckStats compares the relay's own counters with want (Listener and
// the counters want leaves at zero are compared too).
func udpCheckStats(t *testing.T, got, want Stats) {
	t.Helper()
	got.Listener = listener.Stats{}
	if got != want {
		t.Errorf("stats:\n got %+v\nwant %+v", got, want)
	}
}

// TestUDPFirstDatagramNoForgery: in a flow framed by PROXY v2 on its first
// datagram, a later payload that starts with a PROXY v2 header naming
// another client reaches the server verbatim, from the first client.
func TestUDPFirstDatagramNoForgery(t *testing.T) {
	l := newUDPLab(t)
	echo := l.startServer(t, labEcho4, true)
	e := udpEntry(labOrigin4, 9100, wire.PPv2)
	e.Framing = listener.FramingFirstDatagram
	r := l.relay(t, e)
	edge := l.edgeSocket(t, labEdge4)
	open := udpPPv2(t, labClient4, labVIP4, []byte("hello"))
	if got, _ := udpExchange(t, edge, e.Listen, open); !bytes.Equal(got, udpEchoReply(labClient4, []byte("hello"))) {
		t.Fatalf("first reply %q", got)
	}
	forged := udpPPv2(t, netip.MustParseAddrPort("203.0.113.66:6666"), labVIP4, []byte("i am someone else"))
	got, _ := udpExchange(t, edge, e.Listen, forged)
	if want := udpEchoReply(labClient4, forged); !bytes.Equal(got, want) {
		t.Errorf("reply to the forged header %q, want %q", got, want)
	}
	seen := echo.received()
	if len(seen) != 2 || seen[1].peer != labClient4 || !bytes.Equal(seen[1].payload, forged) {
		t.Errorf("server got %+v, want the forged datagram verbatim from %s", seen, labClient4)
	}
	s := r.stats()
	if s.Listener.HeadersInFlow != 1 || s.FlowsOpened != 1 {
		t.Errorf("HeadersInFlow = %d, FlowsOpened = %d; want 1, 1", s.Listener.HeadersInFlow, s.FlowsOpened)
	}
}

// TestUDPUntrusted: a header from a peer outside Trusted is dropped and
// counted (UntrustedDrop), or stripped with the peer served as itself
// (UntrustedIgnore); it is never honoured.
func TestUDPUntrusted(t *testing.T) {
	l := newUDPLab(t)
	echo := l.startServer(t, labEcho4, true)
	cases := []struct {
		name   string
		action listener.UntrustedAction
	}{
		{"drop", listener.UntrustedDrop},
		{"ignore", listener.UntrustedIgnore},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := udpEntry(labOrigin4, uint16(9200+i), wire.SPP)
			e.Trusted = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
			e.Untrusted = tc.action
			r := l.relay(t, e)
			edge := l.edgeSocket(t, labEdge4)
			before := len(echo.received())
			d := udpSPP(labClient4, labVIP4, []byte("forged"))
			if tc.action == listener.UntrustedDrop {
				udpSend(t, edge, e.Listen, d)
				udpWaitFor(t, "untrusted drop", func() bool {
					return r.stats().Listener.Rejected[listener.ReasonUntrusted] == 1
				})
				if s := r.stats(); s.FlowsOpened != 0 || s.Datagrams != 0 || len(echo.received()) != before {
					t.Errorf("dropped datagram reached the server: %+v", s)
				}
				return
			}
			peer := netip.AddrPortFrom(labEdge4, edge.LocalAddr().(*net.UDPAddr).AddrPort().Port())
			got, _ := udpExchange(t, edge, e.Listen, d)
			if want := udpEchoReply(peer, []byte("forged")); !bytes.Equal(got, want) {
				t.Errorf("reply %q, want %q (the edge served as itself, header stripped, no SPP in the reply)", got, want)
			}
			if s := r.stats(); s.Listener.IgnoredHeaders != 1 || s.Listener.Untrusted != 1 {
				t.Errorf("listener stats %+v, want one ignored untrusted header", s.Listener)
			}
		})
	}
}

// TestUDPMalformed: malformed headers are dropped and counted, and the
// relay keeps serving.
func TestUDPMalformed(t *testing.T) {
	l := newUDPLab(t)
	l.startServer(t, labEcho4, true)
	cases := []struct {
		name   string
		proto  wire.Proto
		d      []byte
		reason listener.Reason
	}{
		{"spp-truncated", wire.SPP, udpSPP(labClient4, labVIP4, nil)[:20], listener.ReasonTruncated},
		{"spp-no-client", wire.SPP, udpSPP(netip.AddrPortFrom(netip.IPv4Unspecified(), 0), labVIP4, []byte("x")), listener.ReasonMalformed},
		{"spp-no-header", wire.SPP, []byte("plain payload"), listener.ReasonMissing},
		{"ppv2-truncated", wire.PPv2, udpPPv2(t, labClient4, labVIP4, nil)[:20], listener.ReasonTruncated},
		{"ppv2-bad-version", wire.PPv2, udpBadVersion(udpPPv2(t, labClient4, labVIP4, []byte("x"))), listener.ReasonMalformed},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := udpEntry(labOrigin4, uint16(9300+i), tc.proto)
			r := l.relay(t, e)
			edge := l.edgeSocket(t, labEdge4)
			udpSend(t, edge, e.Listen, tc.d)
			udpWaitFor(t, "the drop counted as "+tc.reason.String(), func() bool {
				return r.stats().Listener.Rejected[tc.reason] == 1
			})
			good := udpFrame(t, tc.proto, 0, true, labClient4, labVIP4, []byte("still here"))
			got, from := udpExchange(t, edge, e.Listen, good)
			udpCheckReply(t, tc.proto, got, from, e.Listen, labClient4, labVIP4, udpEchoReply(labClient4, []byte("still here")))
			udpWaitFor(t, "one flow, one datagram", func() bool {
				s := r.stats()
				return s.FlowsOpened == 1 && s.Datagrams == 1
			})
		})
	}
}

// udpBadVersion sets a PROXY v2 header's version nibble to 3.
func udpBadVersion(d []byte) []byte {
	d[12] = 0x31
	return d
}

// TestUDPFlood: more new clients than MaxFlows evict the least recently
// active flows; the table never grows beyond the limit and no socket or
// goroutine outlives the relay.
func TestUDPFlood(t *testing.T) {
	const maxFlows, extra = 8, 24
	l := newUDPLab(t)
	l.startServer(t, labEcho4, true)
	edge, edge2 := l.edgeSocket(t, labEdge4), l.edgeSocket(t, labEdge4)
	baseGo, baseFDs := runtime.NumGoroutine(), udpOpenFDs(t)
	e := udpEntry(labOrigin4, 9400, wire.SPP)
	e.MaxFlows = maxFlows
	r := l.relay(t, e)
	clients := make([]netip.AddrPort, maxFlows+extra)
	for i := range clients {
		clients[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + i)}), uint16(20000+i))
		udpSend(t, edge, e.Listen, udpSPP(clients[i], labVIP4, []byte(fmt.Sprint("flood ", i))))
	}
	udpWaitFor(t, "every flood client's flow", func() bool { return r.stats().FlowsOpened == uint64(len(clients)) })
	s := r.stats()
	if s.FlowsLive > maxFlows || s.FlowsEvicted < extra {
		t.Errorf("FlowsLive = %d (max %d), FlowsEvicted = %d (want >= %d)", s.FlowsLive, maxFlows, s.FlowsEvicted, extra)
	}
	// Evicted flows' sockets are closed once their readers have woken up.
	udpWaitFor(t, "at most one fd per live flow and the listening sockets", func() bool {
		return udpOpenFDs(t) <= baseFDs+maxFlows+len(r.pcs)
	})
	// The latest client keeps its flow; the first one was evicted. The
	// flood's replies wait on the first edge socket, or follow the latest
	// client's flow to the new one (replies go where the latest datagram
	// came from): skip them.
	last := clients[len(clients)-1]
	udpSend(t, edge2, e.Listen, udpSPP(last, labVIP4, []byte("again")))
	udpAwaitReply(t, edge2, udpEchoReply(last, []byte("again")))
	if s := r.stats(); s.FlowsOpened != uint64(len(clients)) {
		t.Errorf("the latest client's flow was not kept: FlowsOpened = %d", s.FlowsOpened)
	}
	udpSend(t, edge2, e.Listen, udpSPP(clients[0], labVIP4, []byte("back")))
	udpAwaitReply(t, edge2, udpEchoReply(clients[0], []byte("back")))
	if s := r.stats(); s.FlowsOpened != uint64(len(clients))+1 || s.FlowsLive > maxFlows {
		t.Errorf("after the first client came back: %+v", s)
	}
	if err := r.close(); err != nil {
		t.Errorf("close: %v", err)
	}
	udpWaitGoroutines(t, baseGo)
	if fds := udpOpenFDs(t); fds != baseFDs {
		t.Errorf("%d fds open after close, %d before the relay", fds, baseFDs)
	}
}

// udpAwaitReply reads SPP replies from c until one carries want.
func udpAwaitReply(t *testing.T, c *net.UDPConn, want []byte) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(udpWaitBound)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, maxUDPPayload)
	for {
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("waiting for the reply %q: %v", want, err)
		}
		if n >= wire.SPPHeaderLen && bytes.Equal(buf[wire.SPPHeaderLen:n], want) {
			return
		}
	}
}

// TestUDPIdleExpiry: a flow with no datagram either way for Idle is
// closed; the client's next datagram opens a new one.
func TestUDPIdleExpiry(t *testing.T) {
	l := newUDPLab(t)
	l.startServer(t, labEcho6, true)
	e := udpEntry(labOrigin6, 9500, wire.SPP)
	e.Idle = 100 * time.Millisecond
	r := l.relay(t, e)
	edge := l.edgeSocket(t, labEdge6)
	for round := 1; round <= 2; round++ {
		got, _ := udpExchange(t, edge, e.Listen, udpSPP(labClient6, labVIP6, []byte("ping")))
		if want := udpEchoReply(labClient6, []byte("ping")); !bytes.Equal(got[wire.SPPHeaderLen:], want) {
			t.Errorf("round %d: reply %q, want %q", round, got, want)
		}
		udpWaitFor(t, "the flow's expiry", func() bool {
			s := r.stats()
			return s.FlowsExpired == uint64(round) && s.FlowsLive == 0
		})
		if s := r.stats(); s.FlowsOpened != uint64(round) {
			t.Errorf("round %d: FlowsOpened = %d", round, s.FlowsOpened)
		}
	}
}

// TestUDPServerSilent: a server that never answers and a port nothing
// listens on (ICMP port unreachable) break nothing: datagrams are still
// relayed, the flows expire, every goroutine ends.
func TestUDPServerSilent(t *testing.T) {
	l := newUDPLab(t)
	silent := l.startServer(t, labSilent4, false)
	edge := l.edgeSocket(t, labEdge4)
	baseline := runtime.NumGoroutine()
	e := udpEntry(labOrigin4, 9600, wire.SPP)
	e.To, e.To6 = labSilent4, labClosed6
	e.Idle = 100 * time.Millisecond
	r := l.relay(t, e)
	const n = 3
	for i := range n {
		udpSend(t, edge, e.Listen, udpSPP(labClient4, labVIP4, []byte(fmt.Sprint("v4 ", i))))
		udpSend(t, edge, e.Listen, udpSPP(labClient6, labVIP6, []byte(fmt.Sprint("v6 ", i))))
	}
	udpWaitFor(t, "the silent server's datagrams", func() bool { return len(silent.received()) == n })
	for _, d := range silent.received() {
		if d.peer != labClient4 {
			t.Errorf("silent server saw %s, want %s", d.peer, labClient4)
		}
	}
	udpWaitFor(t, "both flows' expiry", func() bool {
		s := r.stats()
		return s.FlowsExpired == 2 && s.FlowsLive == 0
	})
	s := r.stats()
	if s.Replies != 0 || s.FlowsOpened != 2 || s.Listener.Accepted[wire.SPP] != 2*n {
		t.Errorf("stats %+v", s)
	}
	if err := r.close(); err != nil {
		t.Errorf("close: %v", err)
	}
	udpWaitGoroutines(t, baseline)
}

// TestUDPStart runs the public API in the origin: a client of a family
// without a target is refused and counted, and Close ends every goroutine.
func TestUDPStart(t *testing.T) {
	l := newUDPLab(t)
	edge := l.edgeSocket(t, labEdge4)
	baseline := runtime.NumGoroutine()
	e := udpEntry(labOrigin4, 9700, wire.SPP)
	e.To6 = netip.AddrPort{}
	var r *Relay
	err := l.origin.Do(func() (err error) {
		r, err = Start(e, Options{})
		return err
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if got := r.Entry(); got.MaxFlows != DefaultMaxFlows || got.Idle != DefaultIdle {
		t.Errorf("Entry() = %+v, want the defaults filled in", got)
	}
	udpSend(t, edge, e.Listen, udpSPP(labClient6, labVIP6, []byte("no IPv6 server")))
	udpWaitFor(t, "NoTarget", func() bool { return r.Stats().NoTarget == 1 })
	if s := r.Stats(); s.FlowsOpened != 0 || s.DialErrors != 0 {
		t.Errorf("stats %+v", s)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	udpWaitGoroutines(t, baseline)
}

// TestUDPForwardAllocs: a datagram of a live flow goes to the server
// without a heap allocation. The server is a bare socket read only after
// the measure: AllocsPerRun counts the allocations of every goroutine.
func TestUDPForwardAllocs(t *testing.T) {
	const runs = 100
	l := newUDPLab(t)
	var sink *net.UDPConn
	err := l.origin.Do(func() (err error) {
		sink, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(labSilent4))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	e := udpEntry(labOrigin4, 9800, wire.SPP)
	e.To = labSilent4
	r := l.relay(t, e)
	edge := l.edgeSocket(t, labEdge4)
	udpSend(t, edge, e.Listen, udpSPP(labClient4, labVIP4, []byte("open")))
	udpWaitFor(t, "the flow", func() bool { return r.stats().Datagrams == 1 })
	src := listener.Source{Client: labClient4, Proxy: netip.AddrPortFrom(labEdge4, 4000), Target: labVIP4, Via: wire.SPP}
	payload := []byte("payload")
	rt := route{src: src, pc: r.pcs[0]}
	if n := testing.AllocsPerRun(runs, func() { r.forward(payload, rt) }); n != 0 {
		t.Errorf("%v allocations per datagram", n)
	}
	if err := sink.SetReadDeadline(time.Now().Add(udpWaitBound)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, maxUDPPayload)
	for i := range runs + 2 { // the first, AllocsPerRun's warm-up, the runs
		if _, peer, err := sink.ReadFromUDPAddrPort(buf); err != nil || peer != labClient4 {
			t.Fatalf("datagram %d at the server: from %s, %v", i, peer, err)
		}
	}
}

// TestUDPReadLoops runs a relay with four listening sockets on one address
// and sixteen edge ports, each the edge's socket for a client of its own,
// twice (a new edge port for the same client the second time), with PROXY
// v2 on the first datagram of a flow only: the framing each
// listening socket fixes for the edge ports it reads holds for every
// datagram of those ports, replies leave from the relay's address for
// the edge port they belong to, and the counters of all sockets add up.
func TestUDPReadLoops(t *testing.T) {
	const loops, ports = 4, 16
	l := newUDPLab(t)
	l.startServer(t, labEcho4, true)
	e := udpEntry(labOrigin4, 9900, wire.PPv2)
	e.Framing = listener.FramingFirstDatagram
	e = e.withDefaults()
	r := l.relayLoops(t, e, loops)
	for round := range 2 {
		for i := range ports {
			edge := l.edgeSocket(t, labEdge4)
			client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i)}), uint16(30000+i))
			for n, p := range [][]byte{[]byte(fmt.Sprint("first ", round)), []byte("second")} {
				d := udpFrame(t, wire.PPv2, e.Framing, n == 0, client, labVIP4, p)
				got, from := udpExchange(t, edge, e.Listen, d)
				udpCheckReply(t, wire.PPv2, got, from, e.Listen, client, labVIP4, udpEchoReply(client, p))
			}
		}
	}
	busy := 0
	for _, pc := range r.pcs {
		if pc.Stats().TotalAccepted() > 0 {
			busy++
		}
	}
	if busy < 2 {
		t.Errorf("%d of %d sockets read the datagrams of %d edge ports", busy, loops, 2*ports)
	}
	s := r.stats()
	// Each round's edge ports are new to the listener, not their clients
	// to the relay.
	if s.Listener.Accepted[wire.PPv2] != 4*ports || s.Listener.TotalRejected() != 0 ||
		s.Listener.FlowsLive != 2*ports || s.FlowsOpened != ports {
		t.Errorf("stats %+v", s)
	}
}

// TestAddListenerStats checks that every counter of two sockets is added:
// a field added to listener.Stats and forgotten here fails.
func TestAddListenerStats(t *testing.T) {
	var one listener.Stats
	setAll(reflect.ValueOf(&one).Elem(), 1)
	sum := reflect.ValueOf(addListenerStats(one, one))
	var check func(v reflect.Value, path string)
	check = func(v reflect.Value, path string) {
		switch v.Kind() {
		case reflect.Struct:
			for i := range v.NumField() {
				check(v.Field(i), path+"."+v.Type().Field(i).Name)
			}
		case reflect.Array:
			for i := range v.Len() {
				check(v.Index(i), fmt.Sprintf("%s[%d]", path, i))
			}
		case reflect.Int64:
			if v.Int() != 2 {
				t.Errorf("%s = %d, want 2", path, v.Int())
			}
		case reflect.Uint64:
			if v.Uint() != 2 {
				t.Errorf("%s = %d, want 2", path, v.Uint())
			}
		default:
			t.Errorf("%s: a %s, which the test does not know", path, v.Kind())
		}
	}
	check(sum, "Stats")
}

// setAll sets every integer in v to n.
func setAll(v reflect.Value, n int) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			setAll(v.Field(i), n)
		}
	case reflect.Array:
		for i := range v.Len() {
			setAll(v.Index(i), n)
		}
	case reflect.Int64:
		v.SetInt(int64(n))
	case reflect.Uint64:
		v.SetUint(uint64(n))
	}
}
