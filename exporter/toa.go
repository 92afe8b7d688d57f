package exporter

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/procfs"
	"google.golang.org/protobuf/proto"
)

// Metric names of the TOA collector besides the rows.
const (
	MetricTOAModuleLoaded = "realip_toa_module_loaded"
	MetricTOAIP6InUse     = "realip_toa_ip6_addresses_in_use"
	MetricTOAScrapeErrors = "realip_toa_scrape_errors_total"
	MetricTOAScrapeError  = "realip_toa_scrape_error"
)

// TOARowMetricName is the metric name of a toa_stats row:
// realip_toa_<row>_total.
func TOARowMetricName(row string) string {
	return "realip_toa_" + strings.TrimSuffix(row, "_total") + "_total"
}

// TOAOptions configure NewTOACollector.
type TOAOptions struct {
	// ProcRoot is the procfs mount point; empty means /proc. The file read
	// is ProcRoot/net/toa_stats.
	ProcRoot string
	// PerCPU exports one series per CPU (label "cpu") instead of sums.
	PerCPU bool
	// Logger receives scrape errors (at most one line per distinct error
	// in a row); nil discards them.
	Logger *slog.Logger
	// Source, when set, is read instead of ProcRoot/net/toa_stats: the
	// counters of a TOA receiver that has no procfs file (realip-agent's
	// eBPF receiver) in the file's shape, or (nil, nil) when that receiver
	// is not in place. The metrics are the file's: same names, same
	// labels.
	Source func() (*TOAStats, error)
	// SourceName names Source in help texts and errors, as a noun phrase
	// ("the eBPF TOA receiver"); empty: "the TOA receiver".
	SourceName string
}

// TOACollector is a prometheus.Collector for /proc/net/toa_stats. It is
// an unchecked collector (Describe sends nothing) because the rows, and so
// the metric names, are known only once the file is read.
type TOACollector struct {
	path   string // the file, or the source's name
	source func() (*TOAStats, error)
	perCPU bool
	log    *slog.Logger

	loaded, inUse, scrapeError, scrapeErrors *prometheus.Desc
	errors                                   atomic.Uint64

	mu        sync.Mutex
	buf       []byte
	descs     map[string]*prometheus.Desc
	cpuLabels map[int][]*dto.LabelPair
	orderOf   []int       // the CPUs order was computed for
	order     []cpuColumn // their columns in the registry's series order
	lastErr   string
}

// NewTOACollector checks the procfs root with procfs.NewFS and returns a
// collector reading its net/toa_stats at every scrape. The file need not
// exist yet: a module loaded later is picked up by the next scrape. With
// opts.Source set it reads that instead, and ProcRoot is not used.
func NewTOACollector(opts TOAOptions) (*TOACollector, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &TOACollector{
		source:    opts.Source,
		perCPU:    opts.PerCPU,
		log:       log,
		descs:     make(map[string]*prometheus.Desc),
		cpuLabels: make(map[int][]*dto.LabelPair),
	}
	if opts.Source != nil {
		c.path = opts.SourceName
		if c.path == "" {
			c.path = "the TOA receiver"
		}
		c.describe(c.path+" is in place", "held by "+c.path, "of "+c.path+"'s counters failed", c.path+"'s counters")
		return c, nil
	}
	root := opts.ProcRoot
	if root == "" {
		root = procfs.DefaultMountPoint
	}
	if _, err := procfs.NewFS(root); err != nil {
		return nil, fmt.Errorf("exporter: procfs root %s: %w", root, err)
	}
	c.path = filepath.Join(root, "net", "toa_stats")
	c.describe("a TOA kernel module is loaded (its /proc/net/toa_stats exists)", "held by the module",
		"of /proc/net/toa_stats failed or the file was malformed", "/proc/net/toa_stats that failed or found a malformed file")
	return c, nil
}

// describe makes the descriptions of the collector's own metrics; the
// phrases say what is read: "1 when <loaded>", "entries <held>", "1 when
// the last read <failed>", "Reads of <reads>".
func (c *TOACollector) describe(loaded, held, failed, reads string) {
	c.loaded = prometheus.NewDesc(MetricTOAModuleLoaded, "1 when "+loaded+", else 0.", nil, nil)
	c.inUse = prometheus.NewDesc(MetricTOAIP6InUse,
		"TOA address entries "+held+": ip6_address_alloc minus ip6_address_free.", nil, nil)
	c.scrapeError = prometheus.NewDesc(MetricTOAScrapeError, "1 when the last read "+failed+", else 0.", nil, nil)
	c.scrapeErrors = prometheus.NewDesc(MetricTOAScrapeErrors, "Reads of "+reads+".", nil, nil)
}

// Path is the file the collector reads, or its source's name.
func (c *TOACollector) Path() string { return c.path }

