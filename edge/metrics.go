//go:build linux

package edge

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/realip/realip/edge/toasend"
)

// metrics holds the server's collectors; ruleMetrics binds them to one rule.
type metrics struct {
	connections *prometheus.CounterVec
	active      *prometheus.GaugeVec
	bytes       *prometheus.CounterVec
	datagrams   *prometheus.CounterVec
	flows       *prometheus.CounterVec
	flowsActive *prometheus.GaugeVec
	errors      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	rule := []string{"rule"}
	m := &metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "realip_edge_tcp_connections_total", Help: "TCP connections accepted from clients.",
		}, rule),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "realip_edge_tcp_connections_active", Help: "TCP connections being relayed.",
		}, rule),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "realip_edge_bytes_total", Help: "Payload bytes relayed, by direction (to_origin, to_client).",
		}, []string{"rule", "proto", "direction"}),
		datagrams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "realip_edge_udp_datagrams_total", Help: "UDP datagrams relayed, by direction (to_origin, to_client).",
		}, []string{"rule", "direction"}),
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "realip_edge_udp_flows_total", Help: "UDP flows opened.",
		}, rule),
		flowsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "realip_edge_udp_flows_active", Help: "UDP flows live.",
		}, rule),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "realip_edge_errors_total",
			Help: "Failures by reason: no_origin, dial, upstream_port_clash, header_write, toa_not_sent, flow_limit, flow_evicted, conn_limit, per_ip_limit, local_resource, datagram_too_big, spp_reply_without_header, reply_short, upstream_write.",
		}, []string{"rule", "reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.connections, m.active, m.bytes, m.datagrams, m.flows, m.flowsActive, m.errors)
	}
	return m
}

// ruleMetrics are the collectors of one rule, resolved once; only those
// of the rule's protocol are set.
type ruleMetrics struct {
	m           *metrics
	label       string
	connections prometheus.Counter
	active      prometheus.Gauge
	toOrigin    prometheus.Counter
	toClient    prometheus.Counter
	dgToOrigin  prometheus.Counter
	dgToClient  prometheus.Counter
	flows       prometheus.Counter
	flowsActive prometheus.Gauge
}

func (m *metrics) forRule(label, proto string) *ruleMetrics {
	r := &ruleMetrics{
		m:        m,
		label:    label,
		toOrigin: m.bytes.WithLabelValues(label, proto, "to_origin"),
		toClient: m.bytes.WithLabelValues(label, proto, "to_client"),
	}
	if proto == "tcp" {
		r.connections = m.connections.WithLabelValues(label)
		r.active = m.active.WithLabelValues(label)
	} else {
		r.dgToOrigin = m.datagrams.WithLabelValues(label, "to_origin")
		r.dgToClient = m.datagrams.WithLabelValues(label, "to_client")
		r.flows = m.flows.WithLabelValues(label)
		r.flowsActive = m.flowsActive.WithLabelValues(label)
	}
	return r
}

func (r *ruleMetrics) fail(reason string) { r.m.errors.WithLabelValues(r.label, reason).Inc() }

// forget removes a rule's series once the rule is gone.
func (r *ruleMetrics) forget() {
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		r.m.connections, r.m.active, r.m.bytes, r.m.datagrams, r.m.flows, r.m.flowsActive, r.m.errors,
	} {
		v.DeletePartialMatch(prometheus.Labels{"rule": r.label})
	}
}

// originCollector reports the health of every origin address of every rule
// at scrape time, straight from the pools.
type originCollector struct {
	s    *Server
	desc *prometheus.Desc
}

func newOriginCollector(s *Server) *originCollector {
	return &originCollector{s: s, desc: prometheus.NewDesc("realip_edge_origin_up",
		"1 when the origin address is healthy (active checks and passive marks), 0 when down.",
		[]string{"rule", "host", "addr"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *originCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *originCollector) Collect(ch chan<- prometheus.Metric) {
	c.s.mu.Lock()
	states := make([]*ruleState, 0, len(c.s.rules))
	for _, rs := range c.s.rules {
		states = append(states, rs)
	}
	c.s.mu.Unlock()
	for _, rs := range states {
		for _, st := range rs.pool.Status() {
			if !st.Addr.IsValid() {
				continue
			}
			up := 0.0
			if st.Healthy {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, up, rs.metrics.label, st.Host, st.Addr.String())
		}
	}
}

// TOAStats returns the counters of the edge's TOA sender (the eBPF
// program that writes the option, edge/toasend), for the metrics
// endpoint. attached is false, with zero counters, while no rule has
// needed the sender: it is attached with the first toa rule and stays
// until Shutdown, after which reading fails with toasend.ErrClosed.
func (s *Server) TOAStats() (st toasend.Stats, attached bool, err error) {
	s.mu.Lock()
	sender := s.toa
	s.mu.Unlock()
	if sender == nil {
		return toasend.Stats{}, false, nil
	}
	st, err = sender.Stats()
	return st, true, err
}
