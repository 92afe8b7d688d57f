//go:build linux

// Package toasend is realip-edge's TOA sender: it puts the client's address
// into a TCP option of the connections the edge opens to an origin, where
// realip's kernel module (kmod/, toa.ko) or any other TOA receiver reads it.
//
// The option is `kind(1) len(1) port(2) addr(4|16)`, big-endian: kind 200
// and length 8 for an IPv4 client, kind 253 and length 20 for an IPv6 client
// (both kinds configurable). It is carried on the SYN (retransmissions
// included) and on the ACK that completes the handshake, and on no later
// segment.
//
// # How it works
//
// Open loads an eBPF sockops program (toa.bpf.c) and attaches it to a
// cgroup v2, by default the one this process runs in. The program keeps a
// socket-local storage map: Sender.Control, used as a net.Dialer's Control
// function, stores the client address for the socket it is given before
// connect(). When that socket connects, the program asks the kernel for the
// TCP header option callbacks, reserves room for the option and writes it
// on the SYN and on the first segment after it (the handshake ACK), then
// switches the callbacks off again. A socket without stored address, and
// every other socket in the cgroup, is left untouched, so the cgroup may
// hold other programs and services; they pay one socket storage lookup per
// connect() (in the root cgroup, as with an edge started outside any
// service manager, that is every connect() on the machine). Give the edge
// its own cgroup (a systemd service has one) to keep the program off
// everything else.
//
//	s, err := toasend.Open(toasend.Options{})
//	if err != nil { ... }
//	defer s.Close()
//	d := net.Dialer{Control: s.Control(clientAddrPort)}
//	conn, err := d.Dial("tcp", "198.51.100.10:8080")
//	_, ack, err := s.Carried(conn.(*net.TCPConn)) // did the option go out?
//
// Sender.Carried tells, once Dial has returned, whether the SYN and the
// handshake ACK carried the option: false for a socket created by a process
// outside the attached cgroup, which the program never sees. Sender.Stats
// counts sockets armed, options written, and segments without room.
//
// A socket's stored address lives as long as the socket (the kernel frees
// it with the socket) or until the Sender is closed. Connections keep
// working after Close; only new handshakes go without the option.
//
// # Requirements
//
// Linux 5.10 or newer (BPF TCP header options, socket storage reached from
// sockops through skops->sk), cgroup v2 mounted (a hybrid setup with
// /sys/fs/cgroup/unified is fine), and the right to load and attach eBPF
// programs: root, or CAP_BPF and CAP_NET_ADMIN (on kernels before 5.11 a
// large enough RLIMIT_MEMLOCK too, which Open raises when it may). Available
// checks all of this cheaply, so the edge can refuse toa rules at start with
// a clear message. No kernel module and no kernel BTF are needed.
//
// # Option space
//
// A SYN has 20 bytes of option space left after MSS, window scale,
// timestamps and SACK-permitted: just enough for the IPv6 option, so an
// IPv6 client's SYN leaves with all 40 bytes used. With TCP-MD5 (20 bytes,
// timestamps off) 8 bytes are left: the IPv4 option still fits, the IPv6
// one goes on the handshake ACK only and the SYN is counted in
// Stats.NoSpace. Fast Open cookies take option space too. The option does
// not change the MSS advertised in the SYN; while the handshake ACK is due
// the sender's own segment size allows for it, so a first data segment
// that carries the ACK stays within the path MTU.
//
// The handshake ACK is normally a pure ACK: Go's non-blocking connect
// returns after the kernel sent it, so the first data follows in its own
// segment. The receiver reads the option from whichever segment completes
// its handshake, and that can be this data segment: when the ACK and the
// data reach the origin on different CPUs (veth and loopback hand each
// segment to the sending CPU's backlog) or out of order on the path, the
// data may arrive first. So the option also goes on the first segment with
// payload; pure ACKs in between (a server that talks first) and everything
// after carry nothing. When a write is already waiting on a blocking
// connect() (not something net.Dialer does), Linux sends the ACK with the
// first data and that one segment carries it. A first write larger than
// one segment leaves as one GSO packet, and every segment cut from it
// carries the option. With SYN cookies on the origin, the segment that
// completes the handshake is the only source.
//
// # Regenerating the eBPF object
//
// The compiled object (toa_bpfel.o, toa_bpfeb.o) and its Go bindings
// (toa_bpfel.go, toa_bpfeb.go) are committed, so `go build` needs no C
// compiler. After changing toa.bpf.c, regenerate them with clang, llvm-strip
// and libbpf's headers:
//
//	scripts/deps.sh clang llvm libbpf-dev
//	go generate ./edge/toasend/
//
// bpf2go builds the program for both byte orders: bpfel serves amd64, arm64
// and the other little-endian architectures, bpfeb the big-endian ones.
// The -idirafter flags let clang find <asm/types.h> in Debian's multiarch
// include folders on amd64 and arm64 hosts.
package toasend

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -tags linux -target bpfel,bpfeb toa toa.bpf.c -- -Wall -Werror -idirafter /usr/include/x86_64-linux-gnu -idirafter /usr/include/aarch64-linux-gnu
