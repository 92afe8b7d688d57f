//go:build linux

package edge

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/realip/realip/edge/origin"
	"github.com/realip/realip/edge/toasend"
)

// Defaults of Options.
const (
	DefaultDialTimeout = 5 * time.Second
	DefaultIdleTimeout = 10 * time.Minute
	DefaultUDPIdle     = 2 * time.Minute
	DefaultMaxUDPFlows = 10000
	DefaultMaxTCPConns = 50000
	// DefaultMaxUDPFlowsPerIP and DefaultMaxTCPConnsPerIP are a tenth of
	// the server's bounds: one address (a NAT gateway of many users, or
	// one host opening sockets) takes no more than that.
	DefaultMaxUDPFlowsPerIP = 1000
	DefaultMaxTCPConnsPerIP = 5000
)

// Options configure a Server. Zero values select the defaults.
type Options struct {
	// RulesPath and GroupsPath name the rules and origin-groups files;
	// GroupsPath may be empty. Reload reads them again.
	RulesPath, GroupsPath string
	// ListenIP is the address to listen on; invalid means every address of
	// both families.
	ListenIP netip.Addr
	// DialTimeout bounds a TCP connect to an origin.
	DialTimeout time.Duration
	// IdleTimeout closes a TCP connection idle in both directions.
	IdleTimeout time.Duration
	// UDPIdle expires a UDP flow with no datagram either way.
	UDPIdle time.Duration
	// MaxUDPFlows bounds the live UDP flows of the whole server.
	MaxUDPFlows int
	// MaxTCPConns bounds the TCP connections the whole server relays at
	// once; a client beyond it is closed at once and counted (conn_limit).
	// The open-file limit is raised to hold them (two descriptors each),
	// the flows and the ports, instead of failing accept with EMFILE.
	MaxTCPConns int
	// MaxUDPFlowsPerIP bounds the live UDP flows of one client address
	// (all ports, all rules); a new flow beyond it is refused and counted
	// (per_ip_limit). Negative: no bound.
	MaxUDPFlowsPerIP int
	// MaxTCPConnsPerIP bounds the relayed TCP connections of one client
	// address; one beyond it is reset and counted (per_ip_limit).
	// Negative: no bound.
	MaxTCPConnsPerIP int
	// PPv2EveryDatagram sends the PROXY v2 header on every datagram of a UDP
	// flow (the specification) instead of the first only (EdgeOne).
	PPv2EveryDatagram bool
	// GoroutineRelay relays every TCP connection with the goroutine relay
	// (relay.go) and every UDP port with a goroutine per port and per flow
	// (udprelay.go) instead of the epoll loops (Linux; tcploop_linux.go,
	// udploop_linux.go): for comparison, and as a way out should the loops
	// misbehave.
	GoroutineRelay bool
	// TOA configures the TOA sender used by toa rules (kinds, cgroup).
	TOA toasend.Options
	// Origin tunes resolution and health checks.
	Origin origin.Options
	// Registerer receives the metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// Logger receives the log; nil discards. The edge's warnings and
	// errors are rate-limited per message: the first at once, then at most
	// one per 10 s with the number suppressed, and a summary of what a
	// period suppressed ("edge: log lines suppressed"). The origin pools'
	// lines (Origin.Logger, by default this one unlimited) are not.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.UDPIdle <= 0 {
		o.UDPIdle = DefaultUDPIdle
	}
	if o.MaxUDPFlows <= 0 {
		o.MaxUDPFlows = DefaultMaxUDPFlows
	}
	if o.MaxTCPConns <= 0 {
		o.MaxTCPConns = DefaultMaxTCPConns
	}
	if o.MaxUDPFlowsPerIP == 0 {
		o.MaxUDPFlowsPerIP = DefaultMaxUDPFlowsPerIP
	}
	if o.MaxTCPConnsPerIP == 0 {
		o.MaxTCPConnsPerIP = DefaultMaxTCPConnsPerIP
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Origin.Logger == nil {
		o.Origin.Logger = o.Logger
	}
	return o
}
