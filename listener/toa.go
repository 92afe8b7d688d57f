package listener

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/realip/realip/toactl"
	"github.com/realip/realip/wire"
)

// toaEntry is what a TOA receiver keeps for a connection that carried a
// trusted option: the client from the option, and the edge (proxy) that
// sent it, both unmapped (an IPv4-mapped address is IPv4).
type toaEntry struct {
	client, edge netip.AddrPort
}

// toaLookup finds a connection's entry in a TOA receiver: realip's toa.ko
// (moduleTOA, by address) or the pinned eBPF receiver (pinnedTOA, by the
// accepted socket). found is false when the connection carried no trusted
// option; err only when the receiver could not be asked.
type toaLookup interface {
	lookup(raw net.Conn, local, remote netip.AddrPort) (e toaEntry, found bool, err error)
	Close() error
}

// errNoTOAReceiver starts the error of a TOA listener on a machine that
// runs neither receiver.
var errNoTOAReceiver = errors.New("listener: no TOA receiver: load toa.ko or attach the eBPF receiver: realip-agent load with receiver: ebpf")

// openTOA finds the TOA receiver when the protocols ask for TOA. TOA is
// read by the kernel, before any byte reaches the listener, so it is not
// combined with the PROXY protocol on one listener.
//
// The module comes first: when realip's toa.ko answers on netlink it is
// the receiver in force (realip-agent runs one receiver or the other, and
// the module's lookup needs nothing of the socket). Otherwise the eBPF
// receiver pinned in pinDir (empty: its default folder) is used. With
// neither, the error names both, and wraps what each one answered
// (toactl.ErrNotLoaded, toarecv.ErrNotPinned, ...).
func openTOA(protos []wire.Proto, pinDir string) (toaLookup, error) {
	if !contains(protos, wire.TOA) {
		return nil, nil
	}
	if len(protos) > 1 {
		return nil, fmt.Errorf("listener: toa cannot be combined with %v on one listener", protos)
	}
	c, modErr := toactl.Dial()
	if modErr == nil {
		return moduleTOA{c}, nil
	}
	p, bpfErr := openPinnedTOA(pinDir)
	if bpfErr == nil {
		return p, nil
	}
	return nil, fmt.Errorf("%w (toa.ko: %w; eBPF receiver: %w)", errNoTOAReceiver, modErr, bpfErr)
}

// moduleTOA asks realip's toa.ko over netlink. getpeername has returned
// the client (for an IPv6 client on an IPv4 socket too, when the caller's
// buffer had room for it, as Go's accept does), and the module finds its
// entry by local address and client.
type moduleTOA struct{ c moduleClient }

// moduleClient is the part of *toactl.Client the listener uses.
type moduleClient interface {
	Lookup(local, client netip.AddrPort) (toactl.Entry, error)
	Close() error
}

func (m moduleTOA) lookup(_ net.Conn, local, remote netip.AddrPort) (toaEntry, bool, error) {
	e, err := m.c.Lookup(local, remote)
	switch {
	case err == nil:
		return toaEntry{client: e.Client, edge: e.Proxy}, true, nil
	case errors.Is(err, toactl.ErrNoEntry):
		return toaEntry{}, false, nil
	}
	return toaEntry{}, false, fmt.Errorf("listener: asking toa.ko for the connection %v -> %v: %w", remote, local, err)
}

func (m moduleTOA) Close() error { return m.c.Close() }

// serveTOA turns a connection the receiver may have rewritten into a Conn:
// getpeername already returns the client (except where the eBPF receiver's
// hook cannot: an IPv6 client on an IPv4 socket); the receiver's entry
// tells client and edge. It returns nil after closing and counting a
// rejected connection.
func (l *Listener) serveTOA(raw net.Conn) *Conn {
	remote, local := addrPort(raw.RemoteAddr()), addrPort(raw.LocalAddr())
	e, found, err := l.toa.lookup(raw, local, remote)
	switch {
	case err != nil:
		l.reject(raw, remote, ReasonReadError, err)
		return nil
	case found:
		return l.toaEntryConn(raw, e)
	}
	// No trusted TOA option: the socket's peer is the real peer.
	if !l.pol.trusts(remote.Addr()) {
		l.stats.untrusted.Add(1)
	} else if !l.pol.Optional {
		l.reject(raw, remote, ReasonMissing, errors.New("trusted peer sent no TOA option"))
		return nil
	}
	return newConn(raw, l, remote, remote, wire.None)
}

// toaEntryConn applies the listener's own trust list to the edge the
// receiver saw: a receiver trusting every source (legacy) cannot make the
// listener honour a forged option. The client comes from the entry, not
// from getpeername, so the listener also reports an IPv6 client on an IPv4
// socket, which the eBPF receiver's hook leaves as the edge.
func (l *Listener) toaEntryConn(raw net.Conn, e toaEntry) *Conn {
	if l.pol.trusts(e.edge.Addr()) {
		return newConn(raw, l, e.client, e.edge, wire.TOA)
	}
	l.stats.untrusted.Add(1)
	if l.pol.Untrusted == UntrustedIgnore {
		l.stats.ignoredHeaders.Add(1)
		return newConn(raw, l, e.edge, e.edge, wire.None)
	}
	l.reject(raw, e.edge, ReasonUntrusted, fmt.Errorf("TOA option from untrusted proxy %s", e.edge))
	return nil
}
