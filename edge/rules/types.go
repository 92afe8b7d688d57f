package rules

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/realip/realip/wire"
)

// Limits of the rule format.
const (
	MaxRules       = 2000  // rules in one file
	MaxForwardPort = 64999 // highest forwarding port
	MaxOriginPort  = 65535 // highest origin port
	MaxTagLen      = 50    // tag length in Unicode code points
	MaxGroupName   = 50    // group name length in bytes (ASCII only)
)

// Proto is the transport protocol of a rule.
type Proto uint8

// The protocols. The zero Proto is not valid.
const (
	TCP Proto = iota + 1
	UDP
)

// String returns "tcp" or "udp".
func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return "proto(" + strconv.Itoa(int(p)) + ")"
}

// A rule's IP passing mode (Rule.IPMode) says how the edge passes the client
// address to the origin. It is a wire.Proto; in a rules file its keyword is
// its name, except wire.None's, which is "off" (ModeKeyword).
//
// ipModes lists the modes a rules file takes, in the order error messages
// name them, with the protocols each is available for.
var ipModes = [...]struct {
	mode     wire.Proto
	tcp, udp bool
}{
	{wire.TOA, true, false},  // TCP option
	{wire.PPv1, true, false}, // PROXY protocol v1
	{wire.PPv2, true, true},  // PROXY protocol v2
	{wire.SPP, false, true},  // SPP header on every datagram
	{wire.None, true, true},  // the client address is not passed
}

// ModeKeyword returns the rules-file keyword of IP passing mode m: "off"
// for wire.None, the name of m otherwise.
func ModeKeyword(m wire.Proto) string {
	if m == wire.None {
		return "off"
	}
	return m.String()
}

// Supports reports whether IP passing mode m can be used with protocol p.
func (p Proto) Supports(m wire.Proto) bool {
	for _, im := range ipModes {
		if im.mode == m {
			return p == TCP && im.tcp || p == UDP && im.udp
		}
	}
	return false
}

// PortRange is the ports Lo..Hi, both included. Lo == Hi is a single port.
type PortRange struct {
	Lo, Hi uint16
}

// Len returns the number of ports in the range.
func (r PortRange) Len() int { return int(r.Hi) - int(r.Lo) + 1 }

// Contains reports whether port p is in the range.
func (r PortRange) Contains(p uint16) bool { return r.Lo <= p && p <= r.Hi }

// IsRange reports whether r holds more than one port.
func (r PortRange) IsRange() bool { return r.Lo != r.Hi }

// String returns "a" for a single port and "a-b" for a range.
func (r PortRange) String() string {
	if !r.IsRange() {
		return strconv.Itoa(int(r.Lo))
	}
	return strconv.Itoa(int(r.Lo)) + "-" + strconv.Itoa(int(r.Hi))
}

// OriginKind tells what an Origin names.
type OriginKind uint8

// The kinds of origin. The zero OriginKind is not valid.
const (
	OriginIP     OriginKind = iota + 1 // Origin.Addr holds an IPv4 or IPv6 address
	OriginDomain                       // Origin.Name holds a domain name
	OriginGroup                        // Origin.Name holds an origin group name
)

// Origin is where a rule sends traffic, or one host of an origin group.
type Origin struct {
	Kind OriginKind
	Addr netip.Addr // for OriginIP
	Name string     // lower-case domain (OriginDomain) or group name (OriginGroup)
}

// String returns the origin in canonical form: the address, the domain
// name, or "og:" and the group name.
func (o Origin) String() string {
	switch o.Kind {
	case OriginIP:
		return o.Addr.String()
	case OriginGroup:
		return "og:" + o.Name
	}
	return o.Name
}

// Rule is one forwarding rule.
type Rule struct {
	Proto      Proto
	Ports      []PortRange // forwarding ports, in the order written
	Origin     Origin
	OriginPort PortRange  // a single port, or a range as long as Ports[0]
	Persist    bool       // session persistence
	IPMode     wire.Proto // the IP passing mode
	Tag        string     // "" when the rule has none
	Line       int        // line of the rule in its file
}

// String returns the rule in canonical form, without a line end.
func (r Rule) String() string {
	var b strings.Builder
	b.WriteString(r.Proto.String())
	b.WriteByte(':')
	for i, pr := range r.Ports {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(pr.String())
	}
	b.WriteByte(' ')
	b.WriteString(r.Origin.String())
	b.WriteByte(' ')
	b.WriteString(r.OriginPort.String())
	if r.Persist {
		b.WriteString(" on ")
	} else {
		b.WriteString(" off ")
	}
	b.WriteString(ModeKeyword(r.IPMode))
	if r.Tag != "" {
		b.WriteByte(' ')
		b.WriteString(r.Tag)
	}
	return b.String()
}

// PortCount returns the number of forwarding ports of the rule.
func (r Rule) PortCount() int {
	n := 0
	for _, pr := range r.Ports {
		n += pr.Len()
	}
	return n
}

// OriginPortFor returns the origin port for forwarding port p, and false
// when p is not a forwarding port of the rule.
func (r Rule) OriginPortFor(p uint16) (uint16, bool) {
	for _, pr := range r.Ports {
		if pr.Contains(p) {
			return r.originPort(p), true
		}
	}
	return 0, false
}

// originPort maps forwarding port p, which must belong to the rule, to its
// origin port. An origin port range comes with a single forwarding range,
// so this takes constant time.
func (r Rule) originPort(p uint16) uint16 {
	if !r.OriginPort.IsRange() {
		return r.OriginPort.Lo
	}
	return r.OriginPort.Lo + (p - r.Ports[0].Lo)
}
