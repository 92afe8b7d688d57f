// Package exporter exposes realip's counters to Prometheus.
//
// # TOA module counters
//
// NewTOACollector reads /proc/net/toa_stats, the file every TOA module
// (realip's toa.ko and the vendors' older ones) writes: a header line of
// CPUn columns, then one row per counter, "name<TAB>n<TAB>n...", one
// column per online CPU. The procfs root is configurable, so tests and
// containers can point it at another tree.
//
// github.com/prometheus/procfs opens and checks that root (procfs.NewFS,
// the same rule node_exporter applies to --path.procfs), but it has no
// parser for toa_stats and exports no reader for arbitrary files under
// its root (its path helper and file reader are internal packages), so
// this package reads <root>/net/toa_stats itself and parses it with
// ParseTOAStats.
//
// Every row becomes its own counter, realip_toa_<row>_total, summed over
// the CPUs. One metric per row, rather than one metric with a "counter"
// label, follows the Prometheus naming guidance: the rows count different
// things (handshakes, getpeername calls, allocations), so a sum or an
// average over such a label would mean nothing. Rows this package does
// not know (newer modules add them) are exported the same way. With
// TOAOptions.PerCPU the same names carry a "cpu" label instead of being
// summed; sum without(cpu) (...) gives the totals back.
//
// Besides the rows:
//
//	realip_toa_module_loaded          gauge: 1 when the file exists (a TOA module is loaded)
//	realip_toa_ip6_addresses_in_use   gauge: ip6_address_alloc - ip6_address_free, the entries held
//	realip_toa_scrape_errors_total    counter: reads or parses of the file that failed
//	realip_toa_scrape_error           gauge: 1 when the last read or parse failed
//
// A receiver without a procfs file, realip-agent's eBPF TOA receiver, is
// read through TOAOptions.Source instead: a function that returns its
// counters in the file's shape (TOAStats, a value per CPU). The metrics
// are the same, names and labels, so dashboards and alerts do not care
// which receiver runs; realip_toa_module_loaded is 1 while that receiver
// is in place (Source returns counters, not nil).
//
// A malformed or unreadable file is a scrape error: the row metrics are
// left out of that scrape and the error metrics say so; nothing panics and
// the other metrics are still served. The sums cover the CPUs online when
// the file is read: a CPU taken offline takes its column with it, which
// Prometheus' rate() sees as a counter reset.
//
// # Listener counters
//
// NewListenerCollector exposes a listener.Listener's or
// listener.PacketConn's Stats (realip_listener_*) with one call:
//
//	prometheus.MustRegister(exporter.NewListenerCollector("web", ln.Stats))
//
// The edge registers its own collectors (package edge, realip_edge_*);
// commands serve a registry with Listen.
package exporter
