//go:build linux

// Package toacraft puts exact TCP option bytes on the wire, for tests of
// TOA receivers (toa.ko, the eBPF receiver) with options no well-behaved
// sender writes: clients no peer can have, lengths that fit no address,
// unknown kinds, a length-20 option holding an IPv4-mapped address.
//
// It is a small sockops program, assembled in Go (no compiler, no
// generated files): a socket is crafted when user space stored bytes for
// its cookie (SO_COOKIE, bpf_get_socket_cookie) before connect(). On
// TCP_CONNECT_CB the program asks for the header option callbacks; from
// then on every segment of the connection (SYN, handshake ACK, data)
// reserves room for the option and carries it, so a receiver finds it on
// whichever segment completes the handshake. Every other socket finds no
// entry and is left alone. Entries live in an LRU map of 4096: a socket
// that Written never asked about is forgotten once 4096 younger ones came.
//
//	c, err := toacraft.Open(cgroupPath)
//	opt, _ := toacraft.Option(200, 8, netip.MustParseAddrPort("0.0.0.0:0"))
//	d := net.Dialer{Control: c.Control(opt)}
//
// The kernel's helpers write whole options only: a list cut short cannot be
// crafted this way, and kinds 253 and 254 need 4 bytes at least.
package toacraft
