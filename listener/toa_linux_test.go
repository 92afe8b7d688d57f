//go:build linux

package listener

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/realip/realip/internal/cgroup2"
	"github.com/realip/realip/internal/cgroup2/cgrouptest"
	"github.com/realip/realip/internal/netns"
	"github.com/realip/realip/internal/testenv"
	"github.com/realip/realip/toactl"
	"github.com/realip/realip/toarecv"
	"github.com/realip/realip/wire"
)

// The TOA lab: client - edge - origin, as in test/integration. The edge is
// the real realip-edge with toa rules; the origin is this test process,
// whose sockets the eBPF receiver serves.
var (
	labClientV4  = netip.MustParseAddr("192.0.2.10")
	labClientV6  = netip.MustParseAddr("2001:db8:1::10")
	labFrontV4   = netip.MustParseAddr("192.0.2.1")
	labFrontV6   = netip.MustParseAddr("2001:db8:1::1")
	labEdgeV4    = netip.MustParseAddr("198.51.100.1")
	labEdgeV6    = netip.MustParseAddr("2001:db8:2::1")
	labOriginV4  = netip.MustParseAddr("198.51.100.10")
	labOriginV6  = netip.MustParseAddr("2001:db8:2::10")
	labEdges     = []netip.Prefix{netip.PrefixFrom(labEdgeV4, 32), netip.PrefixFrom(labEdgeV6, 128)}
	labElsewhere = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
)

// The edge's toa rules: front port -> origin port.
const labRules = `tcp:1000 198.51.100.10 8000 off toa
tcp:1001 198.51.100.10 8001 off toa
tcp:1002 2001:db8:2::10 8002 off toa
tcp:1003 198.51.100.10 8003 off toa
tcp:1004 2001:db8:2::10 8003 off toa
`

type toaLab struct {
	*netns.Lab
	client, edge, origin *netns.Host
	recv                 *toarecv.Receiver
	pinDir               string
	cgroup               string // the receiver's cgroup, this process's too
}

// newTOALab attaches the eBPF receiver (trusting the edge) to a throw-away
// cgroup, moves this process into it for the test's lifetime (the sockets
// it creates meanwhile are the receiver's), and starts realip-edge with
// toa rules in the lab.
func newTOALab(t *testing.T) *toaLab {
	t.Helper()
	goTool := testenv.RequireCommand(t, "go")
	cg, _ := cgrouptest.New(t, "realip-listener")
	l := &toaLab{cgroup: cg, pinDir: filepath.Join("/sys/fs/bpf", fmt.Sprintf("realip-listener-test-%d-%06x", os.Getpid(), rand.Uint32()&0xffffff))}
	recv, err := toarecv.Open(toarecv.Options{Cgroup: cg, PinDir: l.pinDir}, toarecv.Config{Trusted: labEdges})
	if err != nil {
		if errors.Is(err, toarecv.ErrNotPermitted) || errors.Is(err, toarecv.ErrUnsupported) || errors.Is(err, toarecv.ErrNoBPFFS) {
			testenv.SkipOrFail(t, "the eBPF TOA receiver cannot run here: %v", err)
		}
		t.Fatalf("attaching the eBPF TOA receiver: %v", err)
	}
	l.recv = recv
	t.Cleanup(func() {
		recv.Close()
		if err := toarecv.Unpin(l.pinDir); err != nil {
			t.Errorf("unpinning the test receiver: %v", err)
		}
	})
	joinForTest(t, cg)
	l.Lab = netns.NewLab(t) // after the cgroup: its processes die before the cgroup goes
	l.client, l.edge, l.origin = l.Host("client"), l.Host("edge"), l.Host("origin")
	l.Link(l.client, l.edge, labPrefixes(labClientV4, 24, labClientV6, 64), labPrefixes(labFrontV4, 24, labFrontV6, 64))
	l.Link(l.edge, l.origin, labPrefixes(labEdgeV4, 24, labEdgeV6, 64), labPrefixes(labOriginV4, 24, labOriginV6, 64))
	l.startEdge(t, goTool)
	return l
}

