//go:build linux

package unwrap

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// Defaults of an Entry's limits.
const (
	DefaultMaxConns = 4096
	DefaultMaxFlows = 4096
	DefaultIdle     = 2 * time.Minute
	// DefaultDialTimeout bounds the connect to Entry.To.
	DefaultDialTimeout = 5 * time.Second
)

// Entry is one relay: where the edge connects and where the server is.
type Entry struct {
	// Network is "tcp" or "udp".
	Network string
	// Listen is the address the edge connects (sends) to.
	Listen netip.AddrPort
	// To is the local server's address for IPv4 clients, To6 for IPv6
	// clients; at least one is valid. A client of a family without a
	// target is refused (counted in Stats.NoTarget). They should be
	// loopback addresses the server listens on: see internal/tproute.
	To, To6 netip.AddrPort
	// Accept lists the headers honoured: wire.PPv1 and wire.PPv2 for TCP,
	// wire.SPP and wire.PPv2 for UDP.
	Accept []wire.Proto
	// Framing is how the edge frames PROXY v2 over UDP (every datagram or
	// the first of a flow), fixed per entry exactly as in the listener.
	Framing listener.Framing
	// Trusted are the edges whose headers are honoured.
	Trusted []netip.Prefix
	// Untrusted is what happens to a header from a peer outside Trusted.
	Untrusted listener.UntrustedAction
	// HeaderTimeout bounds the wait for a TCP connection's header.
	HeaderTimeout time.Duration
	// MaxConns bounds live TCP connections; MaxFlows live UDP flows.
	MaxConns, MaxFlows int
	// Idle closes a UDP flow with no datagram either way for this long.
	Idle time.Duration
}

// Options are shared by every relay of an agent.
type Options struct {
	// Mark is set as SO_MARK on every transparent socket (the routing
	// rule installed by internal/tproute matches it); 0 sets none.
	Mark uint32
	// Logger receives one line per rejected connection or failed dial;
	// nil discards them.
	Logger *slog.Logger
}

// Stats are a relay's counters since it started.
type Stats struct {
	// Listener holds the header counters: accepted by protocol, rejected
	// by reason, untrusted.
	Listener listener.Stats
	// NoTarget counts clients refused for want of a target of their
	// address family (To or To6).
	NoTarget uint64
	// Conns counts TCP connections relayed to the server; ConnsLive those
	// open now; ConnsRefused those closed at once because MaxConns were
	// live; DialErrors connects to the server that failed.
	Conns, ConnsLive, ConnsRefused, DialErrors uint64
	// FlowsOpened counts UDP flows created, FlowsLive those open now,
	// FlowsExpired those closed for idleness, FlowsEvicted those refused or
	// closed because MaxFlows was reached.
	FlowsOpened, FlowsLive, FlowsExpired, FlowsEvicted uint64
	// BytesToServer and BytesToClient count payload bytes relayed.
	BytesToServer, BytesToClient uint64
	// Datagrams counts UDP payloads sent to the server; Replies those sent
	// back through the edge.
	Datagrams, Replies uint64
}

// Validate reports the first thing wrong with e, naming the field.
func (e Entry) Validate() error {
	switch e.Network {
	case "tcp", "udp":
	default:
		return fmt.Errorf("network: %q is not tcp or udp", e.Network)
	}
	if !e.Listen.IsValid() {
		return errors.New("listen: missing")
	}
	if !e.To.IsValid() && !e.To6.IsValid() {
		return errors.New("to: missing")
	}
	if e.To.IsValid() && !e.To.Addr().Unmap().Is4() {
		return fmt.Errorf("to: %s is not an IPv4 address", e.To)
	}
	if e.To6.IsValid() && e.To6.Addr().Unmap().Is4() {
		return fmt.Errorf("to6: %s is not an IPv6 address", e.To6)
	}
	if len(e.Accept) == 0 {
		return errors.New("accept: empty")
	}
	for _, p := range e.Accept {
		if !acceptable(e.Network, p) {
			return fmt.Errorf("accept: %s cannot be unwrapped over %s", p, e.Network)
		}
	}
	if e.MaxConns < 0 || e.MaxFlows < 0 || e.Idle < 0 || e.HeaderTimeout < 0 {
		return errors.New("limits: negative")
	}
	return nil
}

// acceptable reports whether headers of p arrive over network.
func acceptable(network string, p wire.Proto) bool {
	if network == "tcp" {
		return p == wire.PPv1 || p == wire.PPv2
	}
	return p == wire.SPP || p == wire.PPv2
}

// withDefaults fills in the zero limits.
func (e Entry) withDefaults() Entry {
	if e.MaxConns == 0 {
		e.MaxConns = DefaultMaxConns
	}
	if e.MaxFlows == 0 {
		e.MaxFlows = DefaultMaxFlows
	}
	if e.Idle == 0 {
		e.Idle = DefaultIdle
	}
	if e.HeaderTimeout == 0 {
		e.HeaderTimeout = listener.DefaultHeaderTimeout
	}
	return e
}
