package listener

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/realip/realip/wire"
)

// Defaults applied to zero Config fields.
const (
	DefaultHeaderTimeout = 5 * time.Second
	DefaultMaxPending    = 1024
	// DefaultMaxPendingPerSource caps one address's share of MaxPending.
	DefaultMaxPendingPerSource = 64
	DefaultMaxFlows            = 65536
	// DefaultFlowIdle outlasts realip-edge's UDP idle timeout (2 min): a
	// PROXY v2 flow framed FramingFirstDatagram must live at least as long
	// on the origin as on the edge (see FramingFirstDatagram).
	DefaultFlowIdle = 5 * time.Minute
)

// Framing is how the trusted proxies frame PROXY v2 over UDP. It is a
// property of the proxy, so it is configured, never guessed per datagram:
// a guess would let a client put a header in its payload and become
// someone else.
type Framing uint8

const (
	// FramingEveryDatagram: every datagram starts with a PROXY v2 header,
	// as the PROXY protocol specification says (HAProxy, go-mmproxy,
	// realip-edge -udp-ppv2-every-datagram). It is the default because no
	// payload byte can change an address: whatever follows the header is
	// payload, and a datagram without a header is dropped (missing_header).
	FramingEveryDatagram Framing = iota
	// FramingFirstDatagram: only the first datagram of a flow (one source
	// address and port of the proxy) carries the header; the later ones
	// are the client's payload, delivered as it is and never parsed, even
	// when it looks like a header (counted as Stats.HeadersInFlow). This
	// is how Tencent EdgeOne, Cloudflare Spectrum, frp and realip-edge by
	// default send it. Its safety rests on the flow table: the origin
	// must keep a flow at least as long as the edge does (FlowIdle not
	// below the edge's UDP idle timeout, MaxFlows not below the edge's
	// flow count), or a flow that expired or was evicted here while the
	// edge still forwards it would be judged anew by its next datagram.
	// Flows are refreshed by datagrams both ways. It also trusts the path
	// from the edge not to reorder a flow's first two datagrams. The
	// converse holds too: an edge that gives a source port to a new
	// client while the origin still keeps the old client's flow on it has
	// the new client's header taken as payload in the old client's name
	// (counted as Stats.HeadersInFlow), so the edge must not reuse a port
	// within the origin's FlowIdle.
	FramingFirstDatagram
)

// String returns "every-datagram" or "first-datagram".
func (f Framing) String() string {
	switch f {
	case FramingEveryDatagram:
		return "every-datagram"
	case FramingFirstDatagram:
		return "first-datagram"
	}
	return fmt.Sprintf("Framing(%d)", uint8(f))
}

// ParseFraming parses "every-datagram" ("every") or "first-datagram"
// ("first").
func ParseFraming(s string) (Framing, error) {
	switch s {
	case "every-datagram", "every":
		return FramingEveryDatagram, nil
	case "first-datagram", "first":
		return FramingFirstDatagram, nil
	}
	return 0, fmt.Errorf("listener: unknown UDP framing %q (want every-datagram or first-datagram)", s)
}

// UntrustedAction is what happens when a peer outside Config.Trusted sends a
// header. The header is never honoured either way.
type UntrustedAction uint8

const (
	// UntrustedDrop closes the connection (drops the datagram) and counts
	// ReasonUntrusted. It is the default: a forged header is an attack or a
	// misconfiguration, and serving it would hide both.
	UntrustedDrop UntrustedAction = iota
	// UntrustedIgnore strips a well-formed header and serves the peer as a
	// direct client with its socket address, counting Stats.IgnoredHeaders.
	UntrustedIgnore
)

// TrustAll trusts every IPv4 and IPv6 peer. Only for servers no one but the
// proxy can reach: with it anyone who connects can claim any address.
func TrustAll() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
}

