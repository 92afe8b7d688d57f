//go:build linux

package unwrap

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/realip/realip/internal/netns"
	"github.com/realip/realip/wire"
)

// tcpWaitLimit bounds every wait of the TCP tests for something that
// should happen at once; reaching it is a failure (a hang), not a timing
// measurement.
const tcpWaitLimit = 30 * time.Second

// Addresses of the TCP lab besides the relay lab's (documentation prefixes
// only). The edge has a second IPv4 address, outside the relays' trusted
// prefixes.
var (
	tcpUntrusted4 = netip.MustParseAddr("192.0.2.3")
	tcpClient4    = netip.MustParseAddr("198.51.100.7")
	tcpClient6    = netip.MustParseAddr("2001:db8:77::7")
	// What the client connected to on the edge, as the header says.
	tcpVIP4 = netip.MustParseAddrPort("203.0.113.10:443")
	tcpVIP6 = netip.MustParseAddrPort("[2001:db8:ff::10]:443")
)

// tcpTrusted are the edge's own addresses on the link, not tcpUntrusted4.
func tcpTrusted() []netip.Prefix {
	return []netip.Prefix{netip.PrefixFrom(labEdge4, 32), netip.PrefixFrom(labEdge6, 128)}
}

// tcpLab is the relay lab with a second IPv4 address on the edge
// (tcpUntrusted4) and an echo server on the origin's 127.0.0.1 and one on
// its [::1].
type tcpLab struct {
	relayLab
	server4, server6 *tcpEchoServer
}

func newTCPLab(t *testing.T) *tcpLab {
	t.Helper()
	l := &tcpLab{relayLab: newRelayLab(t, netip.PrefixFrom(tcpUntrusted4, 24))}
	l.server4 = startTCPEcho(t, l.origin, "127.0.0.1:0")
	l.server6 = startTCPEcho(t, l.origin, "[::1]:0")
	return l
}

// tcpEchoServer is a server that knows nothing of headers: it records the
// peer each accept() returned, echoes what it reads, and after the peer's
// half-close sends a trailer naming that peer, then closes.
type tcpEchoServer struct {
	addr  netip.AddrPort
	ln    net.Listener
	peers chan netip.AddrPort
	wg    sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startTCPEcho(t *testing.T, h *netns.Host, addr string) *tcpEchoServer {
	t.Helper()
	s := &tcpEchoServer{peers: make(chan netip.AddrPort, 64), conns: make(map[net.Conn]struct{})}
	err := h.Do(func() (err error) {
		s.ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("echo server on %s: %v", addr, err)
	}
	s.addr = wire.SocketAddrPort(s.ln.Addr())
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.close)
	return s
}

func (s *tcpEchoServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		peer := wire.SocketAddrPort(c.RemoteAddr())
		s.peers <- peer
		s.wg.Add(1)
		go s.echo(c, peer)
	}
}

// echo copies c to itself until EOF, then writes the trailer.
func (s *tcpEchoServer) echo(c net.Conn, peer netip.AddrPort) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if _, werr := c.Write(buf[:n]); werr != nil {
			return
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return
		}
	}
	_, _ = io.WriteString(c, tcpTrailer(peer))
}

// tcpTrailer is what the echo server sends after reading EOF from peer.
func tcpTrailer(peer netip.AddrPort) string {
	return "\nserver saw EOF from " + peer.String() + "\n"
}

func (s *tcpEchoServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// takePeer returns the peer of the next connection the server accepted.
func (s *tcpEchoServer) takePeer(t *testing.T) netip.AddrPort {
	t.Helper()
	select {
	case p := <-s.peers:
		return p
	case <-time.After(tcpWaitLimit):
		t.Fatalf("server %s: no connection accepted", s.addr)
		return netip.AddrPort{}
	}
}

// noPeer fails unless the server accepted no connection not yet taken.
func (s *tcpEchoServer) noPeer(t *testing.T) {
	t.Helper()
	select {
	case p := <-s.peers:
		t.Errorf("server %s accepted a connection from %s, want none", s.addr, p)
	default:
	}
}

// startTCPRelayIn starts a TCP relay for e in h: it listens there and
// connects to the server there too (a relay's goroutines are not in the
// namespace of the thread that started it).
func startTCPRelayIn(t *testing.T, h *netns.Host, e Entry) *Relay {
	t.Helper()
	if err := e.Validate(); err != nil {
		t.Fatalf("entry: %v", err)
	}
	e = e.withDefaults()
	opt := Options{Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))}
	var impl *tcpRelay
	err := h.Do(func() (err error) {
		impl, err = listenTCP(e, opt, dialIn(h, "tcp", opt.Mark), socketIn(h))
		return err
	})
	if err != nil {
		t.Fatalf("relay on %s: %v", e.Listen, err)
	}
	r := &Relay{entry: e, impl: impl}
	t.Cleanup(func() { r.Close() })
	return r
}

