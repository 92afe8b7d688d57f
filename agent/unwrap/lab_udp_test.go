//go:build linux

package unwrap

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/realip/realip/wire"
)

// udpWaitBound bounds every wait of these tests; it is a guard against a hang,
// never a measure of speed.
const udpWaitBound = 10 * time.Second

// The clients the edge speaks for in the UDP tests, and the addresses they
// sent to.
var (
	labClient4 = netip.MustParseAddrPort("198.51.100.7:40001")
	labClient6 = netip.MustParseAddrPort("[2001:db8:77::7]:40001")
	labVIP4    = netip.MustParseAddrPort("203.0.113.10:5353")
	labVIP6    = netip.MustParseAddrPort("[2001:db8:ff::10]:5353")
)

// udpLab is the relay lab of the UDP tests.
type udpLab struct {
	relayLab
}

func newUDPLab(t *testing.T) *udpLab {
	t.Helper()
	return &udpLab{newRelayLab(t)}
}

// relay starts the UDP engine for e in the origin; the flows' sockets are
// made there too. It is closed at cleanup.
func (l *udpLab) relay(t *testing.T, e Entry) *udpRelay {
	t.Helper()
	if err := e.Validate(); err != nil {
		t.Fatalf("entry: %v", err)
	}
	return l.relayLoops(t, e.withDefaults(), relayLoops())
}

// relayLoops is relay with loops listening sockets, for e with its
// defaults already applied.
func (l *udpLab) relayLoops(t *testing.T, e Entry, loops int) *udpRelay {
	t.Helper()
	var r *udpRelay
	err := l.origin.Do(func() (err error) {
		r, err = newUDPRelayLoops(e, Options{}, dialIn(l.origin, "udp", 0), loops)
		return err
	})
	if err != nil {
		t.Fatalf("start relay: %v", err)
	}
	t.Cleanup(func() { _ = r.close() })
	return r
}

// edgeSocket opens an unconnected UDP socket on the edge at local.
func (l *udpLab) edgeSocket(t *testing.T, local netip.Addr) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := l.edge.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
		return err
	})
	if err != nil {
		t.Fatalf("edge socket: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// udpReceived is one datagram a test server got.
type udpReceived struct {
	peer    netip.AddrPort
	payload []byte
}

// udpServer is an unmodified UDP server on the origin: it knows nothing of
// headers. An echoing one answers each datagram with the peer address it
// saw, a newline and the payload; a silent one never answers.
type udpServer struct {
	addr netip.AddrPort
	conn *net.UDPConn
	echo bool
	done chan struct{}

	mu  sync.Mutex
	got []udpReceived
}

// startServer starts a server on the origin at addr until cleanup.
func (l *udpLab) startServer(t *testing.T, addr netip.AddrPort, echo bool) *udpServer {
	t.Helper()
	s := &udpServer{addr: addr, echo: echo, done: make(chan struct{})}
	err := l.origin.Do(func() (err error) {
		s.conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		t.Fatalf("server %s: %v", addr, err)
	}
	go s.serve()
	t.Cleanup(func() {
		_ = s.conn.Close()
		<-s.done
	})
	return s
}

func (s *udpServer) serve() {
	defer close(s.done)
	buf := make([]byte, maxUDPPayload)
	for {
		n, peer, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
		s.mu.Lock()
		s.got = append(s.got, udpReceived{peer, bytes.Clone(buf[:n])})
		s.mu.Unlock()
		if s.echo {
			_, _ = s.conn.WriteToUDPAddrPort(udpEchoReply(peer, buf[:n]), peer)
		}
	}
}

// received returns a copy of what the server got so far.
func (s *udpServer) received() []udpReceived {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]udpReceived(nil), s.got...)
}

// udpEchoReply is what an echoing server answers to payload from peer.
func udpEchoReply(peer netip.AddrPort, payload []byte) []byte {
	return append([]byte(peer.String()+"\n"), payload...)
}

// udpSPP is payload behind an SPP header naming client and vip.
func udpSPP(client, vip netip.AddrPort, payload []byte) []byte {
	return append(wire.AppendSPP(nil, wire.SPPHeader{Client: client, Proxy: vip}), payload...)
}

// udpPPv2 is payload behind a PROXY v2 UDP header naming client and vip.
func udpPPv2(t *testing.T, client, vip netip.AddrPort, payload []byte) []byte {
	t.Helper()
	h := &wire.ProxyHeader{Version: 2, Datagram: true, Source: client, Destination: vip}
	b, err := wire.AppendProxyHeader(nil, h, wire.MarshalOptions{})
	if err != nil {
		t.Fatalf("PROXY v2 header: %v", err)
	}
	return append(b, payload...)
}

// udpSend writes d from c to the relay at to.
func udpSend(t *testing.T, c *net.UDPConn, to netip.AddrPort, d []byte) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(d, to); err != nil {
		t.Fatalf("send to %s: %v", to, err)
	}
}

// udpExchange sends d to the relay at to and returns the datagram that comes
// back and where it came from.
func udpExchange(t *testing.T, c *net.UDPConn, to netip.AddrPort, d []byte) ([]byte, netip.AddrPort) {
	t.Helper()
	udpSend(t, c, to, d)
	if err := c.SetReadDeadline(time.Now().Add(udpWaitBound)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, maxUDPPayload)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("reply to a datagram sent to %s: %v", to, err)
	}
	return buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
}

// udpWaitFor polls cond until it holds, failing the test after udpWaitBound.
func udpWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(udpWaitBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// udpWaitGoroutines waits until no more goroutines run than baseline.
func udpWaitGoroutines(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(udpWaitBound)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the relay:\n%s",
				runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// udpOpenFDs counts this process's open file descriptors.
func udpOpenFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count fds: %v", err)
	}
	return len(ents)
}
