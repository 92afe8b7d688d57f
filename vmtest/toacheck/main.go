//go:build linux

// Command toacheck is the in-VM test of kmod/toa.ko: run inside a QEMU
// guest by vmtest/toa.sh, with the module file beside it. It loads the
// module, sends TOA with realip-edge's eBPF sender (edge/toasend) over
// loopback, and checks what accept(), getpeername(), the netlink family and
// /proc/net/toa_stats report; options with clients no peer can have, put
// on the wire byte for byte by a sockops program (internal/toacraft), must be
// refused and counted (refused.go); then it unloads the module with
// connections still open and checks that every entry was freed. It prints one
// "ok"/"FAIL" line per check and exits 1 on any failure.
package main

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/edge/toasend"
	"github.com/realip/realip/internal/toacraft"
	"github.com/realip/realip/listener"
	"github.com/realip/realip/toactl"
	"github.com/realip/realip/wire"
)

type checker struct{ failed bool }

func (c *checker) check(ok bool, format string, args ...any) {
	status := "ok  "
	if !ok {
		status, c.failed = "FAIL", true
	}
	fmt.Printf("%s %s\n", status, fmt.Sprintf(format, args...))
}

func main() {
	c := &checker{}
	if err := run(c, os.Args[1]); err != nil {
		c.check(false, "%v", err)
	}
	if c.failed {
		os.Exit(1)
	}
}

func run(c *checker, module string) error {
	olds, err := openOldListeners()
	if err != nil {
		return err
	}
	defer closeOldListeners(olds)
	if err := load(module, "trusted=127.0.0.0/8,::1/128"); err != nil {
		return err
	}
	c.check(fileHas("/sys/module/toa/parameters/trusted", "127.0.0.0/8"), "module loaded with trusted prefixes")
	sender, err := toasend.Open(toasend.Options{CgroupPath: "/sys/fs/cgroup"})
	if err != nil {
		return fmt.Errorf("toa sender: %w", err)
	}
	defer sender.Close()
	cr, err := toacraft.Open("/sys/fs/cgroup")
	if err != nil {
		return err
	}
	defer cr.Close()

	var keep []net.Conn
	for _, tc := range []struct {
		listen, dial string
		client       netip.AddrPort
	}{
		{"127.0.0.1:0", "127.0.0.1", netip.MustParseAddrPort("192.0.2.7:4000")},
		{"[::]:0", "127.0.0.1", netip.MustParseAddrPort("192.0.2.8:4001")},
		{"[::1]:0", "::1", netip.MustParseAddrPort("[2001:db8::9]:4002")},
		{"127.0.0.1:0", "127.0.0.1", netip.MustParseAddrPort("[2001:db8::10]:4003")},
	} {
		conns, err := oneConnection(c, sender, tc.listen, tc.dial, tc.client)
		if err != nil {
			return err
		}
		keep = append(keep, conns...)
	}
	checkListener(c, sender)
	checkUntrusted(c, sender)
	checkRefused(c, cr)
	keep = append(keep, checkOldListeners(c, sender, olds)...)
	keep = append(keep, checkKTLS(c, sender)...)
	checkStats(c)

	// Unload while the connections above are still open.
	if err := unix.DeleteModule("toa", 0); err != nil {
		return fmt.Errorf("rmmod toa with live connections: %w", err)
	}
	c.check(true, "module unloaded with %d connections open", len(keep)/2)
	for _, k := range keep {
		k.Close()
	}
	if err := checkFreedInLog(c); err != nil {
		return err
	}
	checkKTLSAfterUnload(c)
	return checkReload(c, sender, module, olds)
}

func load(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil {
		return fmt.Errorf("finit_module(%s): %w", path, err)
	}
	return nil
}

// oneConnection dials from a socket tagged with client through the TOA
// sender and checks the accepted side.
func oneConnection(c *checker, s *toasend.Sender, listen, dial string, client netip.AddrPort) ([]net.Conn, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	in, out, err := toaConn(s, ln, dial, client)
	if err != nil {
		return nil, err
	}
	syn, ack, _ := s.Carried(out.(*net.TCPConn))
	got := netip.MustParseAddrPort(in.RemoteAddr().String())
	// An IPv6 client on an IPv4 socket too: Go's accept buffer holds a
	// sockaddr_in6, so the module may answer with one.
	want := client
	c.check(syn && ack && got.Addr().Unmap() == want.Addr() && got.Port() == want.Port(),
		"listen %s, client %s: accept reports %s (syn %v ack %v)", listen, client, got, syn, ack)
	peer, err := getpeername(in)
	c.check(err == nil && peer.Addr().Unmap() == want.Addr() && peer.Port() == want.Port(),
		"getpeername reports %s (%v)", peer, err)
	ctl, err := toactl.Dial()
	if err == nil {
		local := netip.MustParseAddrPort(in.LocalAddr().String())
		e, lerr := ctl.Lookup(netip.AddrPortFrom(local.Addr().Unmap(), local.Port()), netip.AddrPortFrom(got.Addr().Unmap(), got.Port()))
		proxy := netip.MustParseAddrPort(out.LocalAddr().String())
		c.check(lerr == nil && e.Proxy.Port() == proxy.Port(), "netlink entry: proxy %s (dialer %s) %v", e.Proxy, proxy, lerr)
		ctl.Close()
	}
	return []net.Conn{in, out}, nil
}

