//go:build linux

package toarecv

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/cgroup2"
	"github.com/realip/realip/internal/cgroup2/cgrouptest"
	"github.com/realip/realip/internal/netns"
	"github.com/realip/realip/internal/toacraft"
)

// The lab: an edge (trusted 198.51.100.1, 2001:db8:2::1; untrusted
// 198.51.100.66, 2001:db8:2::66) and an origin (198.51.100.10, 2001:db8:2::10) on one link.
var (
	edgeV4    = netip.MustParseAddr("198.51.100.1")
	edgeV6    = netip.MustParseAddr("2001:db8:2::1")
	rogueV4   = netip.MustParseAddr("198.51.100.66")
	rogueV6   = netip.MustParseAddr("2001:db8:2::66")
	originV4  = netip.MustParseAddr("198.51.100.10")
	originV6  = netip.MustParseAddr("2001:db8:2::10")
	trustEdge = []netip.Prefix{netip.MustParsePrefix("198.51.100.1/32"), netip.MustParsePrefix("2001:db8:2::1/128")}
)

// recvLab is a receiver and a crafter attached to one throw-away cgroup
// that this test process has joined, and the two hosts.
type recvLab struct {
	r            *Receiver
	cr           *toacraft.Crafter
	edge, origin *netns.Host
	detached     bool // the receiver was unpinned and closed
}

func newRecvLab(t *testing.T, cfg Config) *recvLab {
	t.Helper()
	lab := netns.NewLab(t)
	l := &recvLab{edge: lab.Host("edge"), origin: lab.Host("origin")}
	lab.Link(l.edge, l.origin,
		[]netip.Prefix{netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("198.51.100.66/24"), netip.MustParsePrefix("2001:db8:2::1/64"), netip.MustParsePrefix("2001:db8:2::66/64")},
		[]netip.Prefix{netip.MustParsePrefix("198.51.100.10/24"), netip.MustParsePrefix("2001:db8:2::10/64")})
	l.r, _ = openTest(t, cfg)
	orig, err := cgroup2.Self(cgroup2.SelfCgroup, cgroup2.SelfMountinfo)
	if err != nil {
		t.Fatal(err)
	}
	if err := cgrouptest.Join(l.r.Cgroup(), os.Getpid()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cgrouptest.Join(orig, os.Getpid()); err != nil {
			t.Error(err)
		}
	})
	if l.cr, err = toacraft.Open(l.r.Cgroup()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.cr.Close() })
	return l
}

// conn is one connection through the lab: what accept() and getpeername()
// said on the origin, and the receiver's entry.
type conn struct {
	accepted, peer netip.AddrPort
	entry          Entry
	hasEntry       bool
	edge           netip.AddrPort // the sender's own address
}

// how says how a connection is made: the option on the SYN alone, and a
// listener that saves SYNs (TCP_SAVE_SYN).
type how struct{ synOnly, saveSYN bool }