// joinForTest moves this process into cg until the test ends.
func joinForTest(t *testing.T, cg string) {
	t.Helper()
	home, err := cgroup2.Self(cgroup2.SelfCgroup, cgroup2.SelfMountinfo)
	if err != nil {
		t.Fatalf("finding this process's cgroup: %v", err)
	}
	if err := cgrouptest.Join(cg, os.Getpid()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cgrouptest.Join(home, os.Getpid()); err != nil {
			t.Errorf("moving back: %v", err)
		}
	})
}

func labPrefixes(a4 netip.Addr, b4 int, a6 netip.Addr, b6 int) []netip.Prefix {
	return []netip.Prefix{netip.PrefixFrom(a4, b4), netip.PrefixFrom(a6, b6)}
}

// startEdge runs realip-edge in the edge host with labRules, its sender
// attached to the receiver's cgroup (the edge is a child of this process,
// so it runs there). `ip netns exec` hides the cgroup2 mount under /sys,
// so the hierarchy is mounted again in a temporary folder for it.
func (l *toaLab) startEdge(t *testing.T, goTool string) {
	t.Helper()
	bin := buildCommand(t, goTool, "github.com/realip/realip/cmd/realip-edge")
	mnt, _, err := cgroup2.Mount(cgroup2.SelfMountinfo)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(mnt, l.cgroup)
	if err != nil {
		t.Fatal(err)
	}
	cgDir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "cgroup2", "cgroup2", cgDir).CombinedOutput(); err != nil {
		testenv.SkipOrFail(t, "mount cgroup2: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", cgDir).Run() })
	rules := filepath.Join(t.TempDir(), "rules.txt")
	if err := os.WriteFile(rules, []byte(labRules), 0o644); err != nil {
		t.Fatal(err)
	}
	p := l.edge.Start(t, bin, "-rules", rules, "-toa-cgroup", filepath.Join(cgDir, rel))
	waitProcOutput(t, p, `msg="edge: rules applied"`)
}

// buildCommand builds the main package pkg into a temporary folder.
func buildCommand(t *testing.T, goTool, pkg string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), filepath.Base(pkg))
	if out, err := exec.Command(goTool, "build", "-o", path, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return path
}

// waitProcOutput waits until p printed want; a hang, not a timing, fails.
func waitProcOutput(t *testing.T, p *netns.Proc, want string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !strings.Contains(p.Output(), want) {
		select {
		case <-p.Done():
			t.Fatalf("%v exited (%v) before printing %q:\n%s", p.Cmd.Args, p.Err(), want, p.Output())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v did not print %q:\n%s", p.Cmd.Args, want, p.Output())
		}
	}
}

// listen opens a TOA listener in the origin host, asking the lab's
// receiver.
func (l *toaLab) listen(t *testing.T, network, address string, cfg Config) (*Listener, *acceptor) {
	t.Helper()
	cfg.Protocols = []wire.Proto{wire.TOA}
	cfg.TOAPinDir = l.pinDir
	var ln *Listener
	err := l.origin.Do(func() error {
		inner, err := net.Listen(network, address)
		if err != nil {
			return err
		}
		if ln, err = New(inner, cfg); err != nil {
			inner.Close()
		}
		return err
	})
	if err != nil {
		t.Fatalf("TOA listener on %s: %v", address, err)
	}
	if _, ok := ln.toa.(*pinnedTOA); !ok {
		t.Fatalf("the listener asks %T, want the pinned eBPF receiver", ln.toa)
	}
	return ln, serveAccepts(t, ln)
}