func getpeername(c net.Conn) (netip.AddrPort, error) {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var sa unix.Sockaddr
	var gerr error
	rc.Control(func(fd uintptr) { sa, gerr = unix.Getpeername(int(fd)) })
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), gerr
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)), gerr
	}
	return netip.AddrPort{}, fmt.Errorf("getpeername: %T %v", sa, gerr)
}

// checkListener runs realip's listener in TOA mode.
func checkListener(c *checker, s *toasend.Sender) {
	l, err := listener.Listen("tcp", "127.0.0.1:0", listener.Config{
		Protocols: []wire.Proto{wire.TOA},
		Trusted:   []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	})
	if err != nil {
		c.check(false, "listener in TOA mode: %v", err)
		return
	}
	defer l.Close()
	client := netip.MustParseAddrPort("198.51.100.77:5555")
	d := net.Dialer{Control: s.Control(client)}
	out, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		c.check(false, "dial listener: %v", err)
		return
	}
	defer out.Close()
	in, err := acceptWithin(l, 5*time.Second)
	if err != nil {
		c.check(false, "accept: %v (stats %+v)", err, l.Stats())
		return
	}
	defer in.Close()
	rc := in.(*listener.Conn)
	c.check(rc.Via() == wire.TOA && rc.Client() == client && rc.Proxy().String() == out.LocalAddr().String(),
		"listener: %s (want client=%s proxy=%s via=toa)", rc, client, out.LocalAddr())
}

// checkUntrusted sends TOA from a source outside the trusted prefixes.
func checkUntrusted(c *checker, s *toasend.Sender) {
	before := stat("syn_recv_sock_untrusted")
	if err := os.WriteFile("/sys/module/toa/parameters/trusted", []byte("203.0.113.0/24"), 0); err != nil {
		c.check(false, "set trusted at run time: %v", err)
		return
	}
	defer os.WriteFile("/sys/module/toa/parameters/trusted", []byte("127.0.0.0/8,::1/128"), 0)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	d := net.Dialer{Control: s.Control(netip.MustParseAddrPort("192.0.2.66:6666"))}
	out, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		c.check(false, "dial: %v", err)
		return
	}
	defer out.Close()
	in, _ := ln.Accept()
	defer in.Close()
	c.check(in.RemoteAddr().String() == out.LocalAddr().String() && stat("syn_recv_sock_untrusted") == before+1,
		"forged option from an untrusted source ignored (accept %s) and counted", in.RemoteAddr())
}

func checkStats(c *checker) {
	b, err := os.ReadFile("/proc/net/toa_stats")
	if err != nil {
		c.check(false, "toa_stats: %v", err)
		return
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	want := []string{"syn_recv_sock_toa", "syn_recv_sock_no_toa", "getname_toa_ok", "getname_toa_mismatch",
		"getname_toa_bypass", "getname_toa_empty", "ip6_address_alloc", "ip6_address_free"}
	ok := len(lines) > len(want) && strings.Contains(lines[0], "CPU0")
	for i, name := range want {
		ok = ok && strings.Fields(lines[i+1])[0] == name
	}
	c.check(ok, "toa_stats layout: the eight rows in order, CPU columns")
	c.check(stat("syn_recv_sock_toa") >= 5 && stat("getname_toa_ok") >= 5, "counters moved: syn_recv_sock_toa=%d getname_toa_ok=%d", stat("syn_recv_sock_toa"), stat("getname_toa_ok"))
	fmt.Print(string(b))
}

// stat sums a row of /proc/net/toa_stats over CPUs.
func stat(name string) uint64 {
	f, err := os.Open("/proc/net/toa_stats")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 1 && fields[0] == name {
			var sum uint64
			for _, v := range fields[1:] {
				n, _ := strconv.ParseUint(v, 10, 64)
				sum += n
			}
			return sum
		}
	}
	return 0
}

// checkFreedInLog reads the module's unload line from the kernel log.
func checkFreedInLog(c *checker) error {
	b := make([]byte, 1<<20)
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, b)
	if err != nil {
		return fmt.Errorf("klogctl: %w", err)
	}
	b = b[:n]
	for _, line := range strings.Split(string(b), "\n") {
		if i := strings.Index(line, "toa: unloaded, "); i >= 0 {
			var freed, alloc uint64
			if _, err := fmt.Sscanf(line[i:], "toa: unloaded, %d of %d entries freed", &freed, &alloc); err != nil {
				c.check(false, "unload line %q: %v", line[i:], err)
				return nil
			}
			c.check(freed == alloc && alloc > 0, "unload freed every entry: %d of %d (line %q)", freed, alloc, line[i:])
			return nil
		}
	}
	c.check(false, "no unload line in the kernel log")
	return nil
}

func fileHas(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), s)
}

// acceptWithin bounds Accept, so a connection the listener rejected shows
// as a failed check instead of a hang.
func acceptWithin(l net.Listener, d time.Duration) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() { c, err := l.Accept(); ch <- result{c, err} }()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-time.After(d):
		return nil, fmt.Errorf("no connection within %v", d)
	}
}
