package listener

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/realip/realip/wire"
)

var (
	loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	docNet   = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	client4  = netip.MustParseAddrPort("192.0.2.7:40000")
	target4  = netip.MustParseAddrPort("198.51.100.1:443")
	client6  = netip.MustParseAddrPort("[2001:db8::7]:40000")
	target6  = netip.MustParseAddrPort("[2001:db8::1]:443")
)

// waitLimit bounds how long a test waits for something that should happen
// at once; reaching it is a failure (a hang), not a timing measurement.
const waitLimit = 10 * time.Second

func header(t testing.TB, h wire.ProxyHeader, crc bool) []byte {
	t.Helper()
	b, err := wire.AppendProxyHeader(nil, &h, wire.MarshalOptions{CRC32C: crc})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newTestListener(t testing.TB, cfg Config) *Listener {
	t.Helper()
	return newModeListener(t, cfg, directMode)
}

// The two accepting modes (tcp.go): tests of admitting, rejecting and
// backpressure run in both.
const (
	directMode = "direct"
	loopMode   = "loop"
)

var modes = []string{directMode, loopMode}

// loopOnly hides the inner listener's SetDeadline, which puts a Listener
// in loop mode.
type loopOnly struct{ net.Listener }

func newModeListener(t testing.TB, cfg Config, mode string) *Listener {
	t.Helper()
	var inner net.Listener
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if mode == loopMode {
		inner = loopOnly{inner}
	}
	l, err := New(inner, cfg)
	if err != nil {
		inner.Close()
		t.Fatal(err)
	}
	if got := l.deadline == nil; got != (mode == loopMode) {
		t.Fatalf("listener not in %s mode", mode)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// acceptor calls Accept in a goroutine for a test's lifetime, as a server
// does, so that connections are admitted, rejected and counted while the
// test looks at the counters; next returns what it accepted.
type acceptor struct {
	conns   chan *Conn
	stopped chan struct{} // closed when Accept failed; err is then set
	err     error
}

func serveAccepts(t testing.TB, l *Listener) *acceptor {
	a := &acceptor{conns: make(chan *Conn, 64), stopped: make(chan struct{})}
	go func() {
		defer close(a.stopped)
		for {
			c, err := l.Accept()
			if err != nil {
				a.err = err
				return
			}
			a.conns <- c.(*Conn)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-a.stopped
		for {
			select {
			case c := <-a.conns:
				c.Close()
			default:
				return
			}
		}
	})
	return a
}

func (a *acceptor) next(t testing.TB) *Conn {
	t.Helper()
	select {
	case c := <-a.conns:
		return c
	case <-a.stopped:
		t.Fatalf("Accept: %v", a.err)
	case <-time.After(waitLimit):
		t.Fatal("Accept did not return")
	}
	return nil
}

// dialSend connects to l and writes b (if any), keeping the connection open.
func dialSend(t testing.TB, l net.Listener, b []byte) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if len(b) > 0 {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

type acceptResult struct {
	c   net.Conn
	err error
}

func acceptOne(t testing.TB, l net.Listener) *Conn {
	t.Helper()
	ch := make(chan acceptResult, 1)
	go func() {
		c, err := l.Accept()
		ch <- acceptResult{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Accept: %v", r.err)
		}
		t.Cleanup(func() { r.c.Close() })
		return r.c.(*Conn)
	case <-time.After(waitLimit):
		t.Fatal("Accept did not return")
		return nil
	}
}

func readN(t testing.TB, r io.Reader, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return string(b)
}

func TestListenerAccepts(t *testing.T) {
	v1 := []byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n")
	v1six := []byte("PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n")
	tlvs := []wire.TLV{{Type: wire.TLVALPN, Value: []byte("h2")}, {Type: wire.TLVAuthority, Value: []byte("example.com")}, {Type: wire.TLVUniqueID, Value: []byte("abc")}}
	tests := []struct {
		name      string
		cfg       Config
		send      []byte
		client    netip.AddrPort
		target    netip.AddrPort
		via       wire.Proto
		authority string
	}{
		{"v1 ipv4", Config{}, v1, client4, target4, wire.PPv1, ""},
		{"v1 ipv6", Config{}, v1six, client6, target6, wire.PPv1, ""},
		{"v2 ipv4", Config{}, header(t, wire.ProxyHeader{Version: 2, Source: client4, Destination: target4}, false), client4, target4, wire.PPv2, ""},
		{"v2 ipv6 tlvs crc", Config{Protocols: []wire.Proto{wire.PPv2}}, header(t, wire.ProxyHeader{Version: 2, Source: client6, Destination: target6, TLVs: tlvs}, true), client6, target6, wire.PPv2, "example.com"},
		{"v1 only", Config{Protocols: []wire.Proto{wire.PPv1}}, v1, client4, target4, wire.PPv1, ""},
		{"v2 local", Config{}, header(t, wire.ProxyHeader{Version: 2, Local: true}, false), netip.AddrPort{}, netip.AddrPort{}, wire.None, ""},
		{"v1 unknown", Config{}, []byte("PROXY UNKNOWN\r\n"), netip.AddrPort{}, netip.AddrPort{}, wire.None, ""},
		{"optional without header", Config{Optional: true}, nil, netip.AddrPort{}, netip.AddrPort{}, wire.None, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Trusted = loopback
			l := newTestListener(t, tt.cfg)
			peer := dialSend(t, l, append(bytes.Clone(tt.send), "hello"...))
			c := acceptOne(t, l)
			self := addrPort(peer.LocalAddr())
			want := tt.client
			if !want.IsValid() {
				want = self
			}
			if c.Client() != want || c.RemoteAddr().String() != want.String() {
				t.Errorf("client %v (RemoteAddr %v), want %v", c.Client(), c.RemoteAddr(), want)
			}
			if c.Proxy() != self {
				t.Errorf("proxy %v, want %v", c.Proxy(), self)
			}
			if c.Via() != tt.via || c.Target() != tt.target {
				t.Errorf("via %v target %v, want %v %v", c.Via(), c.Target(), tt.via, tt.target)
			}
			if tt.authority != "" && c.Header().Authority() != tt.authority {
				t.Errorf("authority %q, want %q", c.Header().Authority(), tt.authority)
			}
			if got := readN(t, c, 5); got != "hello" {
				t.Errorf("payload %q", got)
			}
			if s := l.Stats(); s.Accepted[tt.via] != 1 || s.TotalRejected() != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// expectRejected sends bad, then a good connection, and checks that Accept
// returns only the good one and the bad one is counted with reason.
func expectRejected(t *testing.T, l *Listener, bad, good []byte, reason Reason) {
	t.Helper()
	a := serveAccepts(t, l)
	badConn := dialSend(t, l, bad)
	if reason != ReasonTimeout && reason != ReasonUntrusted {
		// The listener closes the bad connection: the peer sees EOF or a reset.
		badConn.SetReadDeadline(time.Now().Add(waitLimit))
		if _, err := badConn.Read(make([]byte, 1)); err == nil {
			t.Fatal("bad connection was not closed")
		}
	}
	waitFor(t, func() bool { return l.Stats().Rejected[reason] == 1 })
	dialSend(t, l, good)
	if c := a.next(t); c.Client() != client4 {
		t.Fatalf("good connection: client %v", c.Client())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestListenerRejects(t *testing.T) {
	good2 := header(t, wire.ProxyHeader{Version: 2, Source: client4, Destination: target4, TLVs: []wire.TLV{{Type: wire.TLVNoop, Value: []byte{0}}}}, true)
	badCRC := bytes.Clone(good2)
	badCRC[len(badCRC)-1] ^= 1
	tests := []struct {
		name   string
		cfg    Config
		send   []byte
		reason Reason
	}{
		{"no header", Config{}, []byte("GET / HTTP/1.1\r\n\r\n"), ReasonMissing},
		{"v1 garbage", Config{}, []byte("PROXY TCP4 nonsense\r\n"), ReasonMalformed},
		{"v1 without CRLF", Config{}, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n"), ReasonMalformed},
		{"v1 too long", Config{}, []byte("PROXY " + strings.Repeat("x", 200)), ReasonMalformed},
		{"v2 bad crc", Config{}, badCRC, ReasonChecksum},
		{"v2 on a v1 listener", Config{Protocols: []wire.Proto{wire.PPv1}}, good2, ReasonProtocol},
		{"v1 on a v2 listener", Config{Protocols: []wire.Proto{wire.PPv2}}, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n"), ReasonProtocol},
		{"silent peer", Config{HeaderTimeout: 50 * time.Millisecond}, nil, ReasonTimeout},
		{"stalled header", Config{HeaderTimeout: 50 * time.Millisecond}, []byte("PROXY TCP4 192.0.2.7"), ReasonTimeout},
	}
	for _, tt := range tests {
		for _, mode := range modes {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				t.Parallel() // the silent peers wait out TCP_DEFER_ACCEPT
				cfg := tt.cfg
				cfg.Trusted = loopback
				l := newModeListener(t, cfg, mode)
				good := []byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n")
				if len(cfg.Protocols) == 1 && cfg.Protocols[0] == wire.PPv2 {
					good = header(t, wire.ProxyHeader{Version: 2, Source: client4, Destination: target4}, false)
				}
				expectRejected(t, l, tt.send, good, tt.reason)
			})
		}
	}
}

func TestListenerTruncatedClose(t *testing.T) {
	v2 := header(t, wire.ProxyHeader{Version: 2, Source: client4, Destination: target4}, false)
	for i, cut := range [][]byte{[]byte("PROXY TCP4 192.0.2.7"), v2[:20], v2[:5], nil} {
		l := newTestListener(t, Config{Trusted: loopback})
		serveAccepts(t, l)
		c := dialSend(t, l, cut)
		c.Close()
		waitFor(t, func() bool { return l.Stats().Rejected[ReasonTruncated] == 1 })
		if s := l.Stats(); s.TotalRejected() != 1 || s.TotalAccepted() != 0 {
			t.Fatalf("cut %d: stats %+v", i, s)
		}
	}
}

func TestSlowHeaderDoesNotBlockOthers(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			l := newModeListener(t, Config{Trusted: loopback, HeaderTimeout: time.Hour}, mode)
			a := serveAccepts(t, l)
			// Ten peers that never finish their header...
			for range 10 {
				dialSend(t, l, []byte("PROXY TCP4 "))
			}
			waitFor(t, func() bool { return l.Stats().Pending == 10 })
			// ...do not keep a good one from being accepted.
			dialSend(t, l, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n"))
			if c := a.next(t); c.Client() != client4 {
				t.Fatalf("client %v", c.Client())
			}
		})
	}
}

// TestSlowHeaderCompletesWhileAcceptWaits: a header finished after Accept
// went back to waiting for the kernel is still handed out (in direct mode
// the deadline wake-up brings it).
func TestSlowHeaderCompletesWhileAcceptWaits(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			l := newModeListener(t, Config{Trusted: loopback, HeaderTimeout: time.Hour}, mode)
			a := serveAccepts(t, l)
			peer := dialSend(t, l, []byte("PROXY TCP4 192.0.2.7 "))
			waitFor(t, func() bool { return l.Stats().Pending == 1 })
			time.Sleep(20 * time.Millisecond) // Accept is back in the kernel
			peer.Write([]byte("198.51.100.1 40000 443\r\nhi"))
			c := a.next(t)
			if c.Client() != client4 {
				t.Fatalf("client %v", c.Client())
			}
			if got := readN(t, c, 2); got != "hi" {
				t.Fatalf("read %q", got)
			}
			// And Accept goes on working after the wake-up.
			dialSend(t, l, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n"))
			a.next(t)
		})
	}
}

// TestConcurrentAcceptCallers: headers finished together while several
// goroutines wait in Accept all reach a caller. Each caller takes one
// connection per round and waits for the next round, as a busy server
// would, so a connection left queued while the other callers went back
// to the kernel stays there and fails the round.
func TestConcurrentAcceptCallers(t *testing.T) {
	const callers, rounds = 3, 100
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			l := newModeListener(t, Config{Trusted: loopback, HeaderTimeout: time.Hour}, mode)
			got := make(chan *Conn, callers)
			next := make(chan struct{}, callers)
			for range callers {
				go func() {
					for {
						c, err := l.Accept()
						if err != nil {
							return
						}
						got <- c.(*Conn)
						<-next
					}
				}()
			}
			for round := range rounds {
				peers := make([]net.Conn, callers)
				for i := range peers {
					peers[i] = dialSend(t, l, []byte("PROXY TCP4 192.0.2.7 "))
				}
				waitFor(t, func() bool { return l.Stats().Pending == callers })
				for _, p := range peers {
					p.Write([]byte("198.51.100.1 40000 443\r\n"))
				}
				for i := range callers {
					select {
					case c := <-got:
						c.Close()
					case <-time.After(waitLimit):
						t.Fatalf("round %d: %d of %d finished headers accepted", round, i, callers)
					}
				}
				for _, p := range peers {
					p.Close()
				}
				for range callers {
					next <- struct{}{}
				}
			}
		})
	}
}

// hiddenFD wraps a listener's connections so that they have no file
// descriptor to read without waiting (as a logging or metrics wrapper).
type hiddenFD struct{ net.Listener }

func (h hiddenFD) Accept() (net.Conn, error) {
	c, err := h.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return struct{ net.Conn }{c}, nil
}

// TestConnWithoutFD: a connection that cannot be read without waiting has
// its header waited for in a goroutine, under HeaderTimeout, like any slow
// header: a silent peer neither blocks Accept nor escapes the timeout.
func TestConnWithoutFD(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(hiddenFD{inner}, Config{Trusted: loopback, HeaderTimeout: 100 * time.Millisecond, NoDeferAccept: true})
	if err != nil {
		inner.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	a := serveAccepts(t, l)
	dialSend(t, l, nil) // silent
	dialSend(t, l, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\nhi"))
	c := a.next(t)
	if c.Client() != client4 || readN(t, c, 2) != "hi" {
		t.Fatalf("client %v", c.Client())
	}
	waitFor(t, func() bool { return l.Stats().Rejected[ReasonTimeout] == 1 })
}

func TestMaxPendingAppliesBackpressure(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			l := newModeListener(t, Config{Trusted: loopback, HeaderTimeout: time.Hour, MaxPending: 2}, mode)
			serveAccepts(t, l)
			for range 3 {
				dialSend(t, l, []byte("PROXY "))
			}
			waitFor(t, func() bool { return l.Stats().Pending == 2 })
			time.Sleep(20 * time.Millisecond)
			if p := l.Stats().Pending; p != 2 {
				t.Fatalf("pending %d: the listener waited for more than MaxPending headers", p)
			}
		})
	}
}

func TestUntrustedPeers(t *testing.T) {
	v1 := []byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n")
	tests := []struct {
		name     string
		action   UntrustedAction
		send     []byte
		wantData string
		wantErr  error
		reason   Reason
	}{
		{"plain client served", UntrustedDrop, []byte("hello"), "hello", nil, 0},
		{"header dropped", UntrustedDrop, append(bytes.Clone(v1), "hello"...), "", ErrUntrustedHeader, ReasonUntrusted},
		{"header ignored", UntrustedIgnore, append(bytes.Clone(v1), "hello"...), "hello", nil, 0},
		{"bad header with ignore", UntrustedIgnore, []byte("PROXY TCP4 junk\r\nhello"), "", ErrUntrustedHeader, ReasonMalformed},
		{"short data that starts like a signature", UntrustedDrop, []byte("PRO"), "PRO", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newTestListener(t, Config{Trusted: docNet, Untrusted: tt.action})
			peer := dialSend(t, l, tt.send)
			peer.(*net.TCPConn).CloseWrite()
			c := acceptOne(t, l)
			if c.Client() != addrPort(peer.LocalAddr()) || c.Via() != wire.None {
				t.Fatalf("untrusted peer reported as client %v via %v", c.Client(), c.Via())
			}
			got, err := io.ReadAll(c)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err %v, want %v", err, tt.wantErr)
				}
				if n := l.Stats().Rejected[tt.reason]; n != 1 {
					t.Fatalf("rejected[%v] = %d", tt.reason, n)
				}
				return
			}
			if err != nil || string(got) != tt.wantData {
				t.Fatalf("payload %q, want %q", got, tt.wantData)
			}
			if l.Stats().Untrusted != 1 {
				t.Fatalf("untrusted = %d", l.Stats().Untrusted)
			}
		})
	}
}

