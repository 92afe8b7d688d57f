//go:build linux

package unwrap

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// target is the server address for a client's family: To for IPv4, To6
// for IPv6; ok is false when the entry has none for that family.
func (e *Entry) target(client netip.Addr) (netip.AddrPort, bool) {
	if client.Unmap().Is4() {
		return e.To, e.To.IsValid()
	}
	return e.To6, e.To6.IsValid()
}

// dialTransparent connects a "tcp" or "udp" socket bound to from (an
// address that need not be local) to to, with IP_TRANSPARENT (or
// IPV6_TRANSPARENT), SO_REUSEADDR and, when mark is not 0, SO_MARK. The
// connection is a *net.TCPConn or a *net.UDPConn.
//
// It dials with the netip forms of the Dialer, which skip the parsing and
// resolving of an address string, and without TCP keep-alive: the server
// is on this host, where a vanished server shows as a reset, not as
// silence, so probes would find nothing and setting them up costs four
// setsockopt calls per connection.
func dialTransparent(ctx context.Context, network string, from, to netip.AddrPort, mark uint32, timeout time.Duration) (net.Conn, error) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	v6 := from.Addr().Is6()
	d := net.Dialer{
		Timeout:   timeout,
		KeepAlive: -1,
		Control: func(_, _ string, c syscall.RawConn) error {
			return setTransparent(c, v6, mark)
		},
	}
	family := network + "4"
	if v6 {
		family = network + "6"
	}
	var (
		conn net.Conn
		err  error
	)
	switch network {
	case "tcp":
		var c *net.TCPConn
		if c, err = d.DialTCP(ctx, family, from, to); err == nil {
			conn = c // not a nil *TCPConn in a non-nil net.Conn
		}
	case "udp":
		var c *net.UDPConn
		if c, err = d.DialUDP(ctx, family, from, to); err == nil {
			conn = c
		}
	default:
		err = net.UnknownNetworkError(network)
	}
	if err != nil {
		return nil, fmt.Errorf("unwrap: connect %s from %s: %w", to, from, err)
	}
	return conn, nil
}

// setTransparent sets the socket options of a transparent socket.
func setTransparent(c syscall.RawConn, v6 bool, mark uint32) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		s := int(fd)
		if v6 {
			serr = unix.SetsockoptInt(s, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
		} else {
			serr = unix.SetsockoptInt(s, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		}
		if serr != nil {
			serr = fmt.Errorf("IP_TRANSPARENT: %w (needs CAP_NET_ADMIN)", serr)
			return
		}
		if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
			serr = fmt.Errorf("SO_REUSEADDR: %w", serr)
			return
		}
		if mark != 0 {
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); serr != nil {
				serr = fmt.Errorf("SO_MARK: %w", serr)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// Keep-alive of the edge's connections: Go's defaults for a connection
// (net.Dialer, net.ListenConfig).
const (
	keepAliveIdle     = 15 * time.Second
	keepAliveInterval = 15 * time.Second
	keepAliveCount    = 9
)

// setListenOptions sets the options of the TCP listening socket that its
// accepted sockets inherit (Linux copies them from the listener): Go's
// keep-alive defaults and TCP_NODELAY; and TCP_DEFER_ACCEPT (see
// listenSocket).
func setListenOptions(_, _ string, c syscall.RawConn) error {
	opts := [...]struct {
		level, name, value int
		what               string
	}{
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1, "SO_KEEPALIVE"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepAliveIdle / time.Second), "TCP_KEEPIDLE"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepAliveInterval / time.Second), "TCP_KEEPINTVL"},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAliveCount, "TCP_KEEPCNT"},
		{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1, "TCP_NODELAY"},
		{unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 1, "TCP_DEFER_ACCEPT"},
	}
	var serr error
	err := c.Control(func(fd uintptr) {
		for _, o := range opts {
			if err := unix.SetsockoptInt(int(fd), o.level, o.name, o.value); err != nil {
				serr = fmt.Errorf("%s: %w", o.what, err)
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// setReusePort sets SO_REUSEPORT on a socket before it is bound, so that
// several sockets share one address (see listenUDP).
func setReusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("SO_REUSEPORT: %w", serr)
	}
	return nil
}
