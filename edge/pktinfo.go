//go:build linux

package edge

import (
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// enablePktinfo asks the kernel to tell, with every datagram, the address
// it was sent to: on a socket bound to every address that is the only way
// to know the target of a flow and to answer from that same address. A
// dual-stack socket needs both options (IPv4 datagrams report IP_PKTINFO).
func enablePktinfo(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = setPktinfo(int(fd)) }); err != nil {
		return err
	}
	return serr
}

// setPktinfo is enablePktinfo on a descriptor.
func setPktinfo(fd int) error {
	v4err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	v6err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
	if v4err != nil && v6err != nil {
		return fmt.Errorf("enable IP_PKTINFO: %v; IPV6_RECVPKTINFO: %v", v4err, v6err)
	}
	return nil
}

// pktinfoDst returns the destination address in the control messages of a
// received datagram.
func pktinfoDst(oob []byte) (netip.Addr, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}, false
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			return netip.AddrFrom4([4]byte(m.Data[8:12])), true
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			return netip.AddrFrom16([16]byte(m.Data[:16])), true
		}
	}
	return netip.Addr{}, false
}

// replyControl is the control message that makes a reply leave from addr.
func replyControl(addr netip.Addr) []byte {
	if addr.Is4() {
		return unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: addr.As4()})
	}
	return unix.PktInfo6(&unix.Inet6Pktinfo{Addr: addr.As16()})
}
