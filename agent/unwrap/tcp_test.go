//go:build linux

package unwrap

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/rawsys"
	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// The relay's port on the origin in every TCP test.
const tcpRelayPort = 7000

// TestTCPRelay relays PROXY v1 and v2 connections of IPv4 and IPv6 clients,
// over IPv4 and IPv6 between edge and origin, to servers that see the
// client's own address and port in accept(); bytes arrive intact both
// ways, and the edge's half-close reaches the server, which still answers.
func TestTCPRelay(t *testing.T) {
	l := newTCPLab(t)
	listen4 := netip.AddrPortFrom(labOrigin4, tcpRelayPort)
	listen6 := netip.AddrPortFrom(labOrigin6, tcpRelayPort)
	relay4 := startTCPRelayIn(t, l.origin, l.tcpEntry(listen4))
	relay6 := startTCPRelayIn(t, l.origin, l.tcpEntry(listen6))

	// Every case has a client port of its own: the relay's side of a
	// finished connection stays in TIME_WAIT for a while.
	cases := []struct {
		name    string
		v6Edge  bool
		version int
		client  netip.AddrPort
		size    int
	}{
		{"ppv1 ipv4", false, 1, netip.AddrPortFrom(tcpClient4, 40001), 1000},
		{"ppv2 ipv4 8MiB", false, 2, netip.AddrPortFrom(tcpClient4, 40002), 8 << 20},
		{"ppv2 ipv4 no payload", false, 2, netip.AddrPortFrom(tcpClient4, 40003), 0},
		{"ppv1 ipv6", true, 1, netip.AddrPortFrom(tcpClient6, 40004), 1000},
		{"ppv2 ipv6 8MiB", true, 2, netip.AddrPortFrom(tcpClient6, 40005), 8 << 20},
		{"ppv2 ipv4 client over ipv6 edge", true, 2, netip.AddrPortFrom(tcpClient4, 40006), 64 << 10},
		{"ppv1 ipv6 client over ipv4 edge", false, 1, netip.AddrPortFrom(tcpClient6, 40007), 64 << 10},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			relay, listen, src := relay4, listen4, labEdge4
			if tc.v6Edge {
				relay, listen, src = relay6, listen6, labEdge6
			}
			server := l.server4
			if tc.client.Addr().Is6() {
				server = l.server6
			}
			before := relay.Stats()
			data := tcpPayload(tc.size, uint64(i))

			x := l.exchange(t, src, listen, tcpHeader(t, tc.version, tc.client), data)
			x.served(t, data, tc.client)
			if got := server.takePeer(t); got != tc.client {
				t.Errorf("server accepted %s, want %s", got, tc.client)
			}

			want := before
			want.Listener.Accepted[wire.PPv1+wire.Proto(tc.version-1)]++
			want.Conns++
			want.BytesToServer += uint64(len(data))
			want.BytesToClient += uint64(len(data) + len(tcpTrailer(tc.client)))
			got := tcpWaitStats(t, relay, "the connection to end", func(s Stats) bool { return s.ConnsLive == 0 })
			if d := tcpStatsDiff(got, want); d != "" {
				t.Errorf("stats:\n%s", d)
			}
		})
	}
	l.server4.noPeer(t)
	l.server6.noPeer(t)
}

// tcpRejectCase is a connection from the edge that a relay refuses, or
// serves although something about it is off.
type tcpRejectCase struct {
	name   string
	relay  *Relay
	src    netip.Addr
	pre    []byte
	served bool // relayed, from the client in pre, or from src without one
	client netip.AddrPort
	want   func(*Stats) // the counters that change
}

