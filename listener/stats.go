package listener

import (
	"sync/atomic"

	"github.com/realip/realip/wire"
)

// Reason is why a connection or datagram was rejected.
type Reason uint8

// The reasons counted in Stats.Rejected.
const (
	// ReasonMalformed: the header is invalid.
	ReasonMalformed Reason = iota
	// ReasonTruncated: the peer closed (or the datagram ended) mid-header.
	ReasonTruncated
	// ReasonChecksum: a PROXY v2 CRC32C TLV did not match.
	ReasonChecksum
	// ReasonMissing: a trusted peer sent no header and the policy requires one.
	ReasonMissing
	// ReasonProtocol: a header of a protocol this listener does not accept.
	ReasonProtocol
	// ReasonTimeout: the header did not arrive within HeaderTimeout.
	ReasonTimeout
	// ReasonReadError: the connection failed while the header was read.
	ReasonReadError
	// ReasonUntrusted: a header from a peer outside Trusted, dropped.
	ReasonUntrusted
	// ReasonNoFlow: a headerless datagram from a trusted proxy matched no
	// PROXY v2 flow and the policy requires a header.
	ReasonNoFlow
	// ReasonFlowSwitch: a datagram of a flow opened by one protocol (SPP
	// or PROXY v2) starts with the other's header.
	ReasonFlowSwitch
	// ReasonShed: a TCP connection whose header was still on its way found
	// no MaxPending slot and no room among the parked ones (4 x
	// MaxPending; the oldest parked is closed), or had sent more than 1 KiB
	// of an incomplete header.
	ReasonShed
	numReasons
)

// NumReasons is the number of Reason values, for arrays indexed by Reason.
const NumReasons = int(numReasons)

var reasonNames = [numReasons]string{
	"malformed", "truncated", "checksum", "missing_header", "protocol_disabled",
	"timeout", "read_error", "untrusted_header", "no_flow",
	"flow_protocol_switch", "pending_shed",
}

// String returns a short snake_case name, usable as a metric label.
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Stats is a snapshot of a listener's counters. Counters only grow; Pending
// and FlowsLive are gauges.
type Stats struct {
	// Accepted counts connections handed out by Accept (TCP) or datagrams
	// delivered by a read (UDP), by the protocol that carried the client
	// address; wire.None counts those served with the socket's own peer.
	Accepted [wire.NumProtos]uint64
	// Rejected counts connections closed or datagrams dropped, by reason.
	Rejected [NumReasons]uint64
	// Untrusted counts connections or datagrams from peers outside Trusted,
	// whatever became of them.
	Untrusted uint64
	// IgnoredHeaders counts headers from untrusted peers that were stripped
	// and not honoured (Config.Untrusted == UntrustedIgnore).
	IgnoredHeaders uint64
	// HeadersInFlow counts datagrams of a FramingFirstDatagram PROXY v2
	// flow whose payload starts like an SPP or PROXY header: delivered as
	// the payload they are, attributed to the flow's client, never parsed.
	// A client trying to forge its address, or an edge that sends a header
	// on every datagram to a socket configured for the first only.
	HeadersInFlow uint64
	// Pending is the number of TCP connections whose header is being read
	// (in a MaxPending slot); Parked those that wait for a slot.
	Pending int64
	Parked  int64
	// FlowsLive is the number of UDP flows held; FlowsEvicted counts
	// flows pushed out by MaxFlows, FlowsExpired those idle for FlowIdle.
	FlowsLive    int64
	FlowsEvicted uint64
	FlowsExpired uint64
}

// TotalAccepted sums Accepted over all protocols.
func (s Stats) TotalAccepted() uint64 {
	var n uint64
	for _, v := range s.Accepted {
		n += v
	}
	return n
}

// TotalRejected sums Rejected over all reasons.
func (s Stats) TotalRejected() uint64 {
	var n uint64
	for _, v := range s.Rejected {
		n += v
	}
	return n
}

// counters is the live, concurrency-safe form of Stats.
type counters struct {
	accepted       [wire.NumProtos]atomic.Uint64
	rejected       [numReasons]atomic.Uint64
	untrusted      atomic.Uint64
	ignoredHeaders atomic.Uint64
	headersInFlow  atomic.Uint64
	pending        atomic.Int64
	parked         atomic.Int64
	flowsLive      atomic.Int64
	flowsEvicted   atomic.Uint64
	flowsExpired   atomic.Uint64
}

func (c *counters) snapshot() Stats {
	var s Stats
	for i := range c.accepted {
		s.Accepted[i] = c.accepted[i].Load()
	}
	for i := range c.rejected {
		s.Rejected[i] = c.rejected[i].Load()
	}
	s.Untrusted = c.untrusted.Load()
	s.IgnoredHeaders = c.ignoredHeaders.Load()
	s.HeadersInFlow = c.headersInFlow.Load()
	s.Pending = c.pending.Load()
	s.Parked = c.parked.Load()
	s.FlowsLive = c.flowsLive.Load()
	s.FlowsEvicted = c.flowsEvicted.Load()
	s.FlowsExpired = c.flowsExpired.Load()
	return s
}
