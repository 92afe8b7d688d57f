// Package unwrap relays connections and datagrams that arrive from an edge
// wrapped in PROXY protocol or SPP to a local server that cannot parse
// either, from the client's own address: the server's accept(),
// getpeername() and recvfrom() see the client, not the edge.
//
// A Relay serves one Entry: it reads the edge's header, then opens a
// transparent socket (IP_TRANSPARENT / IPV6_TRANSPARENT, with Options.Mark
// as SO_MARK) bound to the client's address and port and connects it to
// Entry.To. TCP connections are relayed by epoll loops, one per CPU, which
// accept, honour a header that arrived whole from a trusted edge, connect
// and copy on raw non-blocking sockets with half-closes passed on; long
// transfers are spliced in goroutines, and every other connection
// (untrusted peers, headers still on their way, errors) goes through
// package listener (trust, timeouts, counters) before it is relayed the
// same way (tcploop.go says more). Each
// UDP client gets a flow: a transparent socket bound to the client that
// carries its payloads to the server and the server's replies back to the
// edge, from the port the edge used, with the SPP header in front for SPP
// flows. Flows are bounded (Entry.MaxFlows) and expire (Entry.Idle).
//
// The server's replies to a client address reach the relay only if the
// host routes them locally; package internal/tproute installs that
// routing. Relays need CAP_NET_ADMIN (transparent binds, SO_MARK).
package unwrap