// TestTCPRelayRejects checks what happens to untrusted peers, malformed
// headers, clients without a target and a server that is not there: what
// must not be honoured is not, the rest is served, all of it counted, and
// the relay keeps serving.
func TestTCPRelayRejects(t *testing.T) {
	l := newTCPLab(t)
	e := l.tcpEntry(netip.AddrPortFrom(labOrigin4, tcpRelayPort))
	e.Accept = []wire.Proto{wire.PPv2}
	strict := startTCPRelayIn(t, l.origin, e)

	e = l.tcpEntry(netip.AddrPortFrom(labOrigin4, tcpRelayPort+1))
	e.Untrusted = listener.UntrustedIgnore
	ignore := startTCPRelayIn(t, l.origin, e)

	e = l.tcpEntry(netip.AddrPortFrom(labOrigin4, tcpRelayPort+2))
	e.To6 = netip.AddrPort{}
	only4 := startTCPRelayIn(t, l.origin, e)

	e = l.tcpEntry(netip.AddrPortFrom(labOrigin4, tcpRelayPort+3))
	e.To, e.To6 = tcpClosedPort(t, l, "127.0.0.1:0"), tcpClosedPort(t, l, "[::1]:0")
	noServer := startTCPRelayIn(t, l.origin, e)

	c4 := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(tcpClient4, port) }
	c6 := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(tcpClient6, port) }
	malformed := tcpHeader(t, 2, c4(41004))
	malformed[12] = 0x99 // version 9, command 9

	cases := []tcpRejectCase{
		{name: "untrusted peer with header dropped", relay: strict, src: tcpUntrusted4, pre: tcpHeader(t, 2, c4(41001)),
			want: func(s *Stats) {
				s.Listener.Untrusted++
				s.Listener.Accepted[wire.None]++
				s.Listener.Rejected[listener.ReasonUntrusted]++
			}},
		{name: "untrusted peer without header served as itself", relay: strict, src: tcpUntrusted4, served: true,
			want: func(s *Stats) { s.Listener.Untrusted++; s.Listener.Accepted[wire.None]++; s.Conns++ }},
		{name: "untrusted peer with header ignored", relay: ignore, src: tcpUntrusted4, pre: tcpHeader(t, 2, c4(41003)), served: true,
			want: func(s *Stats) {
				s.Listener.Untrusted++
				s.Listener.Accepted[wire.None]++
				s.Listener.IgnoredHeaders++
				s.Conns++
			}},
		{name: "malformed header", relay: strict, src: labEdge4, pre: malformed,
			want: func(s *Stats) { s.Listener.Rejected[listener.ReasonMalformed]++ }},
		{name: "served after a malformed header", relay: strict, src: labEdge4, pre: tcpHeader(t, 2, c4(41005)), served: true, client: c4(41005),
			want: func(s *Stats) { s.Listener.Accepted[wire.PPv2]++; s.Conns++ }},
		{name: "ppv1 not accepted", relay: strict, src: labEdge4, pre: tcpHeader(t, 1, c4(41006)),
			want: func(s *Stats) { s.Listener.Rejected[listener.ReasonProtocol]++ }},
		{name: "ipv6 client without to6", relay: only4, src: labEdge4, pre: tcpHeader(t, 2, c6(41007)),
			want: func(s *Stats) { s.Listener.Accepted[wire.PPv2]++; s.NoTarget++ }},
		{name: "ipv4 client with to only", relay: only4, src: labEdge4, pre: tcpHeader(t, 2, c4(41008)), served: true, client: c4(41008),
			want: func(s *Stats) { s.Listener.Accepted[wire.PPv2]++; s.Conns++ }},
		{name: "nothing listening at to", relay: noServer, src: labEdge4, pre: tcpHeader(t, 2, c4(41009)),
			want: func(s *Stats) { s.Listener.Accepted[wire.PPv2]++; s.DialErrors++ }},
		{name: "nothing listening at to6", relay: noServer, src: labEdge4, pre: tcpHeader(t, 1, c6(41010)),
			want: func(s *Stats) { s.Listener.Accepted[wire.PPv1]++; s.DialErrors++ }},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { l.checkReject(t, tc, tcpPayload(1000, uint64(100+i))) })
	}
}

