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
// connection or flow. A TCP connection that turns out to be a stream, or
// whose reader falls behind, moves to a pair of goroutines copying between
// *net.TCPConn values, so that Linux splices the bytes (relay.go);
// Options.GoroutineRelay relays everything with goroutines. Half-closes are
// passed on and a connection idle in both directions for IdleTimeout is
// closed. UDP keeps one upstream socket per client address, expired after
// UDPIdle and bounded by MaxUDPFlows (counted when hit).
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
package edge
