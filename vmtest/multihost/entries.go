//go:build linux

package main

// The receiver's entries for the load's connections (row "load: entries"):
// toa.ko's over netlink, by namespace; the eBPF receiver's by socket.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/realip/realip/toactl"
	"github.com/realip/realip/vmtest/recvtest"
)

// checkEntries checks every connection against the receiver's entries and
// keeps each one's proxy (the edge's end), and checks that the entries are
// the origin's only.
func (r *loadRun) checkEntries() error {
	if r.s.r.Kind() == recvtest.KindEBPF {
		r.checkSocketEntries()
		return nil
	}
	return r.checkModuleEntries()
}

// checkSocketEntries looks every held connection up in the eBPF
// receiver's socket storage: the client and the edge. The counters must
// say that exactly these connections hold an entry (every earlier one was
// freed), and the client's ends of the same connections, outside the
// origin's cgroup, have none.
func (r *loadRun) checkSocketEntries() {
	missing := 0
	var first string
	for _, h := range r.hs {
		e, ok, err := r.s.r.Entry(h.fd, netip.AddrPort{}, netip.AddrPort{})
		back := back6.Addr()
		if addrPort(h.conn.LocalAddr()).Addr().Is4() {
			back = back4.Addr()
		}
		if err != nil || !ok || e.Client != h.want || e.Edge.Addr() != back {
			if missing++; missing == 1 {
				first = fmt.Sprintf("; first: %s has %+v (found %v, %v), want the edge %s", h.want, e, ok, err, back)
			}
			continue
		}
		h.proxy = e.Edge
	}
	alloc, free, err := r.settledLive(uint64(len(r.hs)))
	r.c.check(missing == 0 && err == nil && alloc-free == uint64(len(r.hs)), "load: entries",
		"%d of %d connections without an entry naming client and edge%s; ip6_address_alloc %d - _free %d = %d (%v)",
		missing, len(r.hs), first, alloc, free, alloc-free, err)
	withEntry := 0
	for _, conn := range r.clients {
		if _, ok, err := r.s.r.Entry(fdOf(conn.(*net.TCPConn)), netip.AddrPort{}, netip.AddrPort{}); ok || err != nil {
			withEntry++
		}
	}
	r.c.check(withEntry == 0 && len(r.clients) > 0, "load: entries elsewhere",
		"%d of the %d client ends of the same connections have an entry", withEntry, len(r.clients))
}

// settledLive reads ip6_address_alloc and _free until their difference is
// want or 10 s have passed (connections closed just before may still be
// on their way to the origin).
func (r *loadRun) settledLive(want uint64) (alloc, free uint64, err error) {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		m, err := r.s.r.Counters()
		if err != nil {
			return 0, 0, err
		}
		alloc, free = m["ip6_address_alloc"], m["ip6_address_free"]
		if alloc-free == want || time.Now().After(deadline) {
			return alloc, free, nil
		}
	}
}

// checkModuleEntries checks every connection against toa.ko's entries,
// dumped over netlink, and keeps each one's proxy (the edge's end).
func (r *loadRun) checkModuleEntries() error {
	// The module answers about the namespace of the asking socket: the
	// origin's entries from inside the origin, none from the edge's.
	entries, live, err := originEntries(r.l)
	if err != nil {
		return err
	}
	var other []toactl.Entry
	oerr := r.l.edge.Do(func() error {
		ectl, err := toactl.Dial()
		if err != nil {
			return err
		}
		defer ectl.Close()
		other, err = ectl.Entries()
		return err
	})
	r.c.check(oerr == nil && len(other) == 0, "load: entries elsewhere",
		"the edge's namespace sees %d of the origin's %d entries (%v)", len(other), len(entries), oerr)
	missing := r.matchEntries(entries)
	m, err := r.s.r.Counters()
	if err != nil {
		return err
	}
	alloc, free := m["ip6_address_alloc"], m["ip6_address_free"]
	r.c.check(missing == 0 && live >= uint64(len(r.hs)) && alloc-free == live, "load: entries",
		"%d live entries (toa_stats: %d allocated - %d freed = %d), %d of %d connections without an entry naming the edge",
		live, alloc, free, alloc-free, missing, len(r.hs))
	return nil
}

// originEntries reads the module's entries and its count of live ones
// over netlink from inside the origin.
func originEntries(l *lab) ([]toactl.Entry, uint64, error) {
	var ctl *toactl.Client
	if err := l.origin.Do(func() (err error) { ctl, err = toactl.Dial(); return err }); err != nil {
		return nil, 0, err
	}
	entries, err := ctl.Entries()
	_, live, serr := ctl.Stats()
	ctl.Close()
	if err != nil || serr != nil {
		return nil, 0, errors.Join(err, serr)
	}
	return entries, live, nil
}

// matchEntries sets the proxy of every connection whose entry names the
// edge and returns how many have no such entry.
func (r *loadRun) matchEntries(entries []toactl.Entry) int {
	byConn := map[[2]netip.AddrPort]toactl.Entry{}
	for _, e := range entries {
		byConn[[2]netip.AddrPort{e.Local, e.Client}] = e
	}
	missing := 0
	for _, h := range r.hs {
		e, ok := byConn[[2]netip.AddrPort{addrPort(h.conn.LocalAddr()), h.want}]
		back := back6.Addr()
		if addrPort(h.conn.LocalAddr()).Addr().Is4() {
			back = back4.Addr()
		}
		if !ok || e.Proxy.Addr() != back {
			missing++
			continue
		}
		h.proxy = e.Proxy
	}
	return missing
}
