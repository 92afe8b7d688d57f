// Package listener makes the real client visible to a Go server that sits
// behind an L4 proxy (Tencent EdgeOne's L4 proxy, HAProxy, realip-edge, ...).
//
// Wrap a net.Listener with [New] (or use [Listen]) and every connection that
// Accept returns already carries the client address the proxy passed in a
// PROXY protocol v1 or v2 header: RemoteAddr() is the client, and the [Conn]
// also tells the proxy's address, the protocol and the v2 TLVs. Wrap a
// net.PacketConn with [NewPacketConn] (or use [ListenPacket]) for UDP: SPP
// (a 38-byte header on every datagram, echoed on every reply) and PROXY v2
// (on every datagram, or only on the first datagram of a flow, as
// [Config.Framing] says) are handled, and replies written to a client go
// back through its proxy.
//
// # UDP framing
//
// Whether a datagram starts with a header is never guessed: a guess lets a
// client behind the proxy put a header at the start of its own payload and
// claim any address. The default, [FramingEveryDatagram], wants a header on
// every datagram and parses nothing behind it. With [FramingFirstDatagram]
// the first datagram of a proxy port opens a flow and the rest are payload,
// never parsed. SPP is always on every datagram, and on a socket that takes
// both a flow keeps the protocol that opened it.
//
// # Trust
//
// Anyone who can reach the server can write a header, so addresses are only
// honoured from the prefixes in [Config.Trusted]; a header from any other
// peer is never honoured ([Config.Untrusted] picks whether such a connection
// or datagram is dropped or served as a direct client). [Config.Optional]
// lets trusted peers omit the header (health checks, say); by default they
// must send one, and the PROXY protocol specification forbids guessing.
//
// # TOA
//
// With Protocols wire.TOA (alone: the kernel reads the TCP option before
// any byte reaches the listener) a TOA receiver rewrites what accept()
// returns, and the listener asks it for each connection's entry, to report
// the edge as Proxy and to apply Config.Trusted to it. New picks the
// receiver: realip's toa.ko when it answers on netlink (looked up by local
// address and client), else realip's eBPF receiver pinned in
// Config.TOAPinDir (looked up by the accepted socket; Linux). With neither
// it fails, naming both. The eBPF receiver serves the sockets of the
// cgroup it is attached to (by default every process) and its getpeername
// hook cannot change the address family: an IPv6 client on an IPv4 socket
// comes out of accept() as the edge, and the listener still reports the
// client from the entry. A connection without an entry (no option, or one
// the receiver did not trust) from a trusted peer is rejected unless
// Config.Optional is set, as a missing header is.
//
// # Behaviour under bad input
//
// Accept only returns connections whose header has been read and validated,
// so RemoteAddr never blocks. On a TCP socket Accept takes connections from
// the kernel in the caller's goroutine and reads a header that is already
// there at once, as a plain listener would (TCP_DEFER_ACCEPT, set unless
// [Config.NoDeferAccept], makes that the rule); a header still on its way
// is read in a goroutine of its own, within [Config.HeaderTimeout], so a
// slow or silent peer stalls nobody else. A
// malformed, truncated, forged or checksum-failing header closes that one
// connection (drops that one datagram) and is counted by reason in [Stats];
// it is never returned from Accept, because an error from Accept stops
// http.Serve. Nothing here panics on input.
//
// # Pass-through
//
// After the header a [Conn] adds no copy: bytes that arrived with the header
// are handed out first, then reads go straight to the socket, and
// io.Copy in either direction still reaches the kernel's splice and
// sendfile paths through ReadFrom and WriteTo.
package listener