// dial connects from the edge's from address to listen on the origin with
// opt crafted on (nil: no option), passes a byte both ways, and reports.
func (l *recvLab) dial(t *testing.T, network string, listen, from netip.AddrPort, opt []byte, h how) conn {
	t.Helper()
	var ln net.Listener
	lc := net.ListenConfig{}
	if h.saveSYN {
		lc.Control = func(_, _ string, rc syscall.RawConn) error {
			var err error
			rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_SAVE_SYN, 1) })
			return err
		}
	}
	if err := l.origin.Do(func() (err error) {
		ln, err = lc.Listen(t.Context(), network, listen.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(from), Timeout: 5 * time.Second}
	switch {
	case opt != nil && h.synOnly:
		d.Control = l.cr.ControlSYN(opt)
	case opt != nil:
		d.Control = l.cr.Control(opt)
	}
	target := netip.AddrPortFrom(listen.Addr(), uint16(ln.Addr().(*net.TCPAddr).Port))
	if listen.Addr().IsUnspecified() {
		target = netip.AddrPortFrom(map[bool]netip.Addr{true: originV4, false: originV6}[from.Addr().Is4()], target.Port())
	}
	var out net.Conn
	if err := l.edge.Do(func() (err error) {
		out, err = d.Dial("tcp", target.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := out.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	in, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	return l.inspect(t, in.(*net.TCPConn), out)
}

func (l *recvLab) inspect(t *testing.T, in *net.TCPConn, out net.Conn) conn {
	t.Helper()
	buf := make([]byte, 1)
	if _, err := io.ReadFull(in, buf); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Write(buf); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(out, buf); err != nil {
		t.Fatalf("the answer did not come back: %v", err)
	}
	c := conn{accepted: in.RemoteAddr().(*net.TCPAddr).AddrPort(), edge: out.LocalAddr().(*net.TCPAddr).AddrPort()}
	rc, err := in.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var lerr error
	rc.Control(func(fd uintptr) {
		c.peer = getpeername(t, int(fd))
		if !l.detached {
			c.entry, c.hasEntry, lerr = l.r.Lookup(int(fd))
		}
	})
	if lerr != nil {
		t.Fatal(lerr)
	}
	return c
}

// counters returns the receiver's counters, summed, by name.
func (l *recvLab) counters(t *testing.T) map[string]uint64 {
	t.Helper()
	cs, err := l.r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]uint64)
	for _, c := range cs {
		m[c.Name] = c.Sum()
	}
	return m
}

func option(t *testing.T, kind, length uint8, client string) []byte {
	t.Helper()
	opt, err := toacraft.Option(kind, length, netip.MustParseAddrPort(client))
	if err != nil {
		t.Fatal(err)
	}
	return opt
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// delta is what a case must move the counters by; the rest must stay.
type delta map[string]uint64

var watched = []string{
	"syn_recv_sock_toa", "syn_recv_sock_no_toa", "syn_recv_sock_untrusted", "syn_recv_sock_bad_option", "syn_recv_sock_from_syn",
	"getname_toa_ok", "getname_toa_mismatch", "ip6_address_alloc", "alloc_failed",
}

func checkDelta(t *testing.T, name string, before, after map[string]uint64, want delta) {
	t.Helper()
	for _, k := range watched {
		if got := after[k] - before[k]; got != want[k] {
			t.Errorf("%s: %s rose by %d, want %d", name, k, got, want[k])
		}
	}
}

// receiverCase is one connection and what the receiver must make of it.
type receiverCase struct {
	name    string
	network string // of the origin's listener
	listen  string
	from    netip.Addr
	opt     func(t *testing.T) []byte
	// want: the address accept() and getpeername() return ("edge": the
	// sender's own), the entry's client (invalid: no entry).
	want      string
	wantEntry string
	counts    delta
	how       how
}

func v4Opt(client string) func(*testing.T) []byte {
	return func(t *testing.T) []byte { return option(t, 200, 8, client) }
}

func v6Opt(kind uint8, client string) func(*testing.T) []byte {
	return func(t *testing.T) []byte { return option(t, kind, 20, client) }
}

func rawOpt(b ...byte) func(*testing.T) []byte { return func(*testing.T) []byte { return b } }

var honoured = delta{"syn_recv_sock_toa": 1, "ip6_address_alloc": 1, "getname_toa_ok": 2}

var receiverCases = []receiverCase{
	{"v4-client-v4-socket", "tcp4", "198.51.100.10:0", edgeV4, v4Opt("203.0.113.7:4242"), "203.0.113.7:4242", "203.0.113.7:4242", honoured, how{}},
	{"v4-client-any-socket", "tcp", "[::]:0", edgeV4, v4Opt("203.0.113.7:4242"), "203.0.113.7:4242", "203.0.113.7:4242", honoured, how{}},
	{"v4-client-over-v6", "tcp6", "[2001:db8:2::10]:0", edgeV6, v4Opt("203.0.113.8:4243"), "203.0.113.8:4243", "203.0.113.8:4243", honoured, how{}},
	{"v6-client-v6-socket", "tcp6", "[2001:db8:2::10]:0", edgeV6, v6Opt(253, "[2001:db8:1::7]:4242"), "[2001:db8:1::7]:4242", "[2001:db8:1::7]:4242", honoured, how{}},
	{"v6-client-kind-254", "tcp6", "[2001:db8:2::10]:0", edgeV6, v6Opt(254, "[2001:db8:1::8]:80"), "[2001:db8:1::8]:80", "[2001:db8:1::8]:80", honoured, how{}},
	// The hook cannot change the family: the edge stays, the entry has the client.
	{"v6-client-v4-socket", "tcp4", "198.51.100.10:0", edgeV4, v6Opt(253, "[2001:db8:1::7]:4242"), "edge", "[2001:db8:1::7]:4242",
		delta{"syn_recv_sock_toa": 1, "ip6_address_alloc": 1, "getname_toa_mismatch": 2}, how{}},
	{"untrusted-source", "tcp4", "198.51.100.10:0", rogueV4, v4Opt("203.0.113.7:4242"), "edge", "", delta{"syn_recv_sock_untrusted": 1}, how{}},
	{"untrusted-source-v6", "tcp6", "[2001:db8:2::10]:0", rogueV6, v6Opt(253, "[2001:db8:1::7]:4242"), "edge", "", delta{"syn_recv_sock_untrusted": 1}, how{}},
	{"untrusted-mapped-any-socket", "tcp", "[::]:0", rogueV4, v4Opt("203.0.113.7:4242"), "edge", "", delta{"syn_recv_sock_untrusted": 1}, how{}},
	{"no-option", "tcp4", "198.51.100.10:0", edgeV4, nil, "edge", "", delta{"syn_recv_sock_no_toa": 1}, how{}},
	{"unknown-kind", "tcp4", "198.51.100.10:0", edgeV4, rawOpt(99, 8, 0, 80, 203, 0, 113, 7), "edge", "", delta{"syn_recv_sock_no_toa": 1}, how{}},
	{"length-6", "tcp4", "198.51.100.10:0", edgeV4, rawOpt(200, 6, 0, 80, 203, 0), "edge", "", delta{"syn_recv_sock_bad_option": 1}, how{}},
	{"length-10", "tcp4", "198.51.100.10:0", edgeV4, rawOpt(200, 10, 0, 80, 203, 0, 113, 7, 0, 0), "edge", "", delta{"syn_recv_sock_bad_option": 1}, how{}},
	{"length-4-kind-254", "tcp4", "198.51.100.10:0", edgeV4, rawOpt(254, 4, 0, 80), "edge", "", delta{"syn_recv_sock_bad_option": 1}, how{}},
	// The SYN is read when the handshake segment has no option and the
	// listener saved it; a SYN nobody saved is gone.
	{"syn-only-saved", "tcp4", "198.51.100.10:0", edgeV4, v4Opt("203.0.113.9:9"), "203.0.113.9:9", "203.0.113.9:9",
		delta{"syn_recv_sock_toa": 1, "ip6_address_alloc": 1, "getname_toa_ok": 2, "syn_recv_sock_from_syn": 1}, how{synOnly: true, saveSYN: true}},
	{"syn-only-saved-v6", "tcp", "[::]:0", edgeV6, v6Opt(253, "[2001:db8:1::9]:9"), "[2001:db8:1::9]:9", "[2001:db8:1::9]:9",
		delta{"syn_recv_sock_toa": 1, "ip6_address_alloc": 1, "getname_toa_ok": 2, "syn_recv_sock_from_syn": 1}, how{synOnly: true, saveSYN: true}},
	{"syn-only-not-saved", "tcp4", "198.51.100.10:0", edgeV4, v4Opt("203.0.113.9:9"), "edge", "", delta{"syn_recv_sock_no_toa": 1}, how{synOnly: true}},
	{"saved-syn-and-ack", "tcp4", "198.51.100.10:0", edgeV4, v4Opt("203.0.113.9:9"), "203.0.113.9:9", "203.0.113.9:9", honoured, how{saveSYN: true}},
}

// refusedClients are clients no peer can have: the option is bad.
var refusedClients = []struct {
	kind, length uint8
	client       string
}{
	{200, 8, "0.0.0.0:0"}, {200, 8, "0.0.0.0:80"}, {200, 8, "224.0.0.1:4242"}, {200, 8, "239.1.2.3:80"},
	{200, 8, "255.255.255.255:80"}, {200, 8, "1.2.3.4:0"}, {200, 20, "[::]:1"}, {253, 20, "[ff02::1]:80"},
	{254, 20, "[::ffff:0.0.0.0]:80"}, {254, 20, "[::ffff:224.0.0.1]:80"}, {253, 20, "[2001:db8::1]:0"},
}

func TestReceiverCases(t *testing.T) {
	l := newRecvLab(t, Config{Trusted: trustEdge})
	cases := receiverCases
	for _, rc := range refusedClients {
		cases = append(cases, receiverCase{fmt.Sprintf("refused-%d-%d-%s", rc.kind, rc.length, rc.client), "tcp4", "198.51.100.10:0", edgeV4,
			func(t *testing.T) []byte { return option(t, rc.kind, rc.length, rc.client) }, "edge", "", delta{"syn_recv_sock_bad_option": 1}, how{}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { l.run(t, tc) })
	}
}

func (l *recvLab) run(t *testing.T, tc receiverCase) {
	var opt []byte
	if tc.opt != nil {
		opt = tc.opt(t)
	}
	before := l.counters(t)
	c := l.dial(t, tc.network, ap(tc.listen), netip.AddrPortFrom(tc.from, 0), opt, tc.how)
	after := l.counters(t)
	want := c.edge
	if tc.want != "edge" {
		want = ap(tc.want)
	}
	if unmapped(c.accepted) != want || unmapped(c.peer) != want {
		t.Errorf("accept() = %v, getpeername() = %v; want %v", c.accepted, c.peer, want)
	}
	switch {
	case tc.wantEntry == "" && c.hasEntry:
		t.Errorf("entry %+v, want none", c.entry)
	case tc.wantEntry != "" && (!c.hasEntry || c.entry.Client != ap(tc.wantEntry) || c.entry.Edge != unmapped(c.edge)):
		t.Errorf("entry %+v (%v), want client %s edge %v", c.entry, c.hasEntry, tc.wantEntry, c.edge)
	}
	checkDelta(t, tc.name, before, after, tc.counts)
}

func unmapped(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// getpeername asks the kernel directly (net.Conn's RemoteAddr is what
// accept() said).
func getpeername(t *testing.T, fd int) netip.AddrPort {
	t.Helper()
	sa, err := unix.Getpeername(fd)
	if err != nil {
		t.Fatalf("getpeername: %v", err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	t.Fatalf("getpeername: %T", sa)
	return netip.AddrPort{}
}

// TestReceiverSyncookies: with SYN cookies the handshake ACK is the only
// source, and it suffices.
func TestReceiverSyncookies(t *testing.T) {
	l := newRecvLab(t, Config{Trusted: trustEdge})
	l.origin.Sysctl("net.ipv4.tcp_syncookies", "2") // cookies for every SYN
	sent := l.syncookiesSent(t)
	for _, tc := range receiverCases[:5] {
		t.Run(tc.name, func(t *testing.T) { l.run(t, tc) })
	}
	if n := l.syncookiesSent(t) - sent; n < 5 {
		t.Errorf("the origin sent %d SYN cookies for 5 connections", n)
	}
}

// syncookiesSent reads TcpExt SyncookiesSent in the origin's namespace.
func (l *recvLab) syncookiesSent(t *testing.T) uint64 {
	t.Helper()
	var b []byte
	if err := l.origin.Do(func() (err error) {
		b, err = os.ReadFile("/proc/thread-self/net/netstat")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		for j := range names {
			if names[j] == "SyncookiesSent" && j < len(values) {
				n, _ := strconv.ParseUint(values[j], 10, 64)
				return n
			}
		}
	}
	t.Fatal("no SyncookiesSent in /proc/net/netstat")
	return 0
}

// accepted is what the origin saw of one connection of load: the address
// accept() returned, and whether the edge began dialing after the phase
// changed (its first byte says so).
type accepted struct {
	addr  netip.AddrPort
	after bool
}

// load dials the origin from the trusted edge address with a TOA option
// until stop closes, and reports every connection the origin accepted.
// Dials begun once phase is set say so in their first byte.
func (l *recvLab) load(t *testing.T, workers int, phase *atomic.Bool, stop <-chan struct{}) <-chan accepted {
	t.Helper()
	var ln net.Listener
	if err := l.origin.Do(func() (err error) {
		ln, err = net.Listen("tcp4", "198.51.100.10:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	seen := make(chan accepted)
	go serveLoad(ln, seen)
	opt := option(t, 200, 8, "203.0.113.7:4242")
	var dialers sync.WaitGroup
	for range workers {
		dialers.Go(func() {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: edgeV4.AsSlice()}, Control: l.cr.Control(opt)}
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := l.dialOnce(&d, ln.Addr().String(), phase.Load()); err != nil {
					t.Errorf("load: %v", err)
					return
				}
			}
		})
	}
	go func() {
		dialers.Wait()
		ln.Close()
	}()
	return seen
}

// dialOnce makes one connection of load and sends its phase byte.
func (l *recvLab) dialOnce(d *net.Dialer, target string, after bool) error {
	var c net.Conn
	if err := l.edge.Do(func() (err error) {
		c, err = d.Dial("tcp", target)
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	b := []byte{'b'}
	if after {
		b[0] = 'a'
	}
	_, err := c.Write(b)
	return err
}

// serveLoad accepts load's connections and reports each.
func serveLoad(ln net.Listener, seen chan<- accepted) {
	defer close(seen)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		b := make([]byte, 1)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, b); err == nil {
			seen <- accepted{c.RemoteAddr().(*net.TCPAddr).AddrPort(), b[0] == 'a'}
		}
		c.Close()
	}
}

// TestTrustChangeUnderLoad: a new trusted list applies to connections
// from then on, without detaching anything: a connection dialed after the
// change shows the edge, one from before the client or the edge.
func TestTrustChangeUnderLoad(t *testing.T) {
	l := newRecvLab(t, Config{Trusted: trustEdge})
	var changed atomic.Bool
	stop := make(chan struct{})
	seen := l.load(t, 4, &changed, stop)
	client := ap("203.0.113.7:4242")
	var before, after int
	for c := range seen {
		a := unmapped(c.addr)
		switch {
		case !changed.Load() && a == client:
			// Accepted before SetConfig was called: its handshake was
			// handled before (accept() waits for the socket lock the
			// handshake's processing holds), by the old list.
			before++
		case !changed.Load():
			t.Errorf("accept() = %v before the change, want the client %v", a, client)
		case !c.after && (a == client || a.Addr() == edgeV4):
			// In flight during the change: either list may have seen it.
		case c.after && a.Addr() == edgeV4:
			after++
		default:
			t.Errorf("accept() = %v for a connection dialed after the change: %v", a, c.after)
		}
		if before == 200 && !changed.Load() {
			if err := l.r.SetConfig(Config{Trusted: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}); err != nil {
				t.Fatal(err)
			}
			changed.Store(true)
		}
		if after == 200 {
			close(stop)
		}
	}
	if c := l.counters(t); c["syn_recv_sock_untrusted"] < 200 {
		t.Errorf("syn_recv_sock_untrusted = %d, want 200 at least", c["syn_recv_sock_untrusted"])
	}
	l.checkNoEntries(t)
}

// checkNoEntries waits (bounded) until every entry made was dropped with
// its socket: all connections are closed by now.
func (l *recvLab) checkNoEntries(t *testing.T) {
	t.Helper()
	var c map[string]uint64
	for range 100 {
		if c = l.counters(t); c["ip6_address_alloc"] == c["ip6_address_free"] {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("ip6_address_alloc = %d, ip6_address_free = %d with every connection closed", c["ip6_address_alloc"], c["ip6_address_free"])
}

// TestDetachUnderLoad: Unpin while connections come and go; the open ones
// keep working and then show the edge, new ones show the edge, and nothing
// stays pinned. (Entries are counted freed with their sockets:
// TestTrustChangeUnderLoad checks alloc == free after its load.)
func TestDetachUnderLoad(t *testing.T) {
	l := newRecvLab(t, Config{Trusted: trustEdge})
	in, out := l.hold(t)
	if p := peerOf(t, in); p != ap("203.0.113.7:4242") {
		t.Fatalf("before detaching: getpeername() = %v", p)
	}
	var detached atomic.Bool
	stop := make(chan struct{})
	seen := l.load(t, 4, &detached, stop)
	n := 0
	for c := range seen {
		if n++; n == 300 {
			if err := Unpin(l.r.PinDir()); err != nil {
				t.Fatal(err)
			}
			l.r.Close()
			l.detached = true
			detached.Store(true)
		}
		if n == 600 {
			close(stop)
		}
		if c.after && unmapped(c.addr).Addr() != edgeV4 {
			t.Errorf("connection %d dialed after detaching: accept() = %v, want the edge", n, c.addr)
		}
	}
	if err := pingPong(in, out); err != nil {
		t.Errorf("a connection from before the detach: %v", err)
	}
	if p := peerOf(t, in); unmapped(p) != out.LocalAddr().(*net.TCPAddr).AddrPort() {
		t.Errorf("after detaching, getpeername() of a connection from before = %v, want the edge %v", p, out.LocalAddr())
	}
	if _, err := OpenPinned(l.r.PinDir()); !errors.Is(err, ErrNotPinned) {
		t.Errorf("OpenPinned after Unpin = %v", err)
	}
	c := l.dial(t, "tcp4", ap("198.51.100.10:0"), netip.AddrPortFrom(edgeV4, 0), option(t, 200, 8, "203.0.113.7:4242"), how{})
	if unmapped(c.peer) != unmapped(c.edge) {
		t.Errorf("after detaching: getpeername() = %v, want the edge %v", c.peer, c.edge)
	}
}

// hold makes one TOA connection that stays open until the test ends.
func (l *recvLab) hold(t *testing.T) (in *net.TCPConn, out net.Conn) {
	t.Helper()
	var ln net.Listener
	if err := l.origin.Do(func() (err error) {
		ln, err = net.Listen("tcp4", "198.51.100.10:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: edgeV4.AsSlice()}, Control: l.cr.Control(option(t, 200, 8, "203.0.113.7:4242"))}
	if err := l.edge.Do(func() (err error) {
		out, err = d.Dial("tcp", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); out.Close() })
	return a.(*net.TCPConn), out
}

// peerOf is getpeername() of c.
func peerOf(t *testing.T, c *net.TCPConn) netip.AddrPort {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var p netip.AddrPort
	rc.Control(func(fd uintptr) { p = getpeername(t, int(fd)) })
	return p
}

// pingPong passes a byte each way.
func pingPong(a, b net.Conn) error {
	buf := make([]byte, 1)
	if _, err := a.Write([]byte("p")); err != nil {
		return err
	}
	if _, err := io.ReadFull(b, buf); err != nil {
		return err
	}
	if _, err := b.Write([]byte("q")); err != nil {
		return err
	}
	_, err := io.ReadFull(a, buf)
	return err
}

// TestResetBeforeAccept: a connection reset before accept() still shows
// the client at accept() (the kernel's getname answers accept() on a
// closed socket, and toa.ko answers it too), and its entry counts as freed
// once.
func TestResetBeforeAccept(t *testing.T) {
	l := newRecvLab(t, Config{Trusted: trustEdge})
	var ln net.Listener
	if err := l.origin.Do(func() (err error) {
		ln, err = net.Listen("tcp4", "198.51.100.10:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	before := l.counters(t)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: edgeV4.AsSlice()}, Control: l.cr.Control(option(t, 200, 8, "203.0.113.7:4242"))}
	var out net.Conn
	if err := l.edge.Do(func() (err error) {
		out, err = d.Dial("tcp", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	out.(*net.TCPConn).SetLinger(0) // close sends a reset
	waitFor(t, func() bool { return l.counters(t)["syn_recv_sock_toa"] > before["syn_recv_sock_toa"] })
	out.Close()
	waitFor(t, func() bool { return l.counters(t)["ip6_address_free"] > before["ip6_address_free"] })
	in, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if got := unmapped(in.RemoteAddr().(*net.TCPAddr).AddrPort()); got != ap("203.0.113.7:4242") {
		t.Errorf("accept() of a reset connection = %v, want the client", got)
	}
	after := l.counters(t)
	if n := after["ip6_address_free"] - before["ip6_address_free"]; n != 1 {
		t.Errorf("ip6_address_free rose by %d, want 1", n)
	}
}

// waitFor polls cond for up to 5 s (the kernel's softirq work is not
// synchronous with the calls that start it).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 250 {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("condition not met within 5 s")
}
