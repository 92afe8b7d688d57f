//go:build linux

package edge

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/realip/realip/edge/toasend"
)

// toaCollector reports the counters of the edge's TOA sender (the eBPF
// program that writes the option, edge/toasend) at scrape time: no series
// while no toa rule has attached the sender, realip_edge_toa_writer_up 0
// alone while its counters cannot be read, every counter otherwise.
type toaCollector struct {
	stats                               func() (toasend.Stats, bool, error)
	armed, options, noSpace, failed, up *prometheus.Desc
}

func newTOACollector(stats func() (st toasend.Stats, attached bool, err error)) *toaCollector {
	return &toaCollector{
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
func (c *toaCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.armed, c.options, c.noSpace, c.failed, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *toaCollector) Collect(ch chan<- prometheus.Metric) {
	s, attached, err := c.stats()
	if !attached {
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