func TestOptionalSilentPeerServedDirect(t *testing.T) {
	l := newTestListener(t, Config{Trusted: loopback, Optional: true, HeaderTimeout: 20 * time.Millisecond})
	peer := dialSend(t, l, nil)
	c := acceptOne(t, l)
	if c.Via() != wire.None || c.Client() != addrPort(peer.LocalAddr()) {
		t.Fatalf("via %v client %v", c.Via(), c.Client())
	}
	// The header deadline must not linger on the served connection.
	go func() { time.Sleep(50 * time.Millisecond); peer.Write([]byte("late")) }()
	if got := readN(t, c, 4); got != "late" {
		t.Fatalf("read %q", got)
	}
}

func TestPassThroughCopies(t *testing.T) {
	l := newTestListener(t, Config{Trusted: loopback})
	payload := bytes.Repeat([]byte("0123456789abcdef"), 64<<10)
	peer := dialSend(t, l, append([]byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n"), payload[:1000]...))
	c := acceptOne(t, l)
	go func() {
		peer.Write(payload[1000:])
		peer.(*net.TCPConn).CloseWrite()
	}()
	// WriteTo (io.Copy from the Conn) delivers the early bytes, then the rest.
	var got bytes.Buffer
	if _, err := io.Copy(&got, c); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), payload) {
		t.Fatalf("got %d bytes, want %d (content differs: %v)", got.Len(), len(payload), got.Len() == len(payload))
	}
	// ReadFrom (io.Copy into the Conn) reaches the peer unchanged.
	var back bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); io.Copy(&back, peer) }()
	if _, err := io.Copy(c, bytes.NewReader(payload)); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	wg.Wait()
	if !bytes.Equal(back.Bytes(), payload) {
		t.Fatalf("peer got %d bytes, want %d", back.Len(), len(payload))
	}
}

