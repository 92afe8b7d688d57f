//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/vmtest/recvtest"
	"github.com/realip/realip/vmtest/vmnet"
)

// The lab: four hosts in network namespaces, documentation prefixes only.
//
//	client  c0 ---- e0  edge  e1 ---- o0  origin  o1 ---- r0  rogue
//	192.0.2.10     192.0.2.1  198.51.100.1   198.51.100.20  203.0.113.20  203.0.113.66
//	2001:db8:1::10 ::1        2001:db8:2::1  2001:db8:2::20 2001:db8:3::20 2001:db8:3::66
//
// Every link is one subnet, so no routes are needed: the edge terminates
// the client's connection and opens its own to the origin.
var (
	client4 = netip.MustParsePrefix("192.0.2.10/24")
	client6 = netip.MustParsePrefix("2001:db8:1::10/64")
	front4  = netip.MustParsePrefix("192.0.2.1/24")
	front6  = netip.MustParsePrefix("2001:db8:1::1/64")
	back4   = netip.MustParsePrefix("198.51.100.1/24")
	back6   = netip.MustParsePrefix("2001:db8:2::1/64")
	origin4 = netip.MustParsePrefix("198.51.100.20/24")
	origin6 = netip.MustParsePrefix("2001:db8:2::20/64")
	oside4  = netip.MustParsePrefix("203.0.113.20/24")
	oside6  = netip.MustParsePrefix("2001:db8:3::20/64")
	rogue4  = netip.MustParsePrefix("203.0.113.66/24")
	rogue6  = netip.MustParsePrefix("2001:db8:3::66/64")
)

// trusted is what the origin's toa.ko honours: the edge's origin-facing
// addresses only.
func trusted() string {
	return fmt.Sprintf("%s/32,%s/128", back4.Addr(), back6.Addr())
}

type lab struct {
	client, edge, origin, rogue *vmnet.NS
}

