//go:build linux

package main

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/realip/realip/listener"
	"github.com/realip/realip/toarecv"
	"github.com/realip/realip/vmtest/recvtest"
	"github.com/realip/realip/wire"
)

// checkListener runs realip's listener in TOA mode (it finds the receiver
// in force: the module over netlink, or the eBPF receiver's default pins).
func (s *suite) checkListener() {
	l, err := listener.Listen("tcp", "127.0.0.1:0", listener.Config{
		Protocols: []wire.Proto{wire.TOA},
		Trusted:   []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	})
	if err != nil {
		s.c.check("listener", false, "listener in TOA mode: %v", err)
		return
	}
	defer l.Close()
	client := netip.MustParseAddrPort("198.51.100.77:5555")
	d := net.Dialer{Control: s.sender.Control(client)}
	out, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		s.c.check("listener", false, "dial listener: %v", err)
		return
	}
	defer out.Close()
	in, err := acceptWithin(l, 5*time.Second)
	if err != nil {
		s.c.check("listener", false, "accept: %v (stats %+v)", err, l.Stats())
		return
	}
	defer in.Close()
	rc := in.(*listener.Conn)
	s.c.check("listener", rc.Via() == wire.TOA && rc.Client() == client && rc.Proxy().String() == out.LocalAddr().String(),
		"%s (want client=%s proxy=%s via=toa)", rc, client, out.LocalAddr())
}

// checkUntrusted changes the trusted prefixes at run time and sends TOA
// from a source outside them.
func (s *suite) checkUntrusted() {
	before := s.stat("syn_recv_sock_untrusted")
	if err := s.r.SetTrusted([]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}); err != nil {
		s.c.check("untrusted", false, "set trusted at run time: %v", err)
		return
	}
	defer func() {
		if err := s.r.SetTrusted(loopbackTrust); err != nil {
			s.c.check("untrusted", false, "trusting loopback again: %v", err)
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.c.check("untrusted", false, "%v", err)
		return
	}
	defer ln.Close()
	d := net.Dialer{Control: s.sender.Control(netip.MustParseAddrPort("192.0.2.66:6666"))}
	out, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		s.c.check("untrusted", false, "dial: %v", err)
		return
	}
	defer out.Close()
	in, err := acceptWithin(ln, 5*time.Second)
	if err != nil {
		s.c.check("untrusted", false, "%v", err)
		return
	}
	defer in.Close()
	n := s.stat("syn_recv_sock_untrusted") - before
	s.c.check("untrusted", in.RemoteAddr().String() == out.LocalAddr().String() && n == 1,
		"forged option from an untrusted source: accept %s (the sender %s), syn_recv_sock_untrusted +%d", in.RemoteAddr(), out.LocalAddr(), n)
}

// traditional are the eight rows every toa_stats reader knows, in order.
var traditional = []string{"syn_recv_sock_toa", "syn_recv_sock_no_toa", "getname_toa_ok", "getname_toa_mismatch",
	"getname_toa_bypass", "getname_toa_empty", "ip6_address_alloc", "ip6_address_free"}

func (s *suite) checkStats() {
	names, cpus, err := s.r.Layout()
	ok := err == nil && len(names) > len(traditional) && slices.Equal(names[:len(traditional)], traditional) && cpus >= 1
	if s.c.kind == recvtest.KindEBPF {
		ok = ok && slices.Equal(names, toarecv.CounterNames)
	}
	s.c.check("counters-layout", ok, "%d rows (%v), %d CPU columns: %s", len(names), err, cpus, strings.Join(names, " "))
	m, err := s.r.Counters()
	s.c.check("counters-moved", err == nil && m["syn_recv_sock_toa"] >= 5 && m["getname_toa_ok"] >= 5,
		"syn_recv_sock_toa=%d getname_toa_ok=%d (%v)", m["syn_recv_sock_toa"], m["getname_toa_ok"], err)
	s.c.check("probe-missed", err == nil && m["probe_missed"] == 0, "probe_missed=%d", m["probe_missed"])
	for _, name := range names {
		fmt.Printf("info %s counter %s %d\n", s.c.kind, name, m[name])
	}
}