// Config sets what a listener accepts and from whom. The zero values of the
// numeric fields select the defaults above.
type Config struct {
	// Protocols the trusted peers may use: wire.PPv1 and wire.PPv2 for TCP,
	// wire.SPP and wire.PPv2 for UDP. Empty means every protocol the
	// transport supports.
	Protocols []wire.Proto
	// Trusted lists the proxies allowed to pass client addresses. It must
	// not be empty; use TrustAll to say "everyone" explicitly. IPv4-mapped
	// peers are matched as IPv4.
	Trusted []netip.Prefix
	// Optional lets a trusted peer omit the header; the peer is then the
	// client. By default a header is required. On TCP an optional header is
	// waited for up to HeaderTimeout, so it suits protocols in which the
	// client speaks first.
	Optional bool
	// Untrusted is what happens to a header from an untrusted peer.
	Untrusted UntrustedAction
	// HeaderTimeout bounds how long a TCP peer may take to send its header.
	HeaderTimeout time.Duration
	// MaxPending bounds the TCP connections whose header is being waited
	// for (a header already complete at accept needs no slot), and
	// separately those admitted that wait for Accept. Accepting never waits
	// for a slot: at the bound the oldest handshake is closed to make room
	// (ReasonShed). When Accept does not keep up, the full queue holds
	// accepting back and the kernel's backlog absorbs the burst.
	MaxPending int
	// MaxPendingPerSource bounds the handshakes from one address; beyond
	// it that address's oldest is shed. A trusted prefix is often a whole
	// network, and one host of it must not take every slot. Default
	// DefaultMaxPendingPerSource, at most MaxPending. A proxy sends its
	// header at once, so its own connections rarely need a slot.
	MaxPendingPerSource int
	// NoDeferAccept keeps TCP_DEFER_ACCEPT off. By default a TCP listener
	// of PROXY headers sets it on Linux: the kernel hands over a
	// connection once its first bytes arrived, so the header is read
	// without waiting; a peer that stays silent is handed over a second
	// after its handshake. A proxy always sends its header first. Set
	// NoDeferAccept when the listener also serves direct clients (or, with
	// Optional, trusted peers without a header) of a protocol where the
	// server speaks first, such as SMTP, FTP or MySQL: they would wait that
	// second for the greeting. TOA listeners never set it.
	NoDeferAccept bool
	// Framing is how trusted proxies frame PROXY v2 over UDP; the zero
	// value is FramingEveryDatagram. SPP is always on every datagram.
	Framing Framing
	// MaxFlows bounds the UDP flow table; the least recently used flow is
	// evicted beyond it. Flows are kept for FramingFirstDatagram, and when
	// a socket takes both SPP and PROXY v2 (so that no flow switches
	// protocol).
	MaxFlows int
	// FlowIdle expires a UDP flow with no datagram either way for this
	// long.
	FlowIdle time.Duration
	// TOAPinDir is the bpffs folder where realip's eBPF TOA receiver
	// (package toarecv, attached by realip-agent with `receiver: ebpf`) is
	// pinned; empty: toarecv.DefaultPinDir, /sys/fs/bpf/realip/toa. A TOA
	// listener (Protocols wire.TOA) asks realip's toa.ko when the module
	// answers on netlink, else the receiver pinned here; the eBPF receiver
	// is Linux only.
	TOAPinDir string
	// Logger receives one line per rejected connection or datagram, at
	// debug level for untrusted peers and warn level otherwise. Nil
	// discards.
	Logger *slog.Logger
}

// policy is a validated Config with defaults filled in.
type policy struct {
	Config
	allowed [wire.NumProtos]bool
}

func newPolicy(cfg Config, supported ...wire.Proto) (*policy, error) {
	p := &policy{Config: cfg}
	if len(cfg.Trusted) == 0 {
		return nil, errors.New("listener: Config.Trusted is empty: list the proxies' prefixes (or listener.TrustAll(), knowing anyone can then forge addresses)")
	}
	for _, pfx := range cfg.Trusted {
		if !pfx.IsValid() {
			return nil, fmt.Errorf("listener: invalid trusted prefix %v", pfx)
		}
	}
	protos := cfg.Protocols
	if len(protos) == 0 {
		protos = supported
	}
	for _, proto := range protos {
		if !contains(supported, proto) {
			return nil, fmt.Errorf("listener: protocol %v is not available here (supported: %v)", proto, supported)
		}
		p.allowed[proto] = true
	}
	if cfg.Framing > FramingFirstDatagram {
		return nil, fmt.Errorf("listener: invalid Config.Framing %v", cfg.Framing)
	}
	p.HeaderTimeout = orDefault(cfg.HeaderTimeout, DefaultHeaderTimeout)
	p.MaxPending = orDefault(cfg.MaxPending, DefaultMaxPending)
	p.MaxPendingPerSource = min(orDefault(cfg.MaxPendingPerSource, DefaultMaxPendingPerSource), p.MaxPending)
	p.MaxFlows = orDefault(cfg.MaxFlows, DefaultMaxFlows)
	p.FlowIdle = orDefault(cfg.FlowIdle, DefaultFlowIdle)
	if p.Logger == nil {
		p.Logger = slog.New(slog.DiscardHandler)
	}
	return p, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

func contains(list []wire.Proto, p wire.Proto) bool {
	for _, x := range list {
		if x == p {
			return true
		}
	}
	return false
}

// trusts reports whether peer may pass client addresses.
func (p *policy) trusts(peer netip.Addr) bool {
	peer = peer.Unmap()
	for _, pfx := range p.Trusted {
		if pfx.Contains(peer) {
			return true
		}
	}
	return false
}

// reasonOf classifies a header error.
func reasonOf(err error) Reason {
	var ne net.Error
	switch {
	case errors.Is(err, wire.ErrChecksum):
		return ReasonChecksum
	case errors.Is(err, wire.ErrTruncated):
		return ReasonTruncated
	case errors.Is(err, wire.ErrMalformed):
		return ReasonMalformed
	case errors.Is(err, wire.ErrNoHeader):
		return ReasonMissing
	case errors.As(err, &ne) && ne.Timeout():
		return ReasonTimeout
	default:
		return ReasonReadError
	}
}

// addrPort converts a socket address to an unmapped AddrPort.
func addrPort(a net.Addr) netip.AddrPort { return wire.SocketAddrPort(a) }
