//go:build linux

package listener

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/realip/realip/toarecv"
)

// pinnedTOA asks the eBPF TOA receiver (package toarecv) through its
// pinned maps. Its entries are kept per socket, so the lookup goes by the
// accepted socket's file descriptor.
type pinnedTOA struct {
	recv    *toarecv.Pinned
	queries sync.Pool // *fdQuery
}

// fdQuery is one lookup run inside syscall.RawConn.Control. It is pooled
// with its callback bound once, so a lookup allocates nothing of its own
// (the closure and its results would otherwise escape on every accept).
type fdQuery struct {
	recv  *toarecv.Pinned
	run   func(fd uintptr)
	entry toarecv.Entry
	found bool
	err   error
}

func (q *fdQuery) lookup(fd uintptr) {
	q.entry, q.found, q.err = q.recv.Lookup(int(fd))
}

// openPinnedTOA opens the maps of the eBPF receiver pinned in dir (empty:
// toarecv.DefaultPinDir).
func openPinnedTOA(dir string) (toaLookup, error) {
	recv, err := toarecv.OpenPinned(dir)
	if err != nil {
		return nil, err
	}
	p := &pinnedTOA{recv: recv}
	p.queries.New = func() any {
		q := &fdQuery{recv: recv}
		q.run = q.lookup
		return q
	}
	return p, nil
}

func (p *pinnedTOA) lookup(raw net.Conn, local, remote netip.AddrPort) (toaEntry, bool, error) {
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return toaEntry{}, false, fmt.Errorf("listener: the eBPF TOA receiver is asked by socket, and a %T has none", raw)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return toaEntry{}, false, fmt.Errorf("listener: the socket of %v -> %v: %w", remote, local, err)
	}
	q := p.queries.Get().(*fdQuery)
	cerr := rc.Control(q.run)
	e, found, lerr := q.entry, q.found, q.err
	q.entry, q.found, q.err = toarecv.Entry{}, false, nil
	p.queries.Put(q)
	switch {
	case cerr != nil:
		return toaEntry{}, false, fmt.Errorf("listener: the socket of %v -> %v: %w", remote, local, cerr)
	case lerr != nil:
		return toaEntry{}, false, fmt.Errorf("listener: asking the eBPF TOA receiver for %v -> %v: %w", remote, local, lerr)
	case !found:
		return toaEntry{}, false, nil
	}
	return toaEntry{client: unmap(e.Client), edge: unmap(e.Edge)}, true, nil
}

func (p *pinnedTOA) Close() error { return p.recv.Close() }

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
