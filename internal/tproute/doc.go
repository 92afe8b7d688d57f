//go:build linux

// Package tproute installs, checks and removes the policy routing that
// transparent sockets need, over rtnetlink.
//
// # Why
//
// The unwrap relay (agent/unwrap) connects to a local server from the
// client's own address: its socket has IP_TRANSPARENT (IPV6_TRANSPARENT)
// and is bound to, say, 198.51.100.7:40001, an address the host does not
// own. Its SYN reaches a server on 127.0.0.1 over lo without trouble, but
// the server's SYN-ACK goes to 198.51.100.7, and the host routes that like
// any other packet to a foreign address: out of the default route towards
// the internet, or nowhere if there is none. The relay never sees it, the
// connect times out, and the client sees a dead server. UDP replies are
// lost the same way. The replies must be delivered locally, where the
// kernel finds the transparent socket by its address and port.
//
// What delivers them is a route table holding "everything is local"
//
//	local 0.0.0.0/0 dev lo   (table T, proto realip)
//	local ::/0 dev lo        (table T, proto realip)
//
// and rules, at one priority P before the main table (both families):
//
//	from all fwmark M lookup T            (packets of sockets with SO_MARK M)
//	from 127.0.0.0/8 iif lo lookup T      (one per Config.Sources prefix)
//	from ::1 iif lo lookup T
//
// "iif lo" matches locally generated packets (the kernel looks routes up
// for them with lo as the input interface), so the source rules catch the
// replies of a server that listens on a loopback address, which is what the
// relay connects to. They take nothing from anyone: a packet from
// 127.0.0.0/8 or ::1 to a foreign address could never leave the host.
// The fwmark rule routes what the relay's own sockets (SO_MARK M) send, and
// what a server's accepted TCP sockets send when net.ipv4.tcp_fwmark_accept
// is 1: they inherit the mark of the relay's SYN, so a server listening on a
// non-loopback local address gets its replies routed back too. Without
// tcp_fwmark_accept, such a server needs its address in Config.Sources.
// This is the standard TPROXY/go-mmproxy setup; the package only makes it
// safe to manage from a long-running agent.
//
// # Ownership
//
// Every rule and route the package creates carries the routing protocol
// number Protocol (rtm_protocol for routes, FRA_PROTOCOL for rules; ip(8)
// shows "proto 82"). The package never modifies or deletes a rule or route
// without it. "Ours" means exactly that: one realip routing setup per
// network namespace.
//
//   - Install first claims the namespace: it binds the abstract unix
//     socket address ClaimName, which a network namespace has once and the
//     kernel frees when its holder exits, however it exits. If a live
//     process holds it, Install fails with ErrClaimed and changes nothing:
//     what it would remove as leftovers below is that process's routing.
//     Remove releases the claim.
//   - Install then checks table T and the rules: if T holds a route of
//     another protocol, or a rule of another protocol looks up T (at
//     priority P or any other, as T would then send that rule's traffic to
//     the host itself), it fails with an error naming the table or priority
//     and what it found, and changes nothing: the operator picks other
//     numbers in the configuration. Otherwise it deletes every rule and
//     route of ours (left by an agent that was killed, or installed with
//     other numbers), adds the set above and checks it. If anything fails it
//     removes what it added.
//   - Routes.Check reports what is missing from the set, or in its way.
//     Verify does the same for a process that did not install it
//     (`realip-agent doctor`), from a Config.
//   - Remove deletes every rule and route of ours; it is idempotent.
//   - Leftovers lists, for doctor, every rule and route of ours present.
//
// Rules from operators at P+1, at P pointing to other tables, or routes in
// other tables are never touched.
//
// # Namespaces and requirements
//
// Install, Verify and Leftovers work in the network namespace of the
// calling thread. Install keeps a netlink socket there, so Check and Remove
// act on that namespace whatever thread calls them later. Install and
// Remove need CAP_NET_ADMIN; Verify and Leftovers only read. The package
// needs Linux 4.20 or later (FRA_PROTOCOL, and strict checking for filtered
// route dumps) with IPv6 enabled. The relay's sockets must set SO_MARK to
// Config.Mark; the mark rule matches all 32 bits of the mark, so nothing
// else may add bits to the mark of those packets.
package tproute