// stopWithConnections stops the receiver with s.keep open and checks what
// it left: the receiver gone, the connections working and showing the
// edge, then, once they are closed, everything freed.
func (s *suite) stopWithConnections() error {
	s.checkLive()
	t0 := time.Now()
	if err := s.r.Stop(); err != nil {
		return err
	}
	s.c.check("stop", true, "stopped in %v with %d connections open", time.Since(t0).Round(time.Microsecond), len(s.keep))
	what, err := s.r.Gone()
	s.c.check("gone", err == nil, "%s (%v)", what, orNone(err))
	wrong := 0
	var first string
	for _, p := range s.keep {
		peer, perr := getpeername(p.in)
		edge := netip.MustParseAddrPort(p.out.LocalAddr().String())
		if eerr := echo(p.in, p.out); perr != nil || !sameClient(peer, edge) || eerr != nil {
			if wrong++; wrong == 1 {
				first = fmt.Sprintf("; first: getpeername %s (%v), want the edge %s; data: %v", peer, perr, edge, eerr)
			}
		}
	}
	s.c.check("after-stop", wrong == 0, "%d of %d connections wrong%s", wrong, len(s.keep), first)
	for _, p := range s.keep {
		p.close()
	}
	s.keep = nil
	detail, alloc, err := s.r.Freed()
	s.c.check("freed", err == nil && alloc > 0, "%s (%v)", detail, orNone(err))
	return nil
}

// checkLive waits (bounded) until the counters say that exactly the open
// connections with an entry hold one: every closed one was freed.
func (s *suite) checkLive() {
	withEntry := 0
	for _, p := range s.keep {
		if _, ok, err := s.entry(p); err == nil && ok {
			withEntry++
		}
	}
	var m map[string]uint64
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		m, err = s.r.Counters()
		if (err == nil && m["ip6_address_alloc"]-m["ip6_address_free"] == uint64(withEntry)) || time.Now().After(deadline) {
			break
		}
	}
	s.c.check("live", err == nil && m["ip6_address_alloc"]-m["ip6_address_free"] == uint64(withEntry) && withEntry > 0,
		"ip6_address_alloc %d - _free %d, %d of the %d open connections have an entry (%v)",
		m["ip6_address_alloc"], m["ip6_address_free"], withEntry, len(s.keep), err)
}

func orNone(err error) any {
	if err == nil {
		return "nothing left"
	}
	return err
}

// restart starts the receiver once more: the oldest TCP listener, opened
// before the first start, gets the client.
func (s *suite) restart() error {
	r, err := recvtest.Start(s.c.kind, s.opts)
	if err != nil {
		return fmt.Errorf("second start: %w", err)
	}
	s.r = r
	client := netip.MustParseAddrPort("192.0.2.30:7100")
	in, out, err := toaConn(s.sender, s.olds[0].ln, s.olds[0].dial, client)
	if err != nil {
		return err
	}
	acc := netip.MustParseAddrPort(in.RemoteAddr().String())
	peer, perr := getpeername(in)
	taken := s.stat("listeners_taken_over")
	takenOK := taken >= 1
	if s.c.kind == recvtest.KindEBPF {
		takenOK = taken == 0
	}
	s.c.check("restart", sameClient(acc, client) && perr == nil && sameClient(peer, client) && takenOK,
		"listener from before the first start: accept %s, getpeername %s (%v), listeners_taken_over %d", acc, peer, perr, taken)
	in.Close()
	out.Close()
	if err := r.Stop(); err != nil {
		return fmt.Errorf("second stop: %w", err)
	}
	what, err := r.Gone()
	s.c.check("gone", err == nil, "after the second stop: %s (%v)", what, orNone(err))
	return nil
}