func newLab() (*lab, error) {
	l := &lab{}
	for _, p := range []**vmnet.NS{&l.client, &l.edge, &l.origin, &l.rogue} {
		ns, err := vmnet.NewNS()
		if err != nil {
			return nil, err
		}
		*p = ns
	}
	links := []struct {
		a, b           *vmnet.NS
		an, bn         string
		a4, a6, b4, b6 netip.Prefix
	}{
		{l.client, l.edge, "c0", "e0", client4, client6, front4, front6},
		{l.edge, l.origin, "e1", "o0", back4, back6, origin4, origin6},
		{l.rogue, l.origin, "r0", "o1", rogue4, rogue6, oside4, oside6},
	}
	for _, k := range links {
		if err := k.a.Do(func() error { return vmnet.AddVeth(k.an, k.bn, k.b) }); err != nil {
			return nil, err
		}
		if err := configure(k.a, k.an, k.a4, k.a6); err != nil {
			return nil, err
		}
		if err := configure(k.b, k.bn, k.b4, k.b6); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func configure(ns *vmnet.NS, dev string, p4, p6 netip.Prefix) error {
	return ns.Do(func() error {
		for _, d := range []string{"lo", dev} {
			if err := vmnet.LinkUp(d); err != nil {
				return err
			}
		}
		if err := vmnet.AddAddr(dev, p4); err != nil {
			return err
		}
		return vmnet.AddAddr(dev, p6)
	})
}

func (l *lab) Close() {
	for _, ns := range []*vmnet.NS{l.client, l.edge, l.origin, l.rogue} {
		if ns != nil {
			ns.Close()
		}
	}
}

// sysctl writes a sysctl of ns (net.* sysctls are per namespace: the file
// is opened by a thread inside it).
func sysctl(ns *vmnet.NS, key, value string) error {
	return ns.Do(func() error {
		path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
		if err := os.WriteFile(path, []byte(value), 0); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}

// netstat reads the TcpExt counters of ns.
func netstat(ns *vmnet.NS) (map[string]uint64, error) {
	var out map[string]uint64
	err := ns.Do(func() (err error) {
		out, err = procCounters("netstat", "TcpExt:")
		return err
	})
	return out, err
}

// passiveOpens is the sum of Tcp PassiveOpens (/proc/net/snmp) over the
// namespaces whose handshakes the receiver serves: every child socket a
// listener made, whatever made the connection (the suite, the edge's
// health checks of the origin, a SYN-ACK retransmit whose duplicate ACK
// raced the first). toa.ko serves every namespace, the lab's and the
// guest's own; the eBPF receiver the origin's cgroup, whose sockets are
// all in the origin's namespace.
func passiveOpens(l *lab, kind recvtest.Kind) (uint64, error) {
	nss := []*vmnet.NS{l.origin}
	var sum uint64
	if kind == recvtest.KindKmod {
		nss = []*vmnet.NS{nil, l.client, l.edge, l.origin, l.rogue} // nil: this thread's
	}
	for _, ns := range nss {
		err := ns.Do(func() error {
			tcp, err := procCounters("snmp", "Tcp:")
			sum += tcp["PassiveOpens"]
			return err
		})
		if err != nil {
			return 0, err
		}
	}
	return sum, nil
}

// procCounters reads one section of /proc/thread-self/net/FILE (netstat,
// snmp: a line of names, then a line of values, per section) in the
// calling thread's namespace.
func procCounters(file, section string) (map[string]uint64, error) {
	b, err := os.ReadFile("/proc/thread-self/net/" + file)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) != len(values) || len(names) == 0 || names[0] != section {
			continue
		}
		for j := 1; j < len(names); j++ {
			n, _ := strconv.ParseUint(values[j], 10, 64)
			out[names[j]] = n
		}
	}
	return out, nil
}

// joinCgroup moves this whole process into the cgroup: sockets it creates
// from then on belong to it.
func joinCgroup(path string) error {
	return os.WriteFile(filepath.Join(path, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
}

// raiseFiles lifts the open-file limit (children inherit it): the load
// phase holds thousands of sockets on each side. Without CAP_SYS_RESOURCE
// (some containers) the hard limit stays and the soft one is raised to it;
// it is an error when that is below want.
func raiseFiles(n, want uint64) error {
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: n, Max: n}); err == nil {
		return nil
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit(RLIMIT_NOFILE): %w", err)
	}
	lim.Cur = min(n, lim.Max)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("setrlimit(RLIMIT_NOFILE, %d): %w", lim.Cur, err)
	}
	if lim.Cur < want {
		return fmt.Errorf("open-file limit %d (hard), the suite needs about %d", lim.Max, want)
	}
	return nil
}

// proc is a child process in a namespace, its output kept.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start runs argv in ns (forked from a thread inside it, so the child
// inherits the namespace); cgroupDir, if set, is where the child starts
// (clone3 CLONE_INTO_CGROUP), so its very first socket is in it.
func start(ns *vmnet.NS, name, cgroupDir string, argv ...string) (*proc, error) {
	p := &proc{name: name, cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	// No Pdeathsig: Linux sends it when the *thread* that forked the child
	// ends, and a Go thread ends whenever a goroutine that locked it exits
	// locked, long before this program does. (That killed realip-edge in
	// the middle of a run.) The VM powers off at the end anyway.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{}
	if cgroupDir != "" {
		f, err := os.Open(cgroupDir)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		p.cmd.SysProcAttr.UseCgroupFD = true
		p.cmd.SysProcAttr.CgroupFD = int(f.Fd())
	}
	if err := ns.Do(p.cmd.Start); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

// waitFor waits until the output holds s.
func (p *proc) waitFor(s string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for !strings.Contains(p.Output(), s) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v) before saying %q:\n%s", p.name, p.err, s, p.Output())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not say %q within %v:\n%s", p.name, s, d, p.Output())
		}
	}
	return nil
}

// stop sends SIGTERM, then SIGKILL after d.
func (p *proc) stop(d time.Duration) error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(d):
		p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// dial opens a TCP connection from ns; control (may be nil) runs before