// checkReject runs one case of TestTCPRelayRejects.
func (l *tcpLab) checkReject(t *testing.T, tc tcpRejectCase, data []byte) {
	before := tc.relay.Stats()
	x := l.exchange(t, tc.src, tc.relay.Entry().Listen, tc.pre, data)
	want := before
	if tc.served {
		peer := tc.client
		if !peer.IsValid() {
			peer = x.local // the peer is served as the client
		}
		x.served(t, data, peer)
		server := l.server4
		if peer.Addr().Is6() {
			server = l.server6
		}
		if got := server.takePeer(t); got != peer {
			t.Errorf("server accepted %s, want %s", got, peer)
		}
		want.BytesToServer += uint64(len(data))
		want.BytesToClient += uint64(len(data) + len(tcpTrailer(peer)))
	} else {
		x.refused(t)
	}
	l.server4.noPeer(t)
	l.server6.noPeer(t)
	tc.want(&want)
	got := tcpWaitStats(t, tc.relay, "the connection to end", func(s Stats) bool { return s.ConnsLive == 0 })
	if d := tcpStatsDiff(got, want); d != "" {
		t.Errorf("stats:\n%s", d)
	}
}

// tcpClosedPort returns an address of the origin where nothing listens.
func tcpClosedPort(t *testing.T, l *tcpLab, addr string) netip.AddrPort {
	t.Helper()
	var ln net.Listener
	err := l.origin.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return wire.SocketAddrPort(ln.Addr())
}

// TestTCPRelayMaxConns refuses connections beyond MaxConns and counts
// them, and serves again once a connection ended.
func TestTCPRelayMaxConns(t *testing.T) {
	l := newTCPLab(t)
	e := l.tcpEntry(netip.AddrPortFrom(labOrigin4, tcpRelayPort))
	e.MaxConns = 1
	r := startTCPRelayIn(t, l.origin, e)
	listen := e.Listen

	first := netip.AddrPortFrom(tcpClient4, 42001)
	a := l.tcpDial(t, labEdge4, listen)
	l.ping(t, a, tcpHeader(t, 2, first))
	if got := l.server4.takePeer(t); got != first {
		t.Fatalf("server accepted %s, want %s", got, first)
	}

	x := l.exchange(t, labEdge4, listen, tcpHeader(t, 2, netip.AddrPortFrom(tcpClient4, 42002)), []byte("refused"))
	x.refused(t)
	l.server4.noPeer(t)
	if s := r.Stats(); s.ConnsRefused != 1 || s.ConnsLive != 1 || s.Conns != 1 {
		t.Fatalf("with one connection live and one refused: %+v", s)
	}

	if err := a.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(a); err != nil || string(rest) != tcpTrailer(first) {
		t.Fatalf("first connection: read %q, %v; want the trailer", rest, err)
	}
	tcpWaitStats(t, r, "the first connection to end", func(s Stats) bool { return s.ConnsLive == 0 })

	third := netip.AddrPortFrom(tcpClient4, 42003)
	x = l.exchange(t, labEdge4, listen, tcpHeader(t, 2, third), []byte("served again"))
	x.served(t, []byte("served again"), third)
	if got := l.server4.takePeer(t); got != third {
		t.Errorf("server accepted %s, want %s", got, third)
	}
	s := tcpWaitStats(t, r, "the third connection to end", func(s Stats) bool { return s.ConnsLive == 0 })
	if s.Conns != 2 || s.ConnsRefused != 1 {
		t.Errorf("stats: %+v, want 2 connections relayed and 1 refused", s)
	}
}

// ping writes pre and "ping" on c and reads the echo back: the connection
// is then relayed.
func (l *tcpLab) ping(t *testing.T, c *net.TCPConn, pre []byte) {
	t.Helper()
	if _, err := c.Write(append(append([]byte(nil), pre...), "ping"...)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("edge: read %q, %v; want the echo of ping", buf, err)
	}
}

