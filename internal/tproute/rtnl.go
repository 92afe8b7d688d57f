//go:build linux

package tproute

import (
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// rtnetlink values the package uses, under short names.
const (
	afInet        = unix.AF_INET
	afInet6       = unix.AF_INET6
	tableCompat   = unix.RT_TABLE_COMPAT
	tableLocal    = unix.RT_TABLE_LOCAL
	scopeHost     = unix.RT_SCOPE_HOST
	scopeUniverse = unix.RT_SCOPE_UNIVERSE // what the kernel reports for every IPv6 route
	rtnLocal      = unix.RTN_LOCAL
	actionToTable = unix.FR_ACT_TO_TBL
	fullMask      = 0xffffffff
	// loopbackIndex is lo's interface index: the kernel gives lo index 1
	// (LOOPBACK_IFINDEX) in every network namespace.
	loopbackIndex = 1
	loopbackName  = "lo"
)

// dial opens an rtnetlink socket in the calling thread's network namespace.
// Strict mode turns on extended acknowledgements (the kernel's own error
// messages) and strict checking, which filtered route dumps need.
func dial() (*netlink.Conn, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Strict: true})
	if err != nil {
		return nil, fmt.Errorf("tproute: open rtnetlink socket: %w", err)
	}
	return c, nil
}

// listRules returns every rule of both families.
func listRules(c *netlink.Conn) ([]rule, error) {
	var rules []rule
	for _, fam := range []uint8{afInet, afInet6} {
		req := make([]byte, ruleHdrLen)
		req[0] = fam
		msgs, err := c.Execute(netlink.Message{
			Header: netlink.Header{Type: unix.RTM_GETRULE, Flags: netlink.Request | netlink.Dump},
			Data:   req,
		})
		if err != nil {
			return nil, fmt.Errorf("tproute: list %s rules: %w", familyName(fam), err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.RTM_NEWRULE {
				continue
			}
			r, err := parseRule(m.Data)
			if err != nil {
				return nil, fmt.Errorf("tproute: list %s rules: %w", familyName(fam), err)
			}
			rules = append(rules, r)
		}
	}
	return rules, nil
}

// listRoutes returns the routes of both families in table (0: every table)
// with protocol proto (0: any). The kernel filters the dump; the result is
// filtered again here, so it is right even where the kernel does not.
func listRoutes(c *netlink.Conn, table uint32, proto uint8) ([]route, error) {
	var routes []route
	for _, fam := range []uint8{afInet, afInet6} {
		msgs, err := dumpRoutes(c, fam, table, proto)
		if err != nil {
			return nil, fmt.Errorf("tproute: list %s routes: %w", familyName(fam), err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.RTM_NEWROUTE {
				continue
			}
			r, err := parseRoute(m.Data)
			if err != nil {
				return nil, fmt.Errorf("tproute: list %s routes: %w", familyName(fam), err)
			}
			if (table == 0 || r.table == table) && (proto == 0 || r.protocol == proto) {
				routes = append(routes, r)
			}
		}
	}
	return routes, nil
}

// dumpRoutes asks for the routes of family fam in table with protocol
// proto. A table that does not exist (ENOENT) has no routes.
func dumpRoutes(c *netlink.Conn, fam uint8, table uint32, proto uint8) ([]netlink.Message, error) {
	req := make([]byte, unix.SizeofRtMsg)
	req[0] = fam
	req[5] = proto
	if table != 0 {
		ae := netlink.NewAttributeEncoder()
		ae.Uint32(unix.RTA_TABLE, table)
		attrs, err := ae.Encode()
		if err != nil {
			return nil, err
		}
		req = append(req, attrs...)
	}
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETROUTE, Flags: netlink.Request | netlink.Dump},
		Data:   req,
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	return msgs, err
}

// change sends one request that adds or deletes a rule or route and waits
// for the kernel's acknowledgement.
func change(c *netlink.Conn, typ netlink.HeaderType, flags netlink.HeaderFlags, data []byte) error {
	_, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   data,
	})
	return err
}

// addRoute adds r; it fails if the same route exists.
func addRoute(c *netlink.Conn, r route) error {
	data, err := r.marshal()
	if err == nil {
		err = change(c, unix.RTM_NEWROUTE, netlink.Create|netlink.Excl, data)
	}
	if err != nil {
		return fmt.Errorf("tproute: add %v: %w", r, err)
	}
	return nil
}

// addRule adds r; it fails if the same rule exists.
func addRule(c *netlink.Conn, r rule) error {
	data, err := r.marshal()
	if err == nil {
		err = change(c, unix.RTM_NEWRULE, netlink.Create|netlink.Excl, data)
	}
	if err != nil {
		return fmt.Errorf("tproute: add %v: %w", r, err)
	}
	return nil
}

// deleteRoute deletes a dumped route by sending the kernel's own
// description of it back, protocol included, so nothing else can match. A
// route that is already gone is not an error.
func deleteRoute(c *netlink.Conn, r route) error {
	err := change(c, unix.RTM_DELROUTE, 0, r.raw)
	if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("tproute: delete %v: %w", r, err)
	}
	return nil
}

// deleteRule deletes a dumped rule the same way as deleteRoute.
func deleteRule(c *netlink.Conn, r rule) error {
	err := change(c, unix.RTM_DELRULE, 0, r.raw)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("tproute: delete %v: %w", r, err)
	}
	return nil
}
