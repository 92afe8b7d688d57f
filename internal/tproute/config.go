//go:build linux

package tproute

import (
	"fmt"
	"net/netip"
)

const (
	// DefaultTable is the route table used when Config.Table is 0: not one
	// of iproute2's named tables, nor wg-quick's (51820) or Tailscale's (52).
	DefaultTable uint32 = 7714
	// DefaultPriority is the rule priority used when Config.Priority is 0:
	// after the local table's rule (0), before main's (32766), clear of
	// Tailscale's (5210-5270) and wg-quick's (32764-32765).
	DefaultPriority uint32 = 7710
	// DefaultMark is the socket mark (SO_MARK) used when Config.Mark is 0.
	// It lives in the low byte, which kube-proxy (0x4000, 0x8000), Calico
	// (0xffff0000), Cilium (0x0f00 and up) and Tailscale (0xff0000) leave
	// alone.
	DefaultMark uint32 = 0x14
	// Protocol is the routing protocol number (rtm_protocol, FRA_PROTOCOL)
	// on every rule and route the package creates: what makes them ours.
	// 82 is not in iproute2's rt_protos (0-18, 42, 99, 186-192), nor
	// among the numbers of FRR (186-198), BIRD (12), keepalived (18) or
	// Calico (80). ip(8) shows it as "proto 82".
	Protocol uint8 = 82
)

// First and last rule priority a Config may use: 0 is the local table's
// rule, 32766 and 32767 main's and default's, and a rule after main would
// never see a reply main has a route for.
const (
	minPriority = 1
	maxPriority = 32765
)

// Config is the routing to install. Zero fields take the defaults (see
// WithDefaults).
type Config struct {
	// Table is the route table that holds the local routes.
	Table uint32
	// Priority is the priority of every rule.
	Priority uint32
	// Mark is the SO_MARK of the relay's transparent sockets.
	Mark uint32
	// Sources are the addresses local servers reply from: packets from
	// them to a foreign address are delivered locally. nil means
	// 127.0.0.0/8 and ::1/128 (servers listening on loopback); an empty
	// non-nil slice installs no source rule.
	Sources []netip.Prefix
}

// WithDefaults returns c with zero fields set to the defaults. Sources is
// copied, so the result does not share it with c.
func (c Config) WithDefaults() Config {
	if c.Table == 0 {
		c.Table = DefaultTable
	}
	if c.Priority == 0 {
		c.Priority = DefaultPriority
	}
	if c.Mark == 0 {
		c.Mark = DefaultMark
	}
	if c.Sources == nil {
		c.Sources = []netip.Prefix{
			netip.MustParsePrefix("127.0.0.0/8"),
			netip.MustParsePrefix("::1/128"),
		}
	} else {
		c.Sources = append([]netip.Prefix{}, c.Sources...)
	}
	return c
}

// validate reports the first field of c (with defaults applied) that
// cannot be installed.
func (c Config) validate() error {
	switch {
	case c.Table == 0 || c.Table >= tableCompat && c.Table <= tableLocal:
		return fmt.Errorf("tproute: table %d is reserved (0, 252 compat, 253 default, 254 main, 255 local)", c.Table)
	case c.Priority < minPriority || c.Priority > maxPriority:
		return fmt.Errorf("tproute: priority %d is outside %d..%d (before the main table's rule)", c.Priority, minPriority, maxPriority)
	case c.Mark == 0:
		return fmt.Errorf("tproute: mark 0 would match every unmarked packet")
	}
	seen := make(map[netip.Prefix]bool, len(c.Sources))
	for _, p := range c.Sources {
		switch {
		case !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6():
			return fmt.Errorf("tproute: source %v: want an IPv4 or IPv6 prefix", p)
		case p != p.Masked():
			return fmt.Errorf("tproute: source %v has bits set after the prefix length (did you mean %v?)", p, p.Masked())
		case seen[p]:
			return fmt.Errorf("tproute: source %v is listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

// wantRoutes are the routes c installs: one local default route per family.
func (c Config) wantRoutes() []route {
	return []route{
		{family: afInet, table: c.Table, dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0),
			protocol: Protocol, scope: scopeHost, typ: rtnLocal, oif: loopbackIndex},
		{family: afInet6, table: c.Table, dst: netip.PrefixFrom(netip.IPv6Unspecified(), 0),
			protocol: Protocol, scope: scopeUniverse, typ: rtnLocal, oif: loopbackIndex},
	}
}

// wantRules are the rules c installs: fwmark rules first, then source rules.
func (c Config) wantRules() []rule {
	var rs []rule
	for _, fam := range []uint8{afInet, afInet6} {
		rs = append(rs, rule{family: fam, priority: c.Priority, table: c.Table, protocol: Protocol,
			action: actionToTable, mark: c.Mark, mask: fullMask})
	}
	for _, p := range c.Sources {
		fam := uint8(afInet)
		if p.Addr().Is6() {
			fam = afInet6
		}
		rs = append(rs, rule{family: fam, priority: c.Priority, table: c.Table, protocol: Protocol,
			action: actionToTable, src: p, iif: loopbackName})
	}
	return rs
}
