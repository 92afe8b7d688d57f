package exporter

import (
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
