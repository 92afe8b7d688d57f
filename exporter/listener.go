package exporter

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// ListenerCollector exposes the counters of one realip listener
// (listener.Listener or listener.PacketConn) under a "listener" label.
type ListenerCollector struct {
	stats func() listener.Stats

	accepted, rejected, untrusted, ignored, headersInFlow  *prometheus.Desc
	pending, parked, flowsLive, flowsEvicted, flowsExpired *prometheus.Desc
}

// NewListenerCollector returns a collector for the counters that stats
// returns, labelled listener=name; pass the listener's Stats method:
//
//	prometheus.MustRegister(exporter.NewListenerCollector("web", ln.Stats))
//
// Several listeners can be registered with different names. Every protocol
// and reason is exported from the start, with 0 until something happens.
func NewListenerCollector(name string, stats func() listener.Stats) *ListenerCollector {
	l := prometheus.Labels{"listener": name}
	return &ListenerCollector{
		stats: stats,
		accepted: prometheus.NewDesc("realip_listener_accepted_total",
			"Connections handed out by Accept (TCP) or datagrams delivered (UDP), by the protocol that carried the client address (none: the socket's own peer).",
			[]string{"proto"}, l),
		rejected: prometheus.NewDesc("realip_listener_rejected_total",
			"Connections closed or datagrams dropped, by reason.",
			[]string{"reason"}, l),
		untrusted: prometheus.NewDesc("realip_listener_untrusted_total",
			"Connections or datagrams from peers outside the trusted prefixes, whatever became of them.",
			nil, l),
		ignored: prometheus.NewDesc("realip_listener_ignored_headers_total",
			"Headers from untrusted peers that were stripped and not honoured.",
			nil, l),
		headersInFlow: prometheus.NewDesc("realip_listener_udp_headers_in_flow_total",
			"Datagrams of a first-datagram PROXY v2 flow whose payload looks like a header: delivered as payload, never parsed (a client trying to forge its address, or an edge framing every datagram).",
			nil, l),
		pending: prometheus.NewDesc("realip_listener_pending_connections",
			"TCP connections whose header is being read.",
			nil, l),
		parked: prometheus.NewDesc("realip_listener_parked_connections",
			"TCP connections whose header is still on its way that wait for a MaxPending slot (parked, no goroutine).",
			nil, l),
		flowsLive: prometheus.NewDesc("realip_listener_udp_flows_active",
			"UDP flows held (PROXY v2 flows, and SPP flows on sockets of both).",
			nil, l),
		flowsEvicted: prometheus.NewDesc("realip_listener_udp_flows_evicted_total",
			"UDP flows pushed out because the flow table was full.",
			nil, l),
		flowsExpired: prometheus.NewDesc("realip_listener_udp_flows_expired_total",
			"UDP flows removed after being idle.",
			nil, l),
	}
}

// Describe implements prometheus.Collector.
func (c *ListenerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.accepted, c.rejected, c.untrusted, c.ignored,
		c.headersInFlow, c.pending, c.parked, c.flowsLive, c.flowsEvicted, c.flowsExpired} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *ListenerCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	for p := range wire.NumProtos {
		ch <- prometheus.MustNewConstMetric(c.accepted, prometheus.CounterValue, float64(s.Accepted[p]), wire.Proto(p).String())
	}
	for r := range listener.NumReasons {
		ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(s.Rejected[r]), listener.Reason(r).String())
	}
	ch <- prometheus.MustNewConstMetric(c.untrusted, prometheus.CounterValue, float64(s.Untrusted))
	ch <- prometheus.MustNewConstMetric(c.ignored, prometheus.CounterValue, float64(s.IgnoredHeaders))
	ch <- prometheus.MustNewConstMetric(c.headersInFlow, prometheus.CounterValue, float64(s.HeadersInFlow))
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(s.Pending))
	ch <- prometheus.MustNewConstMetric(c.parked, prometheus.GaugeValue, float64(s.Parked))
	ch <- prometheus.MustNewConstMetric(c.flowsLive, prometheus.GaugeValue, float64(s.FlowsLive))
	ch <- prometheus.MustNewConstMetric(c.flowsEvicted, prometheus.CounterValue, float64(s.FlowsEvicted))
	ch <- prometheus.MustNewConstMetric(c.flowsExpired, prometheus.CounterValue, float64(s.FlowsExpired))
}

// EdgeTOAStats are the counters of the edge's TOA writer (the sockops
// program of realip-edge that puts the option on the handshake), as plain
// numbers so that this package need not import edge/.
type EdgeTOAStats struct {
	Armed   uint64 // sockets that connected with an address to send
	SYN     uint64 // SYN segments written with the option (retransmissions too)
	ACK     uint64 // handshake ACKs written with the option
	Data    uint64 // first data segments written with the option
	NoSpace uint64 // segments with no room left for the option
	Failed  uint64 // errors writing the option or arming the socket
}

// ErrNoEdgeTOAWriter is what the stats function of NewEdgeTOACollector
// returns (or wraps) while the edge has no TOA writer, because no rule has
// asked for TOA: the collector then exports nothing, rather than a
// writer that looks down.
var ErrNoEdgeTOAWriter = errors.New("exporter: the edge has no TOA writer (no toa rule)")

// EdgeTOACollector exposes EdgeTOAStats.
type EdgeTOACollector struct {
	stats                               func() (EdgeTOAStats, error)
	armed, options, noSpace, failed, up *prometheus.Desc
}

// NewEdgeTOACollector returns a collector calling stats at every scrape.
// While stats fails, realip_edge_toa_writer_up is 0 and the counters are
// left out; while it returns ErrNoEdgeTOAWriter, nothing is exported.
func NewEdgeTOACollector(stats func() (EdgeTOAStats, error)) *EdgeTOACollector {
	return &EdgeTOACollector{
		stats: stats,
		armed: prometheus.NewDesc("realip_edge_toa_sockets_armed_total",
			"Edge sockets that connected with a client address to send as TOA.", nil, nil),
		options: prometheus.NewDesc("realip_edge_toa_options_written_total",
			"TOA options written, by segment (syn, ack, data: the first data segment).", []string{"segment"}, nil),
		noSpace: prometheus.NewDesc("realip_edge_toa_no_space_total",
			"Segments that had no room left for the TOA option.", nil, nil),
		failed: prometheus.NewDesc("realip_edge_toa_errors_total",
			"Errors writing the TOA option or arming a socket.", nil, nil),
		up: prometheus.NewDesc("realip_edge_toa_writer_up",
			"1 when the edge's TOA writer counters could be read, else 0.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *EdgeTOACollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.armed, c.options, c.noSpace, c.failed, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *EdgeTOACollector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.stats()
	if errors.Is(err, ErrNoEdgeTOAWriter) {
		return
	}
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.armed, prometheus.CounterValue, float64(s.Armed))
	ch <- prometheus.MustNewConstMetric(c.options, prometheus.CounterValue, float64(s.SYN), "syn")
	ch <- prometheus.MustNewConstMetric(c.options, prometheus.CounterValue, float64(s.ACK), "ack")
	ch <- prometheus.MustNewConstMetric(c.options, prometheus.CounterValue, float64(s.Data), "data")
	ch <- prometheus.MustNewConstMetric(c.noSpace, prometheus.CounterValue, float64(s.NoSpace))
	ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(s.Failed))
}
