// Package edge is realip-edge's forwarder: it listens on the forwarding
// ports of a rules file (package edge/rules, the EdgeOne batch-import
// format) and relays each TCP connection and UDP flow to an origin, passing
// the client address the way the rule says: a PROXY protocol v1/v2 header
// before the first payload byte (TCP), a PROXY v2 header on the first (or
// every) datagram of a flow, or an SPP header on every datagram, stripped
// again from every reply (UDP).
//
// TCP is relayed with io.Copy between *net.TCPConn values, so Linux splices
// the bytes without copying them through user space; half-closes are passed
// on and a connection idle in both directions for IdleTimeout is closed.
// UDP keeps one upstream socket per client address, expired after UDPIdle
// and bounded by MaxUDPFlows (counted when hit).
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
// TOA rules need the TOA sender, which this build does not have: a rules
// file with one is refused at start with a clear error, never downgraded.
package edge
