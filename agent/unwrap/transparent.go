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
// IPV6_TRANSPARENT), SO_REUSEADDR and, when mark is not 0, SO_MARK.
func dialTransparent(ctx context.Context, network string, from, to netip.AddrPort, mark uint32, timeout time.Duration) (net.Conn, error) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	var local net.Addr = net.TCPAddrFromAddrPort(from)
	if network == "udp" {
		local = net.UDPAddrFromAddrPort(from)
	}
	family := network + "4"
	if from.Addr().Is6() {
		family = network + "6"
	}
	d := net.Dialer{
		LocalAddr: local,
		Timeout:   timeout,
		Control: func(_, _ string, c syscall.RawConn) error {
			return setTransparent(c, from.Addr().Is6(), mark)
		},
	}
	conn, err := d.DialContext(ctx, family, to.String())
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