// connect().
func dial(ns *vmnet.NS, to netip.AddrPort, control func(string, string, syscall.RawConn) error) (*net.TCPConn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: 10 * time.Second, Control: control}
		var err error
		c, err = d.Dial("tcp", to.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// listen opens a TCP listener in ns.
func listen(ns *vmnet.NS, addr string) (*net.TCPListener, error) {
	var ln net.Listener
	err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// firstLine reads one line from c within d.
func firstLine(c net.Conn, d time.Duration) (string, error) {
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return line, err
	}
	return strings.TrimSuffix(line, "\n"), nil
}

func addrPort(a net.Addr) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// peerOf is getpeername(fd) as the kernel (and toa.ko) answers it, with a
// sockaddr_storage-sized buffer; IPv4-mapped addresses are unmapped.
func peerOf(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return sockaddrAddrPort(sa, "getpeername")
}

// localOf is getsockname(fd), unmapped like peerOf.
func localOf(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return sockaddrAddrPort(sa, "getsockname")
}

func sockaddrAddrPort(sa unix.Sockaddr, call string) (netip.AddrPort, error) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port)), nil
	}
	return netip.AddrPort{}, fmt.Errorf("%s: unexpected %T", call, sa)
}

// fdOf is the descriptor of c (valid while c is open).
func fdOf(c *net.TCPConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// loadModule loads toa.ko with params; unloadModule removes it.
func loadModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil {
		return fmt.Errorf("finit_module(%s, %q): %w", path, params, err)
	}
	return nil
}

func unloadModule() error {
	if err := unix.DeleteModule("toa", 0); err != nil {
		return fmt.Errorf("delete_module(toa): %w", err)
	}
	return nil
}

// toaStat sums a row of /proc/net/toa_stats over CPUs; ok is false when
// the file or the row is missing.
func toaStat(name string) (uint64, bool) {
	b, err := os.ReadFile("/proc/net/toa_stats")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != name {
			continue
		}
		var sum uint64
		for _, v := range f[1:] {
			n, _ := strconv.ParseUint(v, 10, 64)
			sum += n
		}
		return sum, true
	}
	return 0, false
}

// toaStats snapshots every row.
func toaStats() map[string]uint64 {
	m := map[string]uint64{}
	for _, name := range []string{"syn_recv_sock_toa", "syn_recv_sock_no_toa", "getname_toa_ok",
		"getname_toa_mismatch", "getname_toa_bypass", "getname_toa_empty", "ip6_address_alloc",
		"ip6_address_free", "syn_recv_sock_untrusted", "syn_recv_sock_bad_option",
		"syn_recv_sock_from_syn", "alloc_failed", "probe_missed"} {
		m[name], _ = toaStat(name)
	}
	return m
}

// handshakeCounts reads the receiver's counters and passiveOpens at a
// moment when no handshake is half counted: the kernel counts a child in
// PassiveOpens inside syn_recv_sock, toa.ko on its return (the eBPF
// receiver once the handshake is complete), so a read between the two (an
// edge health check of the origin in flight) would be off by one. Reads
// repeat, 20 ms apart, until two in a row agree on the receiver's
// handshakes (toa + no_toa) minus PassiveOpens.
func handshakeCounts(l *lab, r recvtest.Receiver) (map[string]uint64, uint64, error) {
	var lastGap int64
	for try := 0; ; try++ {
		stats, err := r.Counters()
		if err != nil {
			return nil, 0, err
		}
		opens, err := passiveOpens(l, r.Kind())
		if err != nil {
			return nil, 0, err
		}
		gap := int64(stats["syn_recv_sock_toa"]+stats["syn_recv_sock_no_toa"]) - int64(opens)
		if try > 0 && gap == lastGap {
			return stats, opens, nil
		}
		if try == 50 {
			return nil, 0, fmt.Errorf("receiver handshakes minus PassiveOpens never settled (last %d, %d)", lastGap, gap)
		}
		lastGap = gap
		time.Sleep(20 * time.Millisecond)
	}
}

func delta(after, before map[string]uint64) map[string]int64 {
	d := map[string]int64{}
	for k, v := range after {
		d[k] = int64(v) - int64(before[k])
	}
	return d
}
