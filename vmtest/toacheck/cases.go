//go:build linux

package main

import (
	"fmt"

	"github.com/realip/realip/vmtest/recvtest"
)

// row is one case of toacheck's table and what each receiver must do in
// it. Both receivers run every row; where the two texts differ the
// receivers differ there, on purpose, and the check applies the running
// receiver's own expectation. printTable lists the differences first.
type row struct {
	id, kmod, ebpf string
}

// rows is the table, in the order the cases run.
var rows = []row{
	{"start",
		"toa.ko loaded with trusted=127.0.0.0/8,::1/128, read back from /sys/module/toa/parameters/trusted",
		"attached to the root cgroup and pinned in /sys/fs/bpf/realip/toa, trusted 127.0.0.0/8,::1/128 read back from its map"},
	{"control",
		"the netlink family answers (configuration, counters, live entries)",
		"no netlink family (toactl: not loaded); the pinned maps answer (configuration, counters); live entries cannot be listed"},
	{"v4-client-v4-socket", "accept() and getpeername() report the client", "accept() and getpeername() report the client"},
	{"v4-client-any-socket", "accept() and getpeername() report the client, v4-mapped", "accept() and getpeername() report the client, v4-mapped"},
	{"v6-client-v6-socket", "accept() and getpeername() report the client", "accept() and getpeername() report the client"},
	{"v6-client-v4-socket",
		"accept() and getpeername() report the IPv6 client (an AF_INET6 address, Go's buffer holds a sockaddr_in6)",
		"accept() and getpeername() report the edge (the hook cannot change the address family), getname_toa_mismatch +2"},
	{"entry",
		"every TOA connection has an entry naming the edge, found over netlink by local address and client",
		"every TOA connection has an entry naming client and edge, found by socket in the pinned socket storage"},
	{"listener", "the listener's TOA mode reports client, proxy (the edge) and via=toa", "the listener's TOA mode reports client, proxy (the edge) and via=toa"},
	{"untrusted",
		"trust changed at run time to 203.0.113.0/24: an option from 127.0.0.1 is ignored (accept() reports the sender) and counted in syn_recv_sock_untrusted",
		"trust changed at run time to 203.0.113.0/24: an option from 127.0.0.1 is ignored (accept() reports the sender) and counted in syn_recv_sock_untrusted"},
	{"refused", "impossible clients (port 0, unspecified, multicast, broadcast) refused, counted in syn_recv_sock_bad_option; the edge stays",
		"impossible clients (port 0, unspecified, multicast, broadcast) refused, counted in syn_recv_sock_bad_option; the edge stays"},
	{"controls", "controls next to the refused ranges with IPv4 clients: honoured", "controls next to the refused ranges with IPv4 clients: honoured"},
	{"controls-v6-client-v4-socket",
		"controls with IPv6 clients (v4-mapped included), sent to an IPv4 socket: honoured, accept() and getpeername() report the client",
		"controls with IPv6 clients (v4-mapped included), sent to an IPv4 socket: kept (syn_recv_sock_toa +1) but accept() and getpeername() report the edge, getname_toa_mismatch +2, as in row v6-client-v4-socket"},
	{"old-listeners",
		"listeners older than the receiver: TCP taken over at the first TOA handshake, MPTCP at the first accept() (which on 6.6+ may still report the edge); listeners_taken_over rises",
		"listeners older than the receiver: nothing to take over, every accept() and getpeername() reports the client; listeners_taken_over stays 0"},
	{"ktls",
		"kTLS on a TOA socket: the client before, the edge after (kTLS copies the kernel's proto_ops, not the module's)",
		"kTLS on a TOA socket: the client before and after (the hook is in the kernel's own getname)"},
	{"counters-layout",
		"/proc/net/toa_stats: the eight traditional rows first, in order, a column per online CPU",
		"Counters(): toa.ko's rows in toa.ko's order, the eight traditional first, a value per possible CPU"},
	{"counters-moved", "syn_recv_sock_toa and getname_toa_ok moved", "syn_recv_sock_toa and getname_toa_ok moved"},
	{"probe-missed", "probe_missed 0: no kretprobe was missed", "probe_missed 0: the receiver has no probes, the row is there for the layout"},
	{"live", "before stopping: ip6_address_alloc - _free = the open connections with an entry", "before stopping: ip6_address_alloc - _free = the open connections with an entry"},
	{"stop", "delete_module(toa) with the connections open", "pins removed and links closed with the connections open"},
	{"gone", "no module, no /proc/net/toa_stats, no netlink family", "no pins; none of its programs on the cgroup (the kernel detaches them an RCU grace period after the last reference goes: waited for, at most 10 s); its programs freed"},
	{"after-stop", "the open connections carry data, getpeername() reports the edge", "the open connections carry data, getpeername() reports the edge"},
	{"freed",
		"the module's unload line: every entry freed",
		"the kernel freed the receiver's maps (the open connections' socket storage with them); ip6_address_free is not counted after the detach"},
	{"ktls-after-stop", "getpeername() on a new kTLS socket reports its peer", "getpeername() on a new kTLS socket reports its peer"},
	{"restart",
		"loaded again: the oldest TCP listener (the first load's table) taken over again and shows the client; listeners_taken_over >= 1",
		"attached again (nothing pinned to adopt): the oldest TCP listener shows the client; listeners_taken_over 0"},
}

// expect is row id's text for receiver k.
func expect(id string, k recvtest.Kind) string {
	for _, r := range rows {
		if r.id == id {
			if k == recvtest.KindEBPF {
				return r.ebpf
			}
			return r.kmod
		}
	}
	return fmt.Sprintf("(toacheck has no row %q)", id)
}

// printTable prints the rows where the receivers differ, then those where
// they must do the same.
func printTable() {
	for _, r := range rows {
		if r.kmod != r.ebpf {
			fmt.Printf("diff %s: kmod: %s | ebpf: %s\n", r.id, r.kmod, r.ebpf)
		}
	}
	for _, r := range rows {
		if r.kmod == r.ebpf {
			fmt.Printf("same %s: %s\n", r.id, r.kmod)
		}
	}
}
