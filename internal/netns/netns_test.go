//go:build linux

package netns

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pfx parses prefixes, for short tables.
func pfx(s ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(s))
	for i, v := range s {
		ps[i] = netip.MustParsePrefix(v)
	}
	return ps
}

// listen opens a TCP listener on addr inside h.
func listen(t *testing.T, h *Host, addr netip.Addr) net.Listener {
	t.Helper()
	var ln net.Listener
	err := h.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", h.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dial connects from inside h to ln and returns the dialer's local address
// and the remote address the listener saw, after a byte each way.
func dial(h *Host, ln net.Listener, timeout time.Duration) (local, seen netip.AddrPort, err error) {
	var c net.Conn
	err = h.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", ln.Addr().String(), timeout)
		return err
	})
	if err != nil {
		return local, seen, err
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		return local, seen, err
	}
	defer s.Close()
	if err := pingPong(c, s); err != nil {
		return local, seen, err
	}
	return addrPort(c.LocalAddr()), addrPort(s.RemoteAddr()), nil
}

// pingPong sends one byte from a to b and one back.
func pingPong(a, b net.Conn) error {
	buf := make([]byte, 1)
	for _, pair := range [][2]net.Conn{{a, b}, {b, a}} {
		if _, err := pair[0].Write([]byte{'x'}); err != nil {
			return err
		}
		if _, err := io.ReadFull(pair[1], buf); err != nil {
			return err
		}
	}
	return nil
}

func addrPort(a net.Addr) netip.AddrPort {
	return a.(*net.TCPAddr).AddrPort()
}

func TestTCPBetweenTwoHosts(t *testing.T) {
	t.Parallel()
	lab := NewLab(t)
	server, client := lab.Host("server"), lab.Host("client")
	lab.Link(server, client,
		pfx("192.0.2.1/24", "2001:db8::1/64"),
		pfx("192.0.2.2/24", "2001:db8::2/64"))
	tests := []struct {
		name           string
		server, client netip.Addr
	}{
		{"ipv4", netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")},
		{"ipv6", netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ln := listen(t, server, tc.server)
			local, seen, err := dial(client, ln, 5*time.Second)
			if err != nil {
				t.Fatalf("dial %v from %s: %v", ln.Addr(), client.Name, err)
			}
			if seen.Addr() != tc.client || seen != local {
				t.Errorf("listener saw %v, dialer is %v, want client address %v", seen, local, tc.client)
			}
			if l, err := net.Listen("tcp", netip.AddrPortFrom(tc.server, 0).String()); err == nil {
				l.Close()
				t.Errorf("%v is usable outside the lab", tc.server)
			}
		})
	}
}

func TestChainThroughEdge(t *testing.T) {
	t.Parallel()
	lab := NewLab(t)
	client, edge, origin := lab.Host("client"), lab.Host("edge"), lab.Host("origin")
	lab.Link(client, edge, pfx("192.0.2.2/24", "2001:db8:1::2/64"), pfx("192.0.2.1/24", "2001:db8:1::1/64"))
	lab.Link(edge, origin, pfx("198.51.100.1/24", "2001:db8:2::1/64"), pfx("198.51.100.2/24", "2001:db8:2::2/64"))
	tests := []struct {
		name                 string
		client, origin       netip.Addr
		toOrigin, toClient   netip.Prefix
		edgeSide, originSide netip.Addr // the edge's address on each side
	}{
		{"ipv4", mustAddr("192.0.2.2"), mustAddr("198.51.100.2"),
			netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("192.0.2.0/24"),
			mustAddr("192.0.2.1"), mustAddr("198.51.100.1")},
		{"ipv6", mustAddr("2001:db8:1::2"), mustAddr("2001:db8:2::2"),
			netip.MustParsePrefix("2001:db8:2::/64"), netip.MustParsePrefix("2001:db8:1::/64"),
			mustAddr("2001:db8:1::1"), mustAddr("2001:db8:2::1")},
	}
	for _, tc := range tests {
		client.Route(tc.toOrigin, tc.edgeSide)
		origin.Route(tc.toClient, tc.originSide)
	}
	for _, tc := range tests {
		t.Run(tc.name+"/no-forwarding", func(t *testing.T) {
			ln := listen(t, origin, tc.origin)
			if _, _, err := dial(client, ln, 300*time.Millisecond); err == nil {
				t.Fatalf("reached %v through an edge that does not forward", ln.Addr())
			}
		})
	}
	edge.EnableForwarding()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ln := listen(t, origin, tc.origin)
			_, seen, err := dial(client, ln, 5*time.Second)
			if err != nil {
				t.Fatalf("dial %v from %s through %s: %v", ln.Addr(), client.Name, edge.Name, err)
			}
			if seen.Addr() != tc.client {
				t.Errorf("origin saw %v, want client address %v", seen, tc.client)
			}
		})
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestDo(t *testing.T) {
	t.Parallel()
	lab := NewLab(t)
	h := lab.Host("h")
	want, err := inode(filepath.Join(netnsDir, h.Namespace))
	if err != nil {
		t.Fatal(err)
	}
	errFn := errors.New("from fn")
	var inside uint64
	err = h.Do(func() (err error) {
		inside, err = inode("/proc/thread-self/ns/net")
		return errors.Join(err, errFn)
	})
	if !errors.Is(err, errFn) || inside != want {
		t.Fatalf("Do: err %v, namespace inode %d, want errFn and %d", err, inside, want)
	}
	for range 20 { // whatever thread runs us now, none was left in h
		if got, err := inode("/proc/thread-self/ns/net"); err != nil || got == want {
			t.Fatalf("a thread stayed in %s after Do (err %v)", h.Name, err)
		}
	}
}