func TestCloseInterruptsHandshakes(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			l := newModeListener(t, Config{Trusted: loopback, HeaderTimeout: time.Hour}, mode)
			done := make(chan error, 1)
			go func() { _, err := l.Accept(); done <- err }()
			peer := dialSend(t, l, []byte("PROXY "))
			waitFor(t, func() bool { return l.Stats().Pending == 1 })
			closed := make(chan struct{})
			go func() { l.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(waitLimit):
				t.Fatal("Close waited for a header")
			}
			if err := <-done; !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Accept after Close: %v", err)
			}
			peer.SetReadDeadline(time.Now().Add(waitLimit))
			if _, err := peer.Read(make([]byte, 1)); err == nil {
				t.Fatal("pending connection left open")
			}
		})
	}
}

// failingListener returns scripted errors, then blocks until closed; it
// stands in for kernel conditions (EMFILE) a test cannot cause safely.
type failingListener struct {
	net.Listener
	errs []error
	mu   sync.Mutex
}

func (f *failingListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		f.mu.Unlock()
		return nil, err
	}
	f.mu.Unlock()
	return f.Listener.Accept()
}

func TestInnerAcceptErrors(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	transient := errors.New("too many open files")
	l, err := New(&failingListener{Listener: inner, errs: []error{transient}}, Config{Trusted: loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Accept(); !errors.Is(err, transient) {
		t.Fatalf("first Accept: %v, want the inner error", err)
	}
	dialSend(t, l, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n"))
	if c := acceptOne(t, l); c.Client() != client4 {
		t.Fatal("listener did not recover after a transient error")
	}
	inner.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after the inner listener closed: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no trusted prefixes", Config{}},
		{"invalid prefix", Config{Trusted: []netip.Prefix{{}}}},
		{"spp on tcp", Config{Trusted: loopback, Protocols: []wire.Proto{wire.SPP}}},
		// No toa.ko here, and nothing pinned in the folder named.
		{"toa without a receiver", Config{Trusted: loopback, Protocols: []wire.Proto{wire.TOA}, TOAPinDir: "/nonexistent/realip-toa"}},
	}
	for _, tt := range tests {
		inner, _ := net.Listen("tcp", "127.0.0.1:0")
		if _, err := New(inner, tt.cfg); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
		inner.Close()
	}
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer pc.Close()
	if _, err := NewPacketConn(pc, Config{Trusted: loopback, Protocols: []wire.Proto{wire.PPv1}}); err == nil {
		t.Error("ppv1 on udp accepted")
	}
}

// TestSlowHeaderWithinTimeout sends a header in pieces spread over part of
// HeaderTimeout: the listener's clock must not cut it short, and the
// connection it hands out must read normally afterwards.
func TestSlowHeaderWithinTimeout(t *testing.T) {
	l := newTestListener(t, Config{Trusted: loopback, HeaderTimeout: 2 * time.Second})
	peer := dialSend(t, l, []byte("PROXY TCP4 192.0.2.7 "))
	go func() {
		time.Sleep(300 * time.Millisecond)
		peer.Write([]byte("198.51.100.1 40000 443\r\n"))
		time.Sleep(300 * time.Millisecond)
		peer.Write([]byte("body"))
	}()
	c := acceptOne(t, l)
	if want := netip.MustParseAddrPort("192.0.2.7:40000"); c.Client() != want {
		t.Fatalf("client %v, want %v", c.Client(), want)
	}
	if got := readN(t, c, 4); got != "body" {
		t.Fatalf("read %q", got)
	}
	if s := l.Stats(); s.Rejected[ReasonTimeout] != 0 {
		t.Fatalf("timeouts counted: %+v", s.Rejected)
	}
}

// TestClockExpiresOnlyOverdueHandshakes drives the handshake clock by hand.
func TestClockExpiresOnlyOverdueHandshakes(t *testing.T) {
	l := newTestListener(t, Config{Trusted: loopback, HeaderTimeout: time.Hour})
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	l.mu.Lock()
	l.slot(&handshake{raw: a, peer: netip.MustParseAddrPort("127.0.0.1:1"), born: l.tick})
	l.mu.Unlock()
	defer l.wg.Done() // slot counted a goroutine; the test stands in for it
	for i := 0; i < handshakeTicks; i++ {
		l.expireHandshakes()
	}
	l.mu.Lock()
	expired := l.pending.byConn[a].expired
	l.mu.Unlock()
	if expired {
		t.Fatalf("expired after %d ticks, the timeout is %d ticks", handshakeTicks, handshakeTicks)
	}
	l.expireHandshakes()
	if _, err := a.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("read after expiry: %v, want a timeout", err)
	}
	if next, err := l.untrack(a); next != nil || err != nil {
		t.Fatalf("untrack: next %v, %v", next, err)
	}
	go b.Write([]byte("x"))
	if got := readN(t, a, 1); got != "x" {
		t.Fatalf("read after untrack %q: the expired deadline lingers", got)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestListenerTrusts(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(inner, Config{Trusted: []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tt := range []struct {
		peer string
		want bool
	}{
		{"192.0.2.7", true},
		{"::ffff:192.0.2.7", true}, // mapped, matched as IPv4
		{"198.51.100.7", false},
		{"2001:db8::1", true},
		{"2001:db9::1", false},
	} {
		if got := l.Trusts(netip.MustParseAddr(tt.peer)); got != tt.want {
			t.Errorf("Trusts(%s) = %v, want %v", tt.peer, got, tt.want)
		}
	}
}
