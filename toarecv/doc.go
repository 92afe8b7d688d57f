//go:build linux

// Package toarecv is realip's eBPF TOA receiver: without a kernel module,
// it makes getpeername() and accept() return the client address that an
// L4 edge put into a TCP option (TOA), for every process in a cgroup v2.
// It is the peer of realip's toa.ko (kmod/) and follows the same rules;
// realip-agent runs one or the other (its `receiver:` setting).
//
// # How it works
//
// Open loads three programs (recv.bpf.c) and attaches them to a cgroup v2
// folder, by default the root of the cgroup v2 mount (every process). A
// connection belongs to the cgroup its listening socket was created in,
// not to the one its process is in now: a listener made before its process
// joined the cgroup, or handed over by systemd socket activation (made by
// PID 1), is not served unless the folder is one of their ancestors (the
// root always is).
//
//   - a sockops program reads the option from the segment that completed
//     each passive handshake (the ACK, a data segment that overtook it, or
//     the ACK alone with syncookies), and from the SYN when the listener
//     saved it (TCP_SAVE_SYN) and the segment had none. A valid option
//     from a trusted source goes into socket storage: client, and edge
//     (the segment's source). Storage is created for those sockets only,
//     and dropped when the socket closes.
//   - cgroup/getpeername4 and getpeername6 programs answer getpeername()
//     and accept() with the client: an IPv4 client on an IPv4 socket,
//     IPv4-mapped on an IPv6 ([::]) socket, an IPv6 client on an IPv6
//     socket. An IPv6 client on an IPv4 socket cannot be returned (the
//     hook cannot change the address family): the edge's address stays and
//     the call is counted as getname_toa_mismatch. toa.ko returns it when
//     the caller's buffer has room for a sockaddr_in6, so NAT64 origins
//     (IPv6 clients, IPv4 servers) want the module.
//
// The option is `kind(1) len(1) port(2) addr(4|16)`: length 8 for IPv4,
// 20 for IPv6, any of the configured kinds (default 200, 253, 254). An
// option is bad, and counted so, when its length fits no address, the
// option list is cut, its port is 0, or its address is unspecified,
// multicast or the IPv4 broadcast address (IPv4-mapped ones judged as
// IPv4). An option from a source outside the trusted prefixes is ignored
// and counted; no prefixes means every source is trusted.
//
// # Pinning
//
// Programs, their cgroup links and maps are pinned in a folder of bpffs
// (DefaultPinDir), so they outlive the process that attached them, like a
// loaded module outlives insmod. Open adopts what is pinned: it reuses the
// pinned maps (live entries and counters survive an upgrade) and puts the
// new programs in place of the old ones through their links, without a
// moment of detachment. Unpin (realip-agent unload) removes the pins, which
// detaches the programs; sockets keep working and from then on show the
// edge.
//
// # Counters
//
// The counters have toa.ko's names and order (/proc/net/toa_stats), one
// value per possible CPU, so dashboards and alerts do not care which
// receiver runs. Rows that have no meaning without the module
// (getname_toa_bypass, probe_missed, listeners_taken_over) stay 0;
// ip6_address_alloc counts entries made, _free the sockets with one that
// closed (the kernel frees the entry with the socket, so accept() of a
// connection reset before it still shows the client, as with toa.ko).
// getname_toa_empty counts getpeername() and accept() on every TCP socket
// of the cgroup without an entry (outgoing connections too), while toa.ko
// counts them on the sockets of its listeners only: compare its rate
// between hosts of the same receiver.
//
// # Lookups
//
// Lookup returns the entry of one socket (by its file descriptor), which
// is how realip's listener library reports both client and edge. The
// receiver cannot list all live entries (socket storage is keyed by
// socket, not enumerable from user space without BPF iterators).
//
// # Regenerating the eBPF object
//
// The compiled object (recv_bpfel.o, recv_bpfeb.o) and its Go bindings are
// committed, so `go build` needs no C compiler. After changing recv.bpf.c:
//
//	scripts/deps.sh clang llvm libbpf-dev
//	go generate ./toarecv/
package toarecv

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -tags linux -target bpfel,bpfeb -type toa_entry -type toa_config -type toa_prefix recv recv.bpf.c -- -Wall -Werror -idirafter /usr/include/x86_64-linux-gnu -idirafter /usr/include/aarch64-linux-gnu