// inode returns the inode number of path, which identifies a namespace.
func inode(path string) (uint64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Sys().(*syscall.Stat_t).Ino, nil
}

func TestCommandAndStart(t *testing.T) {
	t.Parallel()
	lab := NewLab(t)
	h, peer := lab.Host("h"), lab.Host("peer")
	dev, _ := lab.Link(h, peer, pfx("203.0.113.7/24"), pfx("203.0.113.8/24"))
	out, err := h.Command(context.Background(), "ip", "-o", "addr", "show", "dev", dev).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "203.0.113.7/24") {
		t.Fatalf("ip addr in %s: %v\n%s", h.Name, err, out)
	}
	p := h.Start(t, "sh", "-c", "echo ready; ip -o -4 addr show dev "+dev+" >&2; exec sleep 600")
	waitFor(t, func() bool { return strings.Contains(p.Output(), "203.0.113.7") })
	if !strings.HasPrefix(p.Output(), "ready\n") || p.Err() != nil {
		t.Errorf("output %q, err %v", p.Output(), p.Err())
	}
	select {
	case <-p.Done():
		t.Fatalf("process exited early: %v", p.Err())
	default:
	}
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
	}
}

func TestCleanupRemovesEverything(t *testing.T) {
	t.Parallel()
	var names []string
	var pids []int
	t.Run("lab", func(t *testing.T) {
		lab := NewLab(t)
		a, b := lab.Host("a"), lab.Host("b")
		lab.Link(a, b, pfx("192.0.2.1/24"), pfx("192.0.2.2/24"))
		// A started process, and one that escaped its process group.
		p := a.Start(t, "sh", "-c", "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $!; exec sleep 600")
		waitFor(t, func() bool { return strings.HasSuffix(p.Output(), "\n") })
		orphan, err := strconv.Atoi(strings.TrimSpace(p.Output()))
		if err != nil {
			t.Fatalf("orphan pid %q: %v", p.Output(), err)
		}
		names = []string{a.Namespace, b.Namespace}
		pids = []int{p.Cmd.Process.Pid, orphan}
	})
	out, err := runIP("netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && slices.Contains(names, f[0]) {
			t.Errorf("namespace %s still exists after cleanup", f[0])
		}
	}
	for _, pid := range pids {
		waitFor(t, func() bool { return !running(pid) })
	}
}

// running reports whether pid exists and is not a zombie.
func running(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(after, "Z")
}

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"client", true},
		{"edge-1", true},
		{"", false},
		{"-x", false},
		{"Edge", false},
		{"a/b", false},
		{"a.b", false},
		{strings.Repeat("a", maxHostName), true},
		{strings.Repeat("a", maxHostName+1), false},
	}
	for _, tc := range tests {
		if err := checkName(tc.name); (err == nil) != tc.ok {
			t.Errorf("checkName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestOwnerGone(t *testing.T) {
	tests := []struct {
		ns   string
		gone bool
	}{
		{namePrefix + strconv.Itoa(os.Getpid()) + "-abcdef-a", false},
		{namePrefix + "1-abcdef-a", false},         // pid 1 always runs
		{namePrefix + "2147483646-abcdef-a", true}, // no such pid
		{"other-2147483646-abcdef-a", false},       // not ours
		{namePrefix + "x-abcdef-a", false},         // not a pid
	}
	for _, tc := range tests {
		if got := ownerGone(tc.ns); got != tc.gone {
			t.Errorf("ownerGone(%q) = %v, want %v", tc.ns, got, tc.gone)
		}
	}
}