// Describe implements prometheus.Collector; it sends nothing, which makes
// the collector unchecked (its metric names depend on the file).
func (c *TOACollector) Describe(chan<- *prometheus.Desc) {}

// Read reads and parses the file (or reads the source) once. It returns
// (nil, nil) when the file does not exist (no TOA module loaded), or the
// source's receiver is not in place.
func (c *TOACollector) Read() (*TOAStats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readLocked()
}

func (c *TOACollector) readLocked() (*TOAStats, error) {
	if c.source != nil {
		return c.readSource()
	}
	f, err := os.Open(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// procfs files report size 0: read to EOF into a buffer kept between
	// scrapes.
	buf := c.buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, 4096)...)[:len(buf)]
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", c.path, err)
		}
		if len(buf) > 16<<20 {
			return nil, fmt.Errorf("%w: %s is larger than 16 MiB", ErrTOAStatsFormat, c.path)
		}
	}
	c.buf = buf
	st, err := ParseTOAStats(buf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.path, err)
	}
	return st, nil
}

// readSource reads the source and checks that its counters have the
// file's shape: a value per CPU in every row, names fit for metrics, no
// name twice. It sets each row's Total.
func (c *TOACollector) readSource() (*TOAStats, error) {
	st, err := c.source()
	if err != nil || st == nil {
		return nil, err
	}
	if len(st.Rows) == 0 {
		return nil, fmt.Errorf("%s: %w: no counters", c.path, ErrTOAStatsFormat)
	}
	seen := make(map[string]bool, len(st.Rows))
	for _, r := range st.Rows {
		switch {
		case !validName([]byte(r.Name)):
			return nil, fmt.Errorf("%s: %w: counter name %q is not [A-Za-z_][A-Za-z0-9_]*", c.path, ErrTOAStatsFormat, r.Name)
		case len(r.PerCPU) != len(st.CPUs):
			return nil, fmt.Errorf("%s: %w: counter %s has %d values for %d CPUs", c.path, ErrTOAStatsFormat, r.Name, len(r.PerCPU), len(st.CPUs))
		case seen[r.Name]:
			return nil, fmt.Errorf("%s: %w: counter %s appears twice", c.path, ErrTOAStatsFormat, r.Name)
		}
		seen[r.Name] = true
	}
	for i := range st.Rows {
		var sum uint64
		for _, v := range st.Rows[i].PerCPU {
			sum += v
		}
		st.Rows[i].Total = sum
	}
	return st, nil
}

// Collect implements prometheus.Collector.
func (c *TOACollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.readLocked()
	if err == nil && st != nil {
		err = c.checkNames(st)
	}
	loaded := 0.0
	if st != nil || err != nil {
		loaded = 1 // the file exists, even if unreadable or malformed
	}
	failed := 0.0
	if err != nil {
		failed = 1
		c.errors.Add(1)
		if msg := err.Error(); msg != c.lastErr {
			c.log.Error("toa_stats scrape failed", "err", err)
			c.lastErr = msg
		}
	} else {
		c.lastErr = ""
	}
	ch <- prometheus.MustNewConstMetric(c.loaded, prometheus.GaugeValue, loaded)
	ch <- prometheus.MustNewConstMetric(c.scrapeError, prometheus.GaugeValue, failed)
	ch <- prometheus.MustNewConstMetric(c.scrapeErrors, prometheus.CounterValue, float64(c.errors.Load()))
	if err != nil || st == nil {
		return
	}
	alloc, free := st.Row("ip6_address_alloc"), st.Row("ip6_address_free")
	if alloc != nil && free != nil {
		ch <- prometheus.MustNewConstMetric(c.inUse, prometheus.GaugeValue, float64(alloc.Total)-float64(free.Total))
	}
	if !c.perCPU {
		for i := range st.Rows {
			row := &st.Rows[i]
			ch <- prometheus.MustNewConstMetric(c.rowDesc(row.Name), prometheus.CounterValue, float64(row.Total))
		}
		return
	}
	// Per CPU: rows x CPUs samples (832 with 64 CPUs and 13 rows), all in
	// one allocation, each sent in the order the registry sorts a family's
	// series (cpu label as a string: 0, 1, 10, 11, ..., 2, 20, ...) so
	// that its sort finds them sorted already.
	order := c.labelOrder(st.CPUs)
	samples := make([]cpuCounter, len(st.Rows)*len(order))
	k := 0
	for i := range st.Rows {
		row := &st.Rows[i]
		desc := c.rowDesc(row.Name)
		for _, col := range order {
			m := &samples[k]
			k++
			m.desc, m.labels, m.value = desc, col.labels, float64(row.PerCPU[col.index])
			ch <- m
		}
	}
}

// cpuColumn is a column of toa_stats with the label pairs of its series.
type cpuColumn struct {
	index  int // in TOAStats.CPUs and TOARow.PerCPU
	labels []*dto.LabelPair
}

