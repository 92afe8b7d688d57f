//go:build linux

package tproute

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ruleHdrLen is the size of struct fib_rule_hdr: family, dst_len, src_len,
// tos, table, res1, res2, action (one byte each), flags (u32).
const ruleHdrLen = 12

// rule is a policy routing rule: the fields the package sets or needs to
// tell rules apart. raw is the message as the kernel dumped it (nil for a
// rule built here); deleting a dumped rule sends raw back.
type rule struct {
	family     uint8
	priority   uint32
	table      uint32
	protocol   uint8
	action     uint8
	mark, mask uint32
	src        netip.Prefix // invalid for "from all"
	iif        string
	raw        []byte
}

// same reports whether r and o are the same rule, ignoring raw.
func (r rule) same(o rule) bool {
	return r.family == o.family && r.priority == o.priority && r.table == o.table &&
		r.protocol == o.protocol && r.action == o.action && r.mark == o.mark &&
		r.mask == o.mask && r.src == o.src && r.iif == o.iif
}

// marshal encodes r as the body of an RTM_NEWRULE message.
func (r rule) marshal() ([]byte, error) {
	hdr := make([]byte, ruleHdrLen)
	hdr[0] = r.family
	hdr[4] = compatTable(r.table)
	hdr[7] = r.action
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.FRA_PRIORITY, r.priority)
	ae.Uint32(unix.FRA_TABLE, r.table)
	ae.Uint8(unix.FRA_PROTOCOL, r.protocol)
	if r.mark != 0 || r.mask != 0 {
		ae.Uint32(unix.FRA_FWMARK, r.mark)
		ae.Uint32(unix.FRA_FWMASK, r.mask)
	}
	if r.src.IsValid() {
		hdr[2] = uint8(r.src.Bits())
		ae.Bytes(unix.FRA_SRC, r.src.Addr().AsSlice())
	}
	if r.iif != "" {
		ae.String(unix.FRA_IIFNAME, r.iif)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return append(hdr, attrs...), nil
}

// parseRule decodes the body of an RTM_NEWRULE message from a dump.
func parseRule(b []byte) (rule, error) {
	if len(b) < ruleHdrLen {
		return rule{}, fmt.Errorf("rule message of %d bytes, want at least %d", len(b), ruleHdrLen)
	}
	r := rule{family: b[0], table: uint32(b[4]), action: b[7], raw: b}
	srcLen := int(b[2])
	ad, err := netlink.NewAttributeDecoder(b[ruleHdrLen:])
	if err != nil {
		return rule{}, err
	}
	var src []byte
	for ad.Next() {
		switch ad.Type() {
		case unix.FRA_PRIORITY:
			r.priority = ad.Uint32()
		case unix.FRA_TABLE:
			r.table = ad.Uint32()
		case unix.FRA_PROTOCOL:
			r.protocol = ad.Uint8()
		case unix.FRA_FWMARK:
			r.mark = ad.Uint32()
		case unix.FRA_FWMASK:
			r.mask = ad.Uint32()
		case unix.FRA_SRC:
			src = ad.Bytes()
		case unix.FRA_IIFNAME:
			r.iif = ad.String()
		}
	}
	if err := ad.Err(); err != nil {
		return rule{}, err
	}
	if r.src, err = prefixOf(src, srcLen); err != nil {
		return rule{}, fmt.Errorf("rule source: %w", err)
	}
	return r, nil
}

// String describes r the way `ip rule` does, with the family in front.
func (r rule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s rule pref %d from ", familyName(r.family), r.priority)
	if r.src.IsValid() {
		b.WriteString(r.src.String())
	} else {
		b.WriteString("all")
	}
	if r.iif != "" {
		fmt.Fprintf(&b, " iif %s", r.iif)
	}
	if r.mark != 0 || r.mask != 0 {
		fmt.Fprintf(&b, " fwmark %#x", r.mark)
		if r.mask != fullMask {
			fmt.Fprintf(&b, "/%#x", r.mask)
		}
	}
	if r.action == unix.FR_ACT_TO_TBL {
		fmt.Fprintf(&b, " lookup %d", r.table)
	} else {
		fmt.Fprintf(&b, " action %d", r.action)
	}
	fmt.Fprintf(&b, " proto %d", r.protocol)
	return b.String()
}

// compatTable is the one-byte table field of route and rule headers: the
// table itself when it fits, RT_TABLE_COMPAT otherwise (the u32 attribute
// carries the real number).
func compatTable(t uint32) uint8 {
	if t < tableCompat {
		return uint8(t)
	}
	return tableCompat
}

// prefixOf makes a prefix of an address attribute and a prefix length from
// a header. No address and length 0 mean "all" (an invalid Prefix).
func prefixOf(addr []byte, bits int) (netip.Prefix, error) {
	if addr == nil && bits == 0 {
		return netip.Prefix{}, nil
	}
	a, ok := netip.AddrFromSlice(addr)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("address of %d bytes", len(addr))
	}
	p := netip.PrefixFrom(a, bits)
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("prefix length %d for %v", bits, a)
	}
	return p, nil
}

// familyName names an address family in messages.
func familyName(f uint8) string {
	switch f {
	case unix.AF_INET:
		return "IPv4"
	case unix.AF_INET6:
		return "IPv6"
	}
	return fmt.Sprintf("family %d", f)
}
