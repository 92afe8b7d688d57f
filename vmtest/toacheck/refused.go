//go:build linux

package main

// Clients no real peer can have: both receivers refuse an option whose port
// is 0, or whose client is 0.0.0.0, 255.255.255.255, in 224.0.0.0/4, ::,
// or in ff00::/8 (an IPv4-mapped IPv6 client judged as its IPv4 address),
// and count it in syn_recv_sock_bad_option; the connection goes on with
// the edge's address. The controls, sent the same way, sit next to those
// ranges and must be honoured (those with an IPv6 client reach an IPv4
// socket, where the eBPF receiver cannot answer them: rows in cases.go).

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/realip/realip/internal/toacraft"
	"github.com/realip/realip/vmtest/recvtest"
)

// craftCase is one connection with a crafted option.
type craftCase struct {
	kind, length uint8
	client       string
}

var refusedCases = []craftCase{
	{200, 8, "0.0.0.0:0"},
	{200, 8, "224.0.0.1:4242"},
	{200, 8, "255.255.255.255:80"},
	{200, 8, "1.2.3.4:0"},
	{200, 20, "[::]:1"},
	{253, 20, "[ff02::1]:80"},
	{254, 20, "[::ffff:0.0.0.0]:80"},
	{254, 20, "[::ffff:224.0.0.1]:80"},
	{253, 20, "[2001:db8::1]:0"},
}

var honouredCases = []craftCase{
	{200, 8, "192.0.2.90:9000"},
	{200, 8, "223.255.255.255:1"},
	{254, 8, "240.0.0.1:80"},
	{254, 20, "[::ffff:192.0.2.91]:9001"},
	{253, 20, "[::1]:443"},
	{200, 20, "[feff::1]:80"},
}

// checkRefused sends every refused and honoured case over IPv4 loopback
// (a trusted source) with the crafter.
func (s *suite) checkRefused() {
	before := s.stat("syn_recv_sock_bad_option")
	for _, tc := range refusedCases {
		s.craftOne(tc, false)
	}
	bad := s.stat("syn_recv_sock_bad_option") - before
	s.c.check("refused", bad == uint64(len(refusedCases)), "impossible clients: syn_recv_sock_bad_option rose by %d for %d options sent", bad, len(refusedCases))
	for _, tc := range honouredCases {
		s.craftOne(tc, true)
	}
}

// craftOne makes one connection carrying tc's option and checks what the
// accepted side reports and which counter moved: syn_recv_sock_toa when
// honoured, else syn_recv_sock_bad_option, by one either way.
func (s *suite) craftOne(tc craftCase, honoured bool) {
	name := fmt.Sprintf("kind %d len %d %s", tc.kind, tc.length, tc.client)
	id, verdict := "refused", "refused"
	if honoured {
		id, verdict = "controls", "honoured"
	}
	// The crafter dials IPv4 loopback: a control with an IPv6 client (a
	// v4-mapped one too: its option has length 20) is an IPv6 client on
	// an IPv4 socket, row controls-v6-client-v4-socket.
	nat64 := honoured && tc.length == 20
	if nat64 {
		id = "controls-v6-client-v4-socket"
	}
	client := netip.MustParseAddrPort(tc.client)
	opt, err := toacraft.Option(tc.kind, tc.length, client)
	if err != nil {
		s.c.check(id, false, "%s: %v", name, err)
		return
	}
	c0 := s.counters()
	in, out, err := craftedConn(s.cr, opt)
	if err != nil {
		s.c.check(id, false, "%s: %v", name, err)
		return
	}
	defer in.Close()
	defer out.Close()
	syn, later, werr := s.cr.Written(out.(*net.TCPConn))
	accepted := netip.MustParseAddrPort(in.RemoteAddr().String())
	peer, perr := getpeername(in)
	c1 := s.counters()
	toa, bad, mis := c1["syn_recv_sock_toa"]-c0["syn_recv_sock_toa"], c1["syn_recv_sock_bad_option"]-c0["syn_recv_sock_bad_option"], c1["getname_toa_mismatch"]-c0["getname_toa_mismatch"]
	want := netip.MustParseAddrPort(out.LocalAddr().String()) // the edge
	wantToa, wantBad, wantMis := uint64(0), uint64(1), uint64(0)
	switch {
	case nat64 && s.c.kind == recvtest.KindEBPF:
		wantToa, wantBad, wantMis = 1, 0, 2 // kept, but the hook cannot answer it
	case honoured:
		want, wantToa, wantBad = client, 1, 0
	}
	same := func(a netip.AddrPort) bool { return a.Addr().Unmap() == want.Addr().Unmap() && a.Port() == want.Port() }
	eerr := echo(in, out)
	s.c.check(id, werr == nil && syn && later && same(accepted) && perr == nil && same(peer) && toa == wantToa && bad == wantBad && mis == wantMis && eerr == nil,
		"%s %s: accept %s, getpeername %s (%v), want %s; syn_recv_sock_toa +%d, _bad_option +%d, getname_toa_mismatch +%d; sent on SYN %v, after %v (%v); data both ways (%v)",
		verdict, name, accepted, peer, perr, want, toa, bad, mis, syn, later, werr, eerr)
}

// counters reads every counter of the receiver (nil when they cannot be
// read, which fails a check of its own).
func (s *suite) counters() map[string]uint64 {
	m, err := s.r.Counters()
	if err != nil {
		s.c.check("counters", false, "%v", err)
	}
	return m
}

// craftedConn dials a fresh IPv4 loopback listener with opt crafted on
// and returns both ends.
func craftedConn(cr *toacraft.Crafter, opt []byte) (in, out net.Conn, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	d := net.Dialer{Control: cr.Control(opt), Timeout: 5 * time.Second}
	out, err = d.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, fmt.Errorf("dial: %w", err)
	}
	in, err = acceptWithin(ln, 5*time.Second)
	if err != nil {
		out.Close()
		return nil, nil, fmt.Errorf("accept: %w", err)
	}
	return in, out, nil
}

// echo shows the connection carries data both ways.
func echo(in, out net.Conn) error {
	deadline := time.Now().Add(5 * time.Second)
	in.SetDeadline(deadline)
	out.SetDeadline(deadline)
	b := []byte{'x'}
	for _, p := range [][2]net.Conn{{out, in}, {in, out}} {
		if _, err := p[0].Write(b); err != nil {
			return err
		}
		if _, err := p[1].Read(b); err != nil {
			return err
		}
	}
	return nil
}