// labelOrder returns the columns of cpus sorted by their cpu label as a
// string, computed again only when the file's columns change (a CPU
// going on or offline).
func (c *TOACollector) labelOrder(cpus []int) []cpuColumn {
	if slices.Equal(cpus, c.orderOf) {
		return c.order
	}
	order := make([]cpuColumn, len(cpus))
	for i, n := range cpus {
		order[i] = cpuColumn{index: i, labels: c.cpuLabel(n)}
	}
	slices.SortFunc(order, func(a, b cpuColumn) int {
		return strings.Compare(a.labels[0].GetValue(), b.labels[0].GetValue())
	})
	c.orderOf, c.order = slices.Clone(cpus), order
	return order
}

// checkNames rejects rows whose metric name would clash with one of the
// collector's own metrics or with another row's.
func (c *TOACollector) checkNames(st *TOAStats) error {
	names := make(map[string]string, len(st.Rows))
	for _, r := range st.Rows {
		n := TOARowMetricName(r.Name)
		if n == MetricTOAScrapeErrors {
			return fmt.Errorf("%s: %w: row %s clashes with the metric %s", c.path, ErrTOAStatsFormat, r.Name, n)
		}
		if other, dup := names[n]; dup {
			return fmt.Errorf("%s: %w: rows %s and %s both map to the metric %s", c.path, ErrTOAStatsFormat, other, r.Name, n)
		}
		names[n] = r.Name
	}
	return nil
}

// cpuLabel returns the label pairs {cpu="n"}, made once per CPU and shared
// by the series of every row (they are never modified).
func (c *TOACollector) cpuLabel(n int) []*dto.LabelPair {
	if l, ok := c.cpuLabels[n]; ok {
		return l
	}
	l := []*dto.LabelPair{{Name: proto.String("cpu"), Value: proto.String(strconv.Itoa(n))}}
	c.cpuLabels[n] = l
	return l
}

// cpuCounter is a per-CPU counter sample. It replaces
// prometheus.MustNewConstMetric, which builds and checks the label pairs
// of every sample anew and allocates the sample and its counter apart:
// with 64 CPUs and 13 rows that was most of the scrape time. Its label
// pairs are shared by every row's series of that CPU (the registry never
// modifies them), and Write points the registry's dto.Metric into the
// sample itself, which lives in the scrape's one slice of samples.
type cpuCounter struct {
	desc    *prometheus.Desc
	labels  []*dto.LabelPair
	value   float64
	counter dto.Counter
}

func (m *cpuCounter) Desc() *prometheus.Desc { return m.desc }

func (m *cpuCounter) Write(out *dto.Metric) error {
	m.counter.Value = &m.value
	out.Label = m.labels
	out.Counter = &m.counter
	return nil
}

func (c *TOACollector) rowDesc(row string) *prometheus.Desc {
	if d, ok := c.descs[row]; ok {
		return d
	}
	help := toaRowHelp[row]
	switch {
	case help != "":
	case c.source != nil:
		help = "TOA counter " + row + " of " + c.path + "."
	default:
		help = "TOA module counter " + row + " from /proc/net/toa_stats."
	}
	if c.perCPU {
		help += " Per CPU."
	} else {
		help += " Summed over CPUs."
	}
	var labels []string
	if c.perCPU {
		labels = []string{"cpu"}
	}
	d := prometheus.NewDesc(TOARowMetricName(row), help, labels, nil)
	c.descs[row] = d
	return d
}

// toaRowHelp describes the rows realip's toa.ko prints.
var toaRowHelp = map[string]string{
	"syn_recv_sock_toa":        "Handshakes completed that carried a TOA option.",
	"syn_recv_sock_no_toa":     "Handshakes completed without a TOA option.",
	"getname_toa_ok":           "getpeername()/accept() calls answered with the TOA client address.",
	"getname_toa_mismatch":     "getpeername() calls whose buffer could not hold the TOA address family.",
	"getname_toa_bypass":       "getname calls on taken-over sockets passed through unchanged (own address, or an error).",
	"getname_toa_empty":        "getpeername()/accept() calls on taken-over sockets of connections without TOA.",
	"ip6_address_alloc":        "TOA address entries allocated.",
	"ip6_address_free":         "TOA address entries freed.",
	"syn_recv_sock_untrusted":  "TOA options ignored because the sender is not a trusted prefix.",
	"syn_recv_sock_bad_option": "TOA options ignored because they were malformed.",
	"syn_recv_sock_from_syn":   "TOA addresses taken from the SYN because the handshake ACK had none.",
	"alloc_failed":             "TOA entries that could not be allocated.",
	"probe_missed":             "Kernel probe hits missed (the module could not see those handshakes).",
	"listeners_taken_over":     "TCP listening sockets whose getname the module took over (at listen(), or at their first TOA handshake).",
}
