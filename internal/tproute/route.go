//go:build linux

package tproute

import (
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// route is a route: the fields the package sets or needs to tell routes
// apart. raw is the message as the kernel dumped it (nil for a route built
// here); deleting a dumped route sends raw back.
type route struct {
	family   uint8
	table    uint32
	dst      netip.Prefix
	protocol uint8
	scope    uint8
	typ      uint8
	oif      uint32
	raw      []byte
}

// same reports whether r and o are the same route, ignoring raw.
func (r route) same(o route) bool {
	return r.family == o.family && r.table == o.table && r.dst == o.dst &&
		r.protocol == o.protocol && r.scope == o.scope && r.typ == o.typ && r.oif == o.oif
}

// marshal encodes r as the body of an RTM_NEWROUTE message.
func (r route) marshal() ([]byte, error) {
	hdr := make([]byte, unix.SizeofRtMsg)
	hdr[0] = r.family
	hdr[1] = uint8(r.dst.Bits())
	hdr[4] = compatTable(r.table)
	hdr[5] = r.protocol
	hdr[6] = r.scope
	hdr[7] = r.typ
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.RTA_TABLE, r.table)
	if r.dst.Bits() > 0 {
		ae.Bytes(unix.RTA_DST, r.dst.Addr().AsSlice())
	}
	ae.Uint32(unix.RTA_OIF, r.oif)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return append(hdr, attrs...), nil
}

// parseRoute decodes the body of an RTM_NEWROUTE message from a dump.
func parseRoute(b []byte) (route, error) {
	if len(b) < unix.SizeofRtMsg {
		return route{}, fmt.Errorf("route message of %d bytes, want at least %d", len(b), unix.SizeofRtMsg)
	}
	r := route{family: b[0], table: uint32(b[4]), protocol: b[5], scope: b[6], typ: b[7], raw: b}
	dstLen := int(b[1])
	ad, err := netlink.NewAttributeDecoder(b[unix.SizeofRtMsg:])
	if err != nil {
		return route{}, err
	}
	var dst []byte
	for ad.Next() {
		switch ad.Type() {
		case unix.RTA_TABLE:
			r.table = ad.Uint32()
		case unix.RTA_DST:
			dst = ad.Bytes()
		case unix.RTA_OIF:
			r.oif = ad.Uint32()
		}
	}
	if err := ad.Err(); err != nil {
		return route{}, err
	}
	if dst == nil && dstLen == 0 {
		dst = unspecified(r.family).AsSlice()
	}
	if r.dst, err = prefixOf(dst, dstLen); err != nil {
		return route{}, fmt.Errorf("route destination: %w", err)
	}
	return r, nil
}

// unspecified is the all-zeros address of family f (0.0.0.0 or ::), or the
// zero Addr for another family.
func unspecified(f uint8) netip.Addr {
	switch f {
	case unix.AF_INET:
		return netip.IPv4Unspecified()
	case unix.AF_INET6:
		return netip.IPv6Unspecified()
	}
	return netip.Addr{}
}

// String describes r the way `ip route` does, with the family in front.
func (r route) String() string {
	dst := "default"
	if r.dst.Bits() > 0 || !r.dst.IsValid() {
		dst = r.dst.String()
	}
	return fmt.Sprintf("%s route %s %s oif %d table %d proto %d scope %s",
		familyName(r.family), typeName(r.typ), dst, r.oif, r.table, r.protocol, scopeName(r.scope))
}

// scopeName names the route scopes ip(8) shows.
func scopeName(s uint8) string {
	switch s {
	case unix.RT_SCOPE_UNIVERSE:
		return "global"
	case unix.RT_SCOPE_LINK:
		return "link"
	case unix.RT_SCOPE_HOST:
		return "host"
	}
	return fmt.Sprint(s)
}

// typeName names the route types ip(8) shows.
func typeName(t uint8) string {
	switch t {
	case unix.RTN_UNICAST:
		return "unicast"
	case unix.RTN_LOCAL:
		return "local"
	case unix.RTN_BROADCAST:
		return "broadcast"
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_THROW:
		return "throw"
	}
	return fmt.Sprintf("type %d", t)
}