// tcpEntry is an entry of the lab: PROXY v1 and v2 from the edge's
// trusted addresses, to the lab's echo servers.
func (l *tcpLab) tcpEntry(listen netip.AddrPort) Entry {
	return Entry{
		Network: "tcp",
		Listen:  listen,
		To:      l.server4.addr,
		To6:     l.server6.addr,
		Accept:  []wire.Proto{wire.PPv1, wire.PPv2},
		Trusted: tcpTrusted(),
	}
}

// tcpHeader is a PROXY header of version for client.
func tcpHeader(t *testing.T, version int, client netip.AddrPort) []byte {
	t.Helper()
	vip := tcpVIP4
	if client.Addr().Is6() {
		vip = tcpVIP6
	}
	h := &wire.ProxyHeader{Version: version, Source: client, Destination: vip}
	b, err := wire.AppendProxyHeader(nil, h, wire.MarshalOptions{})
	if err != nil {
		t.Fatalf("header: %v", err)
	}
	return b
}

// tcpPayload is n bytes that differ from connection to connection.
func tcpPayload(n int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// tcpDial connects from the edge (from src; the zero Addr lets the kernel
// choose) to the relay at dst.
func (l *tcpLab) tcpDial(t *testing.T, src netip.Addr, dst netip.AddrPort) *net.TCPConn {
	t.Helper()
	d := net.Dialer{}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	var c net.Conn
	err := l.edge.Do(func() (err error) {
		c, err = d.Dial("tcp", dst.String())
		return err
	})
	if err != nil {
		t.Fatalf("edge: connect %s: %v", dst, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(tcpWaitLimit)); err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}

// tcpExchange is one connection from the edge: it writes pre (a header)
// and data, half-closes, and reads until the relay ends the connection.
type tcpExchange struct {
	local    netip.AddrPort // the edge's side of the connection
	got      []byte         // everything read
	readErr  error          // nil after a clean EOF
	writeErr error
}

func (l *tcpLab) exchange(t *testing.T, src netip.Addr, dst netip.AddrPort, pre, data []byte) tcpExchange {
	t.Helper()
	c := l.tcpDial(t, src, dst)
	x := tcpExchange{local: wire.SocketAddrPort(c.LocalAddr())}
	written := make(chan error, 1)
	go func() {
		_, err := c.Write(append(append([]byte(nil), pre...), data...))
		if err == nil {
			err = c.CloseWrite()
		}
		written <- err
	}()
	var buf bytes.Buffer
	_, x.readErr = buf.ReadFrom(c)
	x.got = buf.Bytes()
	x.writeErr = <-written
	return x
}

// served checks that x was relayed to the server, which saw peer: the
// data came back intact, followed by the trailer the server sends after
// the half-close.
func (x tcpExchange) served(t *testing.T, data []byte, peer netip.AddrPort) {
	t.Helper()
	if x.writeErr != nil || x.readErr != nil {
		t.Fatalf("exchange failed: write: %v, read: %v (read %d bytes)", x.writeErr, x.readErr, len(x.got))
	}
	want := append(append([]byte(nil), data...), tcpTrailer(peer)...)
	if !bytes.Equal(x.got, want) {
		t.Fatalf("edge read %d bytes ending %q, want %d bytes ending %q", len(x.got), tcpTail(x.got), len(want), tcpTail(want))
	}
}

// refused checks that the relay closed x without a byte from a server.
func (x tcpExchange) refused(t *testing.T) {
	t.Helper()
	if len(x.got) != 0 {
		t.Fatalf("edge read %q from a refused connection", tcpTail(x.got))
	}
	if x.readErr != nil && !errors.Is(x.readErr, net.ErrClosed) && !tcpIsReset(x.readErr) {
		t.Fatalf("edge: read: %v, want EOF or a reset", x.readErr)
	}
}

func tcpIsReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET)
}

func tcpTail(b []byte) []byte {
	return b[max(0, len(b)-48):]
}

// tcpWaitStats polls r's counters until ok accepts them.
func tcpWaitStats(t *testing.T, r *Relay, what string, ok func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(tcpWaitLimit)
	for {
		s := r.Stats()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: stats %+v", what, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tcpRelayGoroutines returns the stacks of goroutines that run code of a TCP
// relay or of its listener.
func tcpRelayGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "unwrap.(*tcpRelay)") || strings.Contains(g, "listener.(*Listener)") {
			found = append(found, g)
		}
	}
	return strings.Join(found, "\n\n")
}

// tcpWaitGoroutines polls until at most n goroutines run.
func tcpWaitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(tcpWaitLimit)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// tcpStatsDiff names the counters of got that differ from want.
func tcpStatsDiff(got, want Stats) string {
	if got == want {
		return ""
	}
	return fmt.Sprintf("got  %+v\nwant %+v", got, want)
}
