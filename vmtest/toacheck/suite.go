//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/edge/toasend"
	"github.com/realip/realip/internal/toacraft"
	"github.com/realip/realip/toactl"
	"github.com/realip/realip/toarecv"
	"github.com/realip/realip/vmtest/recvtest"
)

// suite is one run of the table against one receiver.
type suite struct {
	c      *checker
	opts   recvtest.Options
	r      recvtest.Receiver
	sender *toasend.Sender
	cr     *toacraft.Crafter
	olds   []*oldListener
	keep   []pair // connections held open across the stop
}

// pair is one connection: the accepted end, the dialer's end (the edge),
// and the client its option carried (invalid: none).
type pair struct {
	in, out net.Conn
	client  netip.AddrPort
}

func (p pair) close() {
	p.in.Close()
	p.out.Close()
}

func run(c *checker, opts recvtest.Options) error {
	s := &suite{c: c, opts: opts}
	olds, err := openOldListeners()
	if err != nil {
		return err
	}
	defer closeOldListeners(olds)
	s.olds = olds
	if err := s.start(); err != nil {
		return err
	}
	if s.sender, err = toasend.Open(toasend.Options{CgroupPath: "/sys/fs/cgroup"}); err != nil {
		return fmt.Errorf("toa sender: %w", err)
	}
	defer s.sender.Close()
	if s.cr, err = toacraft.Open("/sys/fs/cgroup"); err != nil {
		return err
	}
	defer s.cr.Close()
	defer func() {
		for _, p := range s.keep {
			p.close()
		}
	}()
	s.checkControl()
	if err := s.connections(); err != nil {
		return err
	}
	s.checkListener()
	s.checkUntrusted()
	s.checkRefused()
	s.keep = append(s.keep, s.checkOldListeners()...)
	s.keep = append(s.keep, s.checkKTLS()...)
	s.checkStats()
	if err := s.stopWithConnections(); err != nil {
		return err
	}
	s.checkKTLSAfterStop()
	return s.restart()
}

// start starts the receiver and reads its trusted prefixes back.
func (s *suite) start() error {
	r, err := recvtest.Start(s.c.kind, s.opts)
	if err != nil {
		return err
	}
	s.r = r
	got, err := r.Trusted()
	s.c.check("start", err == nil && samePrefixes(got, s.opts.Trusted), "%s: trusted %v read back (%v); want %s", r.Where(), got, err, expect("start", s.c.kind))
	return nil
}

func samePrefixes(a, b []netip.Prefix) bool {
	key := func(ps []netip.Prefix) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Masked().String())
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(key(a), key(b))
}

// stat is one counter of the receiver, summed over CPUs (0 when the
// counters cannot be read, which fails a check of its own).
func (s *suite) stat(name string) uint64 { return s.counters()[name] }

// checkControl: the module's netlink family, or the pinned maps.
func (s *suite) checkControl() {
	ctl, nlErr := toactl.Dial()
	if nlErr == nil {
		_, live, err := ctl.Stats()
		ctl.Close()
		nlErr = err
		s.c.check("control", s.c.kind == recvtest.KindKmod && err == nil, "netlink family answers: %d live entries (%v)", live, err)
	}
	if s.c.kind == recvtest.KindKmod {
		if nlErr != nil {
			s.c.check("control", false, "netlink: %v", nlErr)
		}
		return
	}
	p, err := toarecv.OpenPinned("")
	if err != nil {
		s.c.check("control", false, "toarecv.OpenPinned: %v", err)
		return
	}
	defer p.Close()
	cfg, cerr := p.Config()
	cs, serr := p.Counters()
	s.c.check("control", errors.Is(nlErr, toactl.ErrNotLoaded) && cerr == nil && samePrefixes(cfg.Trusted, loopbackTrust) && serr == nil && len(cs) == len(toarecv.CounterNames),
		"netlink: %v; pinned maps: trusted %v kinds %v (%v), %d counters (%v)", nlErr, cfg.Trusted, cfg.Kinds, cerr, len(cs), serr)
}

// connections makes one TOA connection per socket family row and keeps
// them open.
func (s *suite) connections() error {
	for _, tc := range []struct {
		id, listen, dial string
		client           netip.AddrPort
	}{
		{"v4-client-v4-socket", "127.0.0.1:0", "127.0.0.1", netip.MustParseAddrPort("192.0.2.7:4000")},
		{"v4-client-any-socket", "[::]:0", "127.0.0.1", netip.MustParseAddrPort("192.0.2.8:4001")},
		{"v6-client-v6-socket", "[::1]:0", "::1", netip.MustParseAddrPort("[2001:db8::9]:4002")},
		{"v6-client-v4-socket", "127.0.0.1:0", "127.0.0.1", netip.MustParseAddrPort("[2001:db8::10]:4003")},
	} {
		p, err := s.oneConnection(tc.id, tc.listen, tc.dial, tc.client)
		if err != nil {
			return err
		}
		s.keep = append(s.keep, p)
	}
	return nil
}

// oneConnection dials from a socket tagged with client through the TOA
// sender and checks the accepted side and its entry.
func (s *suite) oneConnection(id, listen, dial string, client netip.AddrPort) (pair, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return pair{}, err
	}
	defer ln.Close()
	mis0 := s.stat("getname_toa_mismatch")
	in, out, err := toaConn(s.sender, ln, dial, client)
	if err != nil {
		return pair{}, err
	}
	syn, ack, _ := s.sender.Carried(out.(*net.TCPConn))
	got := netip.MustParseAddrPort(in.RemoteAddr().String())
	peer, perr := getpeername(in)
	edge := netip.MustParseAddrPort(out.LocalAddr().String())
	// Row v6-client-v4-socket: toa.ko answers the IPv6 client (Go's
	// buffer holds a sockaddr_in6); the eBPF hook cannot change the
	// family and leaves the edge, counting each call as a mismatch.
	want, wantMis := client, uint64(0)
	if id == "v6-client-v4-socket" && s.c.kind == recvtest.KindEBPF {
		want, wantMis = edge, 2
	}
	mis := s.stat("getname_toa_mismatch") - mis0
	s.c.check(id, syn && ack && sameClient(got, want) && perr == nil && sameClient(peer, want) && mis == wantMis,
		"listen %s, client %s: accept %s, getpeername %s (%v), want %s; getname_toa_mismatch +%d, want +%d (option on SYN %v, ACK %v)",
		listen, client, got, peer, perr, want, mis, wantMis, syn, ack)
	p := pair{in: in, out: out, client: client}
	e, ok, err := s.entry(p)
	s.c.check("entry", err == nil && ok && e.Client == client && e.Edge == unmapped(edge),
		"%s: client %s edge %s (found %v, %v), want client %s edge %s", id, e.Client, e.Edge, ok, err, client, unmapped(edge))
	return p, nil
}

// entry asks the receiver for p's entry.
func (s *suite) entry(p pair) (recvtest.Entry, bool, error) {
	fd, err := fdOf(p.in)
	if err != nil {
		return recvtest.Entry{}, false, err
	}
	local := netip.MustParseAddrPort(p.in.LocalAddr().String())
	return s.r.Entry(fd, unmapped(local), p.client)
}

func unmapped(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }

// fdOf is the descriptor of an open TCP connection.
func fdOf(c net.Conn) (int, error) {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

func getpeername(c net.Conn) (netip.AddrPort, error) {
	fd, err := fdOf(c)
	if err != nil {
		return netip.AddrPort{}, err
	}
	sa, err := unix.Getpeername(fd)
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), err
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)), err
	}
	return netip.AddrPort{}, fmt.Errorf("getpeername: %T %v", sa, err)
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
