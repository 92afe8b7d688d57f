package listener

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/realip/realip/toactl"
	"github.com/realip/realip/wire"
)

// toaLookup finds the entry the TOA kernel module keeps for a connection;
// *toactl.Client implements it.
type toaLookup interface {
	Lookup(local, client netip.AddrPort) (toactl.Entry, error)
	Close() error
}

// openTOA connects to realip's toa.ko when the protocols ask for TOA. TOA
// is read by the kernel, before any byte reaches the listener, so it is
// not combined with the PROXY protocol on one listener.
func openTOA(protos []wire.Proto) (toaLookup, error) {
	if !contains(protos, wire.TOA) {
		return nil, nil
	}
	if len(protos) > 1 {
		return nil, fmt.Errorf("listener: toa cannot be combined with %v on one listener", protos)
	}
	c, err := toactl.Dial()
	if err != nil {
		return nil, fmt.Errorf("listener: toa needs realip's toa.ko loaded and configured (realip-agent load): %w", err)
	}
	return c, nil
}

// serveTOA turns a connection the module may have rewritten into a Conn:
// getpeername already returns the client; the module's entry tells the
// proxy. It returns nil after closing and counting a rejected connection.
func (l *Listener) serveTOA(raw net.Conn) *Conn {
	remote, local := addrPort(raw.RemoteAddr()), addrPort(raw.LocalAddr())
	e, err := l.toa.Lookup(local, remote)
	switch {
	case err == nil:
		return l.toaEntryConn(raw, e)
	case errors.Is(err, toactl.ErrNoEntry):
		// No trusted TOA option: the socket's peer is the real peer.
		if !l.pol.trusts(remote.Addr()) {
			l.stats.untrusted.Add(1)
		} else if !l.pol.Optional {
			l.reject(raw, remote, ReasonMissing, errors.New("trusted peer sent no TOA option"))
			return nil
		}
		return newConn(raw, l, remote, remote, wire.None)
	default:
		l.reject(raw, remote, ReasonReadError, err)
		return nil
	}
}

// toaEntryConn applies the listener's own trust list to the proxy the
// module saw: a module trusting every source (legacy) cannot make the
// listener honour a forged option.
func (l *Listener) toaEntryConn(raw net.Conn, e toactl.Entry) *Conn {
	if l.pol.trusts(e.Proxy.Addr()) {
		return newConn(raw, l, e.Client, e.Proxy, wire.TOA)
	}
	l.stats.untrusted.Add(1)
	if l.pol.Untrusted == UntrustedIgnore {
		l.stats.ignoredHeaders.Add(1)
		return newConn(raw, l, e.Proxy, e.Proxy, wire.None)
	}
	l.reject(raw, e.Proxy, ReasonUntrusted, fmt.Errorf("TOA option from untrusted proxy %s", e.Proxy))
	return nil
}