// dial connects from h to dst and returns the connection's local address.
func dial(t *testing.T, h *netns.Host, dst netip.AddrPort) netip.AddrPort {
	t.Helper()
	var c net.Conn
	err := h.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", dst.String(), waitLimit)
		return err
	})
	if err != nil {
		t.Fatalf("dial %v from %s: %v", dst, h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return addrPort(c.LocalAddr())
}

func (l *toaLab) counter(t *testing.T, name string) uint64 {
	t.Helper()
	cs, err := l.recv.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Name == name {
			return c.Sum()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}

// TestTOAeBPF runs the listener's TOA mode against the real eBPF receiver,
// fed by the real realip-edge: every address family the receiver handles,
// the one its getpeername hook cannot (an IPv6 client on an IPv4 socket,
// which the listener still reports from the entry), and the listener's
// own policy on top of the receiver's.
func TestTOAeBPF(t *testing.T) {
	l := newTOALab(t)
	t.Run("families", func(t *testing.T) { testTOAFamilies(t, l) })
	t.Run("policy", func(t *testing.T) { testTOAPolicyLive(t, l) })
	t.Run("allocations", func(t *testing.T) { testTOALookupAllocs(t, l) })
	t.Run("not a socket", func(t *testing.T) { testTOANotSocket(t, l) })
	t.Run("whoami", func(t *testing.T) { testTOAWhoami(t, l) })
}

// testTOANotSocket: a connection with no file descriptor (an inner
// listener that wraps its conns) cannot be asked about, and says why.
func testTOANotSocket(t *testing.T, l *toaLab) {
	ln, _ := l.listen(t, "tcp4", "198.51.100.10:8000", Config{Trusted: labEdges})
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_, found, err := ln.toa.lookup(a, client4, target4)
	if found || err == nil || !strings.Contains(err.Error(), "net.pipe has none") {
		t.Fatalf("lookup of a pipe: found %v, err %v; want an error naming the type", found, err)
	}
}

// testTOAFamilies: client, edge and via=toa from the entry; what the
// kernel returned shows which case the hook served.
func testTOAFamilies(t *testing.T, l *toaLab) {
	tests := []struct {
		name            string
		network, listen string
		front           netip.AddrPort
		edge            netip.Addr
		kernel          string // what accept returned: client, mapped (the client IPv4-mapped), edge
	}{
		{"IPv4 client, IPv4 listener", "tcp4", "198.51.100.10:8000", netip.AddrPortFrom(labFrontV4, 1000), labEdgeV4, "client"},
		{"IPv4 client, [::] listener", "tcp", "[::]:8001", netip.AddrPortFrom(labFrontV4, 1001), labEdgeV4, "mapped"},
		{"IPv6 client, IPv6 listener", "tcp6", "[2001:db8:2::10]:8002", netip.AddrPortFrom(labFrontV6, 1002), labEdgeV6, "client"},
		{"IPv6 client, IPv4 listener", "tcp4", "198.51.100.10:8000", netip.AddrPortFrom(labFrontV6, 1000), labEdgeV4, "edge"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, a := l.listen(t, tt.network, tt.listen, Config{Trusted: labEdges})
			mismatches := l.counter(t, "getname_toa_mismatch")
			client := dial(t, l.client, tt.front)
			c := a.next(t)
			defer c.Close()
			if c.Via() != wire.TOA || c.Client() != client || c.Proxy().Addr() != tt.edge || c.Proxy().Port() == 0 {
				t.Fatalf("via %v client %v proxy %v; want toa %v %v:PORT", c.Via(), c.Client(), c.Proxy(), client, tt.edge)
			}
			if got := addrPort(c.RemoteAddr()); got != client {
				t.Errorf("RemoteAddr %v, want %v", got, client)
			}
			checkKernelView(t, c, tt.kernel)
			if tt.kernel == "edge" {
				if n := l.counter(t, "getname_toa_mismatch"); n <= mismatches {
					t.Errorf("getname_toa_mismatch %d, was %d: not counted", n, mismatches)
				}
			}
			if s := ln.Stats(); s.Untrusted != 0 || s.Rejected != ([NumReasons]uint64{}) {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

// checkKernelView checks what accept (getpeername's hook) gave the
// listener: the client, the client IPv4-mapped (on a [::] socket), or the
// edge where the hook cannot change the family.
func checkKernelView(t *testing.T, c *Conn, want string) {
	t.Helper()
	raw := c.raw.RemoteAddr().(*net.TCPAddr)
	got, wantAddr := addrPort(raw), c.Client()
	if want == "edge" {
		wantAddr = c.Proxy()
	}
	if got != wantAddr {
		t.Errorf("the kernel returned %v, want the %s %v", got, want, wantAddr)
	}
	if mapped := len(raw.IP) == net.IPv6len && raw.IP.To4() != nil; mapped != (want == "mapped") {
		t.Errorf("the kernel returned %v: IPv4-mapped %v, want %v", raw.IP, mapped, want == "mapped")
	}
}

// testTOAPolicyLive: the listener's trust list and Optional on top of the
// receiver's, with real options and real option-less connections.
func testTOAPolicyLive(t *testing.T, l *toaLab) {
	viaEdge := netip.AddrPortFrom(labFrontV4, 1000)
	direct := netip.AddrPortFrom(labOriginV4, 8000)
	tests := []struct {
		name          string
		cfg           Config
		recvTrust     []netip.Prefix // the receiver's list; nil: the edge
		from          *netns.Host
		dst           netip.AddrPort
		dropped       Reason // or 0: served as a direct client, via=none
		untrusted     uint64
		ignoredHeader uint64
	}{
		{"untrusted edge, dropped", Config{Trusted: labElsewhere}, nil, l.client, viaEdge, ReasonUntrusted, 1, 0},
		{"untrusted edge, ignored", Config{Trusted: labElsewhere, Untrusted: UntrustedIgnore}, nil, l.client, viaEdge, 0, 1, 1},
		{"no option from a trusted peer, required", Config{Trusted: labEdges}, nil, l.edge, direct, ReasonMissing, 0, 0},
		{"no option from a trusted peer, optional", Config{Trusted: labEdges, Optional: true}, nil, l.edge, direct, 0, 0, 0},
		{"no option from an untrusted peer", Config{Trusted: labElsewhere}, nil, l.edge, direct, 0, 1, 0},
		{"option the receiver does not trust, optional", Config{Trusted: labEdges, Optional: true}, labElsewhere, l.client, viaEdge, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.recvTrust != nil {
				setReceiverTrust(t, l, tt.recvTrust)
			}
			ln, a := l.listen(t, "tcp4", "198.51.100.10:8000", tt.cfg)
			self := dial(t, tt.from, tt.dst)
			if tt.dropped != 0 {
				waitFor(t, func() bool { return ln.Stats().Rejected[tt.dropped] == 1 })
			} else {
				c := a.next(t)
				defer c.Close()
				// Served as a direct client: the edge is client and proxy
				// (under UntrustedIgnore although getpeername, rewritten by
				// the receiver, returned the client).
				edge := c.Proxy()
				if c.Via() != wire.None || c.Client() != edge || edge.Addr() != labEdgeV4 || (tt.from == l.edge && edge != self) {
					t.Fatalf("via %v client %v proxy %v; want none, the edge %v twice", c.Via(), c.Client(), c.Proxy(), labEdgeV4)
				}
			}
			if s := ln.Stats(); s.Untrusted != tt.untrusted || s.IgnoredHeaders != tt.ignoredHeader {
				t.Errorf("untrusted %d ignored headers %d, want %d %d", s.Untrusted, s.IgnoredHeaders, tt.untrusted, tt.ignoredHeader)
			}
		})
	}
}

// setReceiverTrust changes the receiver's trusted prefixes for one test.
func setReceiverTrust(t *testing.T, l *toaLab, trusted []netip.Prefix) {
	t.Helper()
	if err := l.recv.SetConfig(toarecv.Config{Trusted: trusted}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.recv.SetConfig(toarecv.Config{Trusted: labEdges}); err != nil {
			t.Error(err)
		}
	})
}

// testTOALookupAllocs: the listener's lookup by socket allocates nothing
// beyond what reaching the socket (SyscallConn) and the receiver's own
// Lookup do.
func testTOALookupAllocs(t *testing.T, l *toaLab) {
	ln, a := l.listen(t, "tcp4", "198.51.100.10:8000", Config{Trusted: labEdges})
	dial(t, l.client, netip.AddrPortFrom(labFrontV4, 1000))
	c := a.next(t)
	defer c.Close()
	p := ln.toa.(*pinnedTOA)
	sc := c.raw.(syscall.Conn)
	var fd int
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(s uintptr) { fd = int(s) })
	reach := testing.AllocsPerRun(100, func() { sc.SyscallConn() })
	recv := testing.AllocsPerRun(100, func() {
		if _, found, err := p.recv.Lookup(fd); !found || err != nil {
			t.Fatalf("Lookup: %v %v", found, err)
		}
	})
	local, remote := addrPort(c.raw.LocalAddr()), addrPort(c.raw.RemoteAddr())
	got := testing.AllocsPerRun(100, func() {
		if _, found, err := p.lookup(c.raw, local, remote); !found || err != nil {
			t.Fatalf("lookup: %v %v", found, err)
		}
	})
	t.Logf("allocations per lookup: %v (SyscallConn %v, toarecv Lookup %v)", got, reach, recv)
	if got > reach+recv {
		t.Errorf("lookup allocates %v times, more than SyscallConn (%v) and the receiver's Lookup (%v)", got, reach, recv)
	}
}

// testTOAWhoami runs examples/whoami -proto toa in the origin (a child of
// this process, so in the receiver's cgroup) and asks it through the edge.
// `ip netns exec` hides /sys/fs/bpf: whoami finds the pins through a bind
// mount of it, given with -toa-pin-dir.
func testTOAWhoami(t *testing.T, l *toaLab) {
	bin := buildCommand(t, testenv.RequireCommand(t, "go"), "github.com/realip/realip/examples/whoami")
	bpffs := t.TempDir()
	if out, err := exec.Command("mount", "--bind", filepath.Dir(l.pinDir), bpffs).CombinedOutput(); err != nil {
		t.Fatalf("bind-mounting bpffs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", bpffs).Run() })
	trust := labEdges[0].String() + "," + labEdges[1].String()
	p := l.origin.Start(t, bin, "-tcp", ":8003", "-proto", "toa", "-trust", trust, "-toa-pin-dir", filepath.Join(bpffs, filepath.Base(l.pinDir)))
	waitProcOutput(t, p, "whoami: tcp ")
	for _, tt := range []struct {
		front netip.AddrPort
		edge  netip.Addr
	}{
		{netip.AddrPortFrom(labFrontV4, 1003), labEdgeV4},
		{netip.AddrPortFrom(labFrontV6, 1004), labEdgeV6},
	} {
		client, line := askWhoami(t, l.client, tt.front)
		var gotClient, gotProxy, via string
		_, err := fmt.Sscanf(line, "client=%s proxy=%s via=%s", &gotClient, &gotProxy, &via)
		proxy, perr := netip.ParseAddrPort(gotProxy)
		if err != nil || perr != nil || gotClient != client.String() || proxy.Addr() != tt.edge || proxy.Port() == 0 || via != "toa" {
			t.Errorf("whoami through %v said %q, want client=%v proxy=%v:PORT via=toa", tt.front, line, client, tt.edge)
		}
	}
}

// askWhoami connects from h to dst and returns its local address and the
// first line whoami wrote.
func askWhoami(t *testing.T, h *netns.Host, dst netip.AddrPort) (netip.AddrPort, string) {
	t.Helper()
	var c net.Conn
	err := h.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", dst.String(), waitLimit)
		return err
	})
	if err != nil {
		t.Fatalf("dial %v: %v", dst, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitLimit))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading whoami's line through %v: %v", dst, err)
	}
	return addrPort(c.LocalAddr()), strings.TrimSuffix(line, "\n")
}