// TestTCPRelayPaths checks both ways a connection takes through the
// relay: a header whole in its first bytes is honoured by the loop that
// accepted the connection; one split across segments is left to the
// listener with the bytes the loop read, and honoured there just as well.
// Either way the server sees the client and the payload is intact, and
// the header is counted once.
func TestTCPRelayPaths(t *testing.T) {
	l := newTCPLab(t)
	e := l.tcpEntry(netip.AddrPortFrom(labOrigin4, tcpRelayPort))
	r := startTCPRelayIn(t, l.origin, e)
	for i, split := range []int{0, 9, 20} { // 0: one write
		client := netip.AddrPortFrom(tcpClient4, uint16(44001+i))
		hdr := tcpHeader(t, 2, client)
		c := l.tcpDial(t, labEdge4, e.Listen)
		first := hdr
		if split > 0 {
			first = hdr[:split]
		}
		if _, err := c.Write(first); err != nil {
			t.Fatal(err)
		}
		if split > 0 {
			tcpWaitStats(t, r, "the listener to wait for the rest of the header", func(s Stats) bool { return s.Listener.Pending == 1 })
			if _, err := c.Write(hdr[split:]); err != nil {
				t.Fatal(err)
			}
		}
		l.ping(t, c, nil)
		if got := l.server4.takePeer(t); got != client {
			t.Errorf("split %d: the server saw %s, want %s", split, got, client)
		}
		c.Close()
		want := uint64(i + 1)
		tcpWaitStats(t, r, "the connection to end", func(s Stats) bool { return s.ConnsLive == 0 })
		if s := r.Stats(); s.Listener.Accepted[wire.PPv2] != want || s.Conns != want || s.Listener.TotalRejected() != 0 {
			t.Errorf("split %d: stats %+v, want %d PROXY v2 headers accepted and relayed, none rejected", split, s, want)
		}
		// Which path honoured it: the loops count their headers
		// themselves, the listener its own.
		impl := r.impl.(*tcpRelay)
		byLoops, byListener := impl.accepted[wire.PPv2].Load(), impl.ln.Stats().Accepted[wire.PPv2]
		if wantLoops := uint64(1); byLoops != wantLoops || byListener != want-wantLoops {
			t.Errorf("split %d: %d headers honoured by the loops and %d by the listener, want the whole one by the loops, the split ones by the listener",
				split, byLoops, byListener)
		}
	}
}

// TestTCPRelayAnswerAfterHalfClose: clients that send a request and
// half-close, to a server that answers only then, with more than a loop's
// buffer, and closes. The loop passes the client's end on, then hands the
// long answer to goroutines, which must deliver it whole and end cleanly,
// without passing the client's end on a second time (which fails on a
// socket the server has closed, and would reset both).
func TestTCPRelayAnswerAfterHalfClose(t *testing.T) {
	l := newTCPLab(t)
	answer := tcpPayload(64<<10, 7)
	var ln net.Listener
	if err := l.origin.Do(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.Copy(io.Discard, c); err == nil {
					c.Write(answer)
				}
			}()
		}
	}()
	e := l.tcpEntry(netip.AddrPortFrom(labOrigin4, tcpRelayPort))
	e.To = wire.SocketAddrPort(ln.Addr())
	r := startTCPRelayIn(t, l.origin, e)
	const n = 8
	for i := range n {
		x := l.exchange(t, labEdge4, e.Listen, tcpHeader(t, 2, netip.AddrPortFrom(tcpClient4, uint16(45001+i))), []byte("request"))
		if x.readErr != nil || !bytes.Equal(x.got, answer) {
			t.Fatalf("connection %d: read %d bytes, %v; want the %d-byte answer, then EOF", i, len(x.got), x.readErr, len(answer))
		}
	}
	s := tcpWaitStats(t, r, "the connections to end", func(s Stats) bool { return s.ConnsLive == 0 })
	if s.Conns != n || s.BytesToClient != n*uint64(len(answer)) {
		t.Errorf("stats %+v, want %d connections and %d bytes to the clients", s, n, n*len(answer))
	}
}

