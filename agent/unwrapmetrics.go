//go:build linux

package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// unwrapCollector exports the unwrap relays' counters at scrape time,
// labelled by entry name.
type unwrapCollector struct {
	set *unwrapSet

	headers, rejected, untrusted, relayed, live, refused *prometheus.Desc
	dialErrors, noTarget, flowsClosed, bytes, datagrams  *prometheus.Desc
	routingUp                                            *prometheus.Desc
}

func newUnwrapCollector(set *unwrapSet) *unwrapCollector {
	entry := []string{"entry", "network"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("realip_unwrap_"+name, help, append(entry[:2:2], labels...), nil)
	}
	return &unwrapCollector{
		set:         set,
		headers:     d("headers_total", "Connections (tcp) or datagrams (udp) the unwrap relay accepted, by the protocol that carried the client address (none: an untrusted peer served as itself).", "protocol"),
		rejected:    d("rejected_total", "Connections closed or datagrams dropped by the unwrap relay's header policy, by reason.", "reason"),
		untrusted:   d("untrusted_total", "Connections or datagrams from peers outside the entry's trusted prefixes, whatever became of them."),
		relayed:     d("relayed_total", "Connections (tcp) or flows (udp) the unwrap relay opened to the server from the client's address."),
		live:        d("live", "Connections (tcp) or flows (udp) open now."),
		refused:     d("refused_total", "Connections closed at once because max_conns were open (tcp)."),
		dialErrors:  d("dial_errors_total", "Connections to the server (or flow sockets) that could not be opened."),
		noTarget:    d("no_target_total", "Clients refused because the entry has no server address (to) of their address family."),
		flowsClosed: d("flows_closed_total", "UDP flows closed, by cause: expired (idle_timeout) or evicted (max_flows reached, the least active one).", "cause"),
		bytes:       d("bytes_total", "Payload bytes relayed, by direction (to_server, to_client).", "direction"),
		datagrams:   d("datagrams_total", "UDP payloads relayed, by direction (to_server, to_client).", "direction"),
		routingUp: prometheus.NewDesc("realip_unwrap_routing_up",
			"1 when the policy routing the unwrap relays need (rules and local route table) is in place, 0 when part of it is missing; absent with no relay.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *unwrapCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.headers, c.rejected, c.untrusted, c.relayed, c.live, c.refused,
		c.dialErrors, c.noTarget, c.flowsClosed, c.bytes, c.datagrams, c.routingUp} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *unwrapCollector) Collect(ch chan<- prometheus.Metric) {
	relays, routeErr := c.set.snapshot()
	if len(relays) == 0 {
		return
	}
	up := 1.0
	if routeErr != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(c.routingUp, prometheus.GaugeValue, up)
	for _, r := range relays {
		c.collectRelay(ch, r)
	}
}

func (c *unwrapCollector) collectRelay(ch chan<- prometheus.Metric, r relayStats) {
	l := []string{r.Name, r.Entry.Network}
	counter := func(d *prometheus.Desc, v uint64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append(l[:2:2], extra...)...)
	}
	st := r.Stats
	counter(c.headers, st.Listener.Accepted[wire.None], wire.None.String())
	for _, p := range r.Entry.Accept {
		counter(c.headers, st.Listener.Accepted[p], p.String())
	}
	for i := range listener.NumReasons {
		counter(c.rejected, st.Listener.Rejected[i], listener.Reason(i).String())
	}
	counter(c.untrusted, st.Listener.Untrusted)
	counter(c.dialErrors, st.DialErrors)
	counter(c.noTarget, st.NoTarget)
	counter(c.bytes, st.BytesToServer, "to_server")
	counter(c.bytes, st.BytesToClient, "to_client")
	live := st.ConnsLive
	if r.Entry.Network == "tcp" {
		counter(c.relayed, st.Conns)
		counter(c.refused, st.ConnsRefused)
	} else {
		live = st.FlowsLive
		counter(c.relayed, st.FlowsOpened)
		counter(c.flowsClosed, st.FlowsExpired, "expired")
		counter(c.flowsClosed, st.FlowsEvicted, "evicted")
		counter(c.datagrams, st.Datagrams, "to_server")
		counter(c.datagrams, st.Replies, "to_client")
	}
	ch <- prometheus.MustNewConstMetric(c.live, prometheus.GaugeValue, float64(live), l...)
}
