//go:build linux

// Package edge is realip-edge's forwarder: it listens on the forwarding
// ports of a rules file (package edge/rules, the EdgeOne batch-import
// format) and relays each TCP connection and UDP flow to an origin, passing
// the client address the way the rule says: a PROXY protocol v1/v2 header
// before the first payload byte (TCP), a PROXY v2 header on the first (or
// every) datagram of a flow, or an SPP header on every datagram, stripped
// again from every reply (UDP).
//
// Both are relayed by epoll loops, one per CPU, on raw non-blocking
// sockets (tcploop_linux.go, udploop_linux.go): no goroutine per
// connection or flow. The loops' core (the epoll set, commands from other
// goroutines, the sweep clock) is package internal/evloop;
// loops_linux.go ties it to the two engines. A TCP connection that turns
// out to be a stream, or whose reader falls behind, moves to a pair of
// goroutines copying between *net.TCPConn values, so that Linux splices
// the bytes (relay.go); Options.GoroutineRelay relays everything with
// goroutines (tcp.go, relay.go, udprelay.go). Half-closes are passed on
// and a connection idle in both directions for IdleTimeout is closed. UDP
// keeps one upstream socket per client address, expired after UDPIdle and
// bounded by MaxUDPFlows (counted when hit); what the two UDP engines
// share is in udp.go.
//
// What a rule's IP passing mode means for the relays (the header before a
// TCP connection's first byte, the header before UDP datagrams and on
// which of them, a header to strip from replies, a connect through the TOA
// sender) is decided once per rule, when the rule is applied, as a
// passing value (passing.go) that every engine asks.
//
// The package is Linux only (build constraint linux): epoll, raw sockets
// and Linux socket options are what it is made of.
//
// Origins come from package edge/origin: domain names are re-resolved,
// groups are health-checked and fail over, and PERSIST on keeps a client on
// the same origin with rendezvous hashing.
//
// Reload swaps the rules atomically: a bad file changes nothing; ports whose
// rule did not change keep their listener, their established TCP
// connections and their UDP flows; removed ports stop listening but let
// their established connections finish. Shutdown stops listening and drains.
//
// TOA rules send the client address in a TCP option through package
// edge/toasend (eBPF); where that cannot work, a rules file with one is
// refused at start with a clear error, never downgraded.
//
// # Adding an IP passing mode
//
// A mode that puts a header in front of a TCP stream or of UDP datagrams
// takes these files, and no others, on the edge's side:
//
//   - wire/proto.go: the wire.Proto constant and its name, which is also
//     the rules-file keyword.
//   - wire/NAME.go (new, with its test): the header's encoder (and the
//     parser the receiving side uses).
//   - edge/rules/types.go: the mode's line in ipModes (tcp, udp: which
//     protocols it is available for); parsing, export and the error
//     messages follow from it.
//   - edge/rules/doc.go: the keyword in the description of IPMODE.
//   - edge/passing.go: what the mode means to the relays, a case in
//     passingFor, and, for a header of a new kind, its encoding in
//     tcpHeader (TCP) or flowHeader (UDP); its row in TestPassingFor
//     (edge/edge_test.go).
//
// Both relay engines of each protocol and the origin health checks then
// carry it. Only a mode that changes more than the header's bytes needs
// an engine: replies with a header of a new kind to strip
// (udpFlow.replyPayload, udp.go), or a connect the kernel must help with,
// as TOA's (tcp.go). The receiving side (package listener) is apart.
package edge