// TestTOANoReceiver: with neither receiver, New fails with one error naming
// both and wrapping what each answered; with toa.ko loaded the module is
// used (it comes first), whatever the pin folder holds.
func TestTOANoReceiver(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	cfg := Config{Trusted: loopback, Protocols: []wire.Proto{wire.TOA}, TOAPinDir: filepath.Join(t.TempDir(), "nothing-pinned")}
	l, err := New(inner, cfg)
	if mod, derr := toactl.Dial(); derr == nil {
		mod.Close()
		if err != nil {
			t.Fatalf("toa.ko answers, yet New: %v", err)
		}
		defer l.Close()
		if _, ok := l.toa.(moduleTOA); !ok {
			t.Fatalf("toa.ko answers, yet the listener asks %T", l.toa)
		}
		return
	}
	if err == nil {
		t.Fatal("New succeeded with no TOA receiver")
	}
	msg := err.Error()
	if !errors.Is(err, errNoTOAReceiver) || !errors.Is(err, toarecv.ErrNotPinned) || !strings.Contains(msg, "load toa.ko or attach the eBPF receiver: realip-agent load with receiver: ebpf") || !strings.Contains(msg, cfg.TOAPinDir) {
		t.Fatalf("error %q: want one naming both receivers and the pin folder, wrapping toarecv.ErrNotPinned", msg)
	}
}