// TestTCPRelayClose closes a relay with a connection being relayed and
// one whose header is still incomplete: both are closed, no goroutine of
// the relay or its listener is left, and the port is free.
func TestTCPRelayClose(t *testing.T) {
	l := newTCPLab(t)
	baseline := runtime.NumGoroutine()
	e := l.tcpEntry(netip.AddrPortFrom(labOrigin4, tcpRelayPort))
	r := startTCPRelayIn(t, l.origin, e)

	done := netip.AddrPortFrom(tcpClient4, 43001)
	l.exchange(t, labEdge4, e.Listen, tcpHeader(t, 2, done), []byte("done")).served(t, []byte("done"), done)
	l.server4.takePeer(t)

	open := l.tcpDial(t, labEdge4, e.Listen)
	l.ping(t, open, tcpHeader(t, 1, netip.AddrPortFrom(tcpClient4, 43002)))
	l.server4.takePeer(t)
	partial := l.tcpDial(t, labEdge4, e.Listen)
	if _, err := partial.Write(tcpHeader(t, 2, netip.AddrPortFrom(tcpClient4, 43003))[:8]); err != nil {
		t.Fatal(err)
	}
	tcpWaitStats(t, r, "the partial header to be read", func(s Stats) bool { return s.Listener.Pending == 1 })

	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for name, c := range map[string]*net.TCPConn{"relayed": open, "partial": partial} {
		if b, err := io.ReadAll(c); len(b) != 0 || (err != nil && !tcpIsReset(err)) {
			t.Errorf("%s connection after Close: read %q, %v; want EOF or a reset", name, b, err)
		}
	}
	if s := r.Stats(); s.ConnsLive != 0 || s.Conns != 2 {
		t.Errorf("stats after Close: %+v, want 2 connections, none live", s)
	}
	tcpWaitGoroutines(t, baseline)
	if g := tcpRelayGoroutines(); g != "" {
		t.Fatalf("goroutines of the relay after Close:\n%s", g)
	}
	err := l.origin.Do(func() error {
		ln, err := net.Listen("tcp", e.Listen.String())
		if err == nil {
			ln.Close()
		}
		return err
	})
	if err != nil {
		t.Errorf("relay's port after Close: %v", err)
	}
}

// TestEdgeSocketOptions checks that the edge's connections, as a loop
// accepts them (accept4, nothing set per connection), have Go's usual
// keep-alive probes and TCP_NODELAY: they come from the listening socket.
func TestEdgeSocketOptions(t *testing.T) {
	e := Entry{Network: "tcp", Listen: netip.MustParseAddrPort("127.0.0.1:0"), Accept: []wire.Proto{wire.PPv2},
		Trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	ln, err := listenSocket(e.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil { // TCP_DEFER_ACCEPT waits for bytes
		t.Fatal(err)
	}
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	afd, aerr := -1, error(unix.EAGAIN)
	for deadline := time.Now().Add(5 * time.Second); aerr == unix.EAGAIN && time.Now().Before(deadline); {
		if err := rc.Control(func(fd uintptr) { afd, _, aerr = rawsys.Accept4(int(fd)) }); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	if aerr != nil {
		t.Fatalf("accept4: %v", aerr)
	}
	defer rawsys.Close(afd)
	want := map[string][3]int{
		"SO_KEEPALIVE":  {unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		"TCP_KEEPIDLE":  {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepAliveIdle / time.Second)},
		"TCP_KEEPINTVL": {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepAliveInterval / time.Second)},
		"TCP_KEEPCNT":   {unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAliveCount},
		"TCP_NODELAY":   {unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
	}
	for name, o := range want {
		if v, err := rawsys.GetsockoptInt(afd, o[0], o[1]); err != nil || v != o[2] {
			t.Errorf("%s = %d (%v) on an accepted connection, want %d", name, v, err, o[2])
		}
	}
}
