package exporter

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newTestCollector(t testing.TB, root string, perCPU bool) *TOACollector {
	t.Helper()
	c, err := NewTOACollector(TOAOptions{ProcRoot: root, PerCPU: perCPU})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fixtureTree writes content as ROOT/net/toa_stats and returns ROOT.
func fixtureTree(t testing.TB, content string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "net", "toa_stats"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// manyCPUs renders a toa_stats file the way toa.ko does, with ncpu columns
// and the module's thirteen rows; the value of row r on CPU c is r*1000+c.
func manyCPUs(ncpu int) string {
	rows := append(StandardTOARows[:], "syn_recv_sock_untrusted", "syn_recv_sock_bad_option",
		"syn_recv_sock_from_syn", "alloc_failed", "probe_missed")
	var b strings.Builder
	b.WriteString("                 ")
	for c := range ncpu {
		fmt.Fprintf(&b, "\tCPU%d", c)
	}
	b.WriteByte('\n')
	for r, name := range rows {
		fmt.Fprintf(&b, "%-24s", name)
		for c := range ncpu {
			fmt.Fprintf(&b, "\t%d", r*1000+c)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func TestParseSeedSample(t *testing.T) {
	b, err := os.ReadFile("testdata/seed/net/toa_stats")
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseTOAStats(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.CPUs) != 2 || st.CPUs[0] != 0 || st.CPUs[1] != 1 {
		t.Errorf("CPUs = %v", st.CPUs)
	}
	if len(st.Rows) != len(StandardTOARows) {
		t.Fatalf("%d rows", len(st.Rows))
	}
	for i, name := range StandardTOARows {
		if st.Rows[i].Name != name {
			t.Errorf("row %d = %s, want %s", i, st.Rows[i].Name, name)
		}
	}
	want := map[string]uint64{
		"syn_recv_sock_toa": 1723, "syn_recv_sock_no_toa": 2046, "getname_toa_ok": 0,
		"getname_toa_mismatch": 1723, "getname_toa_bypass": 0, "getname_toa_empty": 25654,
		"ip6_address_alloc": 1723, "ip6_address_free": 1723,
	}
	for name, v := range want {
		if got := st.Row(name).Total; got != v {
			t.Errorf("%s = %d, want %d", name, got, v)
		}
	}
	if r := st.Row("getname_toa_empty"); r.PerCPU[0] != 12897 || r.PerCPU[1] != 12757 {
		t.Errorf("getname_toa_empty per CPU = %v", r.PerCPU)
	}
	if st.Row("nope") != nil {
		t.Error("Row(nope) found something")
	}
}

func TestCollectSeedSample(t *testing.T) {
	c := newTestCollector(t, "testdata/seed", false)
	want := `
# HELP realip_toa_getname_toa_empty_total getpeername()/accept() calls on taken-over sockets of connections without TOA. Summed over CPUs.
# TYPE realip_toa_getname_toa_empty_total counter
realip_toa_getname_toa_empty_total 25654
# HELP realip_toa_ip6_address_alloc_total TOA address entries allocated. Summed over CPUs.
# TYPE realip_toa_ip6_address_alloc_total counter
realip_toa_ip6_address_alloc_total 1723
# HELP realip_toa_ip6_address_free_total TOA address entries freed. Summed over CPUs.
# TYPE realip_toa_ip6_address_free_total counter
realip_toa_ip6_address_free_total 1723
# HELP realip_toa_ip6_addresses_in_use TOA address entries held by the module: ip6_address_alloc minus ip6_address_free.
# TYPE realip_toa_ip6_addresses_in_use gauge
realip_toa_ip6_addresses_in_use 0
# HELP realip_toa_module_loaded 1 when a TOA kernel module is loaded (its /proc/net/toa_stats exists), else 0.
# TYPE realip_toa_module_loaded gauge
realip_toa_module_loaded 1
# HELP realip_toa_scrape_error 1 when the last read of /proc/net/toa_stats failed or the file was malformed, else 0.
# TYPE realip_toa_scrape_error gauge
realip_toa_scrape_error 0
# HELP realip_toa_scrape_errors_total Reads of /proc/net/toa_stats that failed or found a malformed file.
# TYPE realip_toa_scrape_errors_total counter
realip_toa_scrape_errors_total 0
# HELP realip_toa_syn_recv_sock_toa_total Handshakes completed that carried a TOA option. Summed over CPUs.
# TYPE realip_toa_syn_recv_sock_toa_total counter
realip_toa_syn_recv_sock_toa_total 1723
`
	err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"realip_toa_getname_toa_empty_total", "realip_toa_ip6_address_alloc_total", "realip_toa_ip6_address_free_total",
		"realip_toa_ip6_addresses_in_use", "realip_toa_module_loaded", "realip_toa_scrape_error",
		"realip_toa_scrape_errors_total", "realip_toa_syn_recv_sock_toa_total")
	if err != nil {
		t.Fatal(err)
	}
	// 8 rows + loaded + in use + 2 error metrics.
	if n := testutil.CollectAndCount(c); n != 12 {
		t.Errorf("%d metrics, want 12", n)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestCollectOneCPU(t *testing.T) {
	c := newTestCollector(t, "testdata/onecpu", false)
	want := `
# HELP realip_toa_getname_toa_bypass_total getname calls on taken-over sockets passed through unchanged (own address, or an error). Summed over CPUs.
# TYPE realip_toa_getname_toa_bypass_total counter
realip_toa_getname_toa_bypass_total 11
# HELP realip_toa_ip6_addresses_in_use TOA address entries held by the module: ip6_address_alloc minus ip6_address_free.
# TYPE realip_toa_ip6_addresses_in_use gauge
realip_toa_ip6_addresses_in_use 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"realip_toa_getname_toa_bypass_total", "realip_toa_ip6_addresses_in_use"); err != nil {
		t.Fatal(err)
	}
	pc := newTestCollector(t, "testdata/onecpu", true)
	want = `
# HELP realip_toa_getname_toa_bypass_total getname calls on taken-over sockets passed through unchanged (own address, or an error). Per CPU.
# TYPE realip_toa_getname_toa_bypass_total counter
realip_toa_getname_toa_bypass_total{cpu="0"} 11
`
	if err := testutil.CollectAndCompare(pc, strings.NewReader(want), "realip_toa_getname_toa_bypass_total"); err != nil {
		t.Fatal(err)
	}
}

func Test64CPUs(t *testing.T) {
	root := fixtureTree(t, manyCPUs(64))
	c := newTestCollector(t, root, false)
	// Row 6 (ip6_address_alloc): sum over c of 6000+c = 64*6000 + 2016.
	want := `
# HELP realip_toa_ip6_address_alloc_total TOA address entries allocated. Summed over CPUs.
# TYPE realip_toa_ip6_address_alloc_total counter
realip_toa_ip6_address_alloc_total 386016
# HELP realip_toa_probe_missed_total Kernel probe hits missed (the module could not see those handshakes). Summed over CPUs.
# TYPE realip_toa_probe_missed_total counter
realip_toa_probe_missed_total 770016
# HELP realip_toa_ip6_addresses_in_use TOA address entries held by the module: ip6_address_alloc minus ip6_address_free.
# TYPE realip_toa_ip6_addresses_in_use gauge
realip_toa_ip6_addresses_in_use -64000
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"realip_toa_ip6_address_alloc_total", "realip_toa_probe_missed_total", "realip_toa_ip6_addresses_in_use"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c); n != 13+4 {
		t.Errorf("%d metrics, want 17", n)
	}
	pc := newTestCollector(t, root, true)
	if n := testutil.CollectAndCount(pc, "realip_toa_syn_recv_sock_toa_total"); n != 64 {
		t.Errorf("per CPU: %d series of syn_recv_sock_toa, want 64", n)
	}
	if n := testutil.CollectAndCount(pc); n != 13*64+4 {
		t.Errorf("per CPU: %d metrics, want %d", n, 13*64+4)
	}
	problems, err := testutil.CollectAndLint(pc)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

func TestExtraRows(t *testing.T) {
	c := newTestCollector(t, "testdata/extra", false)
	want := `
# HELP realip_toa_syn_recv_sock_future_total TOA module counter syn_recv_sock_future from /proc/net/toa_stats. Summed over CPUs.
# TYPE realip_toa_syn_recv_sock_future_total counter
realip_toa_syn_recv_sock_future_total 1.8446744073709552e+19
# HELP realip_toa_syn_recv_sock_untrusted_total TOA options ignored because the sender is not a trusted prefix. Summed over CPUs.
# TYPE realip_toa_syn_recv_sock_untrusted_total counter
realip_toa_syn_recv_sock_untrusted_total 10
# HELP realip_toa_probe_missed_total Kernel probe hits missed (the module could not see those handshakes). Summed over CPUs.
# TYPE realip_toa_probe_missed_total counter
realip_toa_probe_missed_total 4
# HELP realip_toa_ip6_addresses_in_use TOA address entries held by the module: ip6_address_alloc minus ip6_address_free.
# TYPE realip_toa_ip6_addresses_in_use gauge
realip_toa_ip6_addresses_in_use 4
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"realip_toa_syn_recv_sock_future_total", "realip_toa_syn_recv_sock_untrusted_total",
		"realip_toa_probe_missed_total", "realip_toa_ip6_addresses_in_use"); err != nil {
		t.Fatal(err)
	}
	pc := newTestCollector(t, "testdata/extra", true)
	want = `
# HELP realip_toa_syn_recv_sock_bad_option_total TOA options ignored because they were malformed. Per CPU.
# TYPE realip_toa_syn_recv_sock_bad_option_total counter
realip_toa_syn_recv_sock_bad_option_total{cpu="0"} 0
realip_toa_syn_recv_sock_bad_option_total{cpu="1"} 0
realip_toa_syn_recv_sock_bad_option_total{cpu="3"} 2
`
	if err := testutil.CollectAndCompare(pc, strings.NewReader(want), "realip_toa_syn_recv_sock_bad_option_total"); err != nil {
		t.Fatal(err)
	}
}

// scrapeErrorState collects once and returns the error gauge, the error
// counter and the number of row metrics.
func scrapeErrorState(t *testing.T, c *TOACollector) (gauge, total float64, rows int) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		v := mf.GetMetric()[0]
		switch mf.GetName() {
		case MetricTOAScrapeError:
			gauge = v.GetGauge().GetValue()
		case MetricTOAScrapeErrors:
			total = v.GetCounter().GetValue()
		case MetricTOAModuleLoaded, MetricTOAIP6InUse:
		default:
			rows++
		}
	}
	return gauge, total, rows
}

func TestMalformedIsScrapeError(t *testing.T) {
	for _, dir := range []string{"truncated", "garbage", "badheader"} {
		t.Run(dir, func(t *testing.T) {
			c := newTestCollector(t, filepath.Join("testdata", dir), false)
			if _, err := c.Read(); !errors.Is(err, ErrTOAStatsFormat) {
				t.Fatalf("Read: %v, want ErrTOAStatsFormat", err)
			}
			for i := 1; i <= 3; i++ {
				g, total, rows := scrapeErrorState(t, c)
				if g != 1 || total != float64(i) || rows != 0 {
					t.Fatalf("scrape %d: error gauge %v, errors %v, %d row metrics", i, g, total, rows)
				}
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(c)
			if n, err := testutil.GatherAndCount(reg, MetricTOAModuleLoaded); err != nil || n != 1 {
				t.Fatalf("module_loaded: %d series, %v", n, err)
			}
			want := "# HELP realip_toa_module_loaded 1 when a TOA kernel module is loaded (its /proc/net/toa_stats exists), else 0.\n# TYPE realip_toa_module_loaded gauge\nrealip_toa_module_loaded 1\n"
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want), MetricTOAModuleLoaded); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestRecoversAfterError(t *testing.T) {
	root := fixtureTree(t, "garbage\n")
	c := newTestCollector(t, root, false)
	if g, total, _ := scrapeErrorState(t, c); g != 1 || total != 1 {
		t.Fatalf("garbage: gauge %v total %v", g, total)
	}
	seed, _ := os.ReadFile("testdata/seed/net/toa_stats")
	if err := os.WriteFile(filepath.Join(root, "net", "toa_stats"), seed, 0o644); err != nil {
		t.Fatal(err)
	}
	if g, total, rows := scrapeErrorState(t, c); g != 0 || total != 1 || rows != 8 {
		t.Fatalf("seed after garbage: gauge %v total %v rows %d", g, total, rows)
	}
}

func TestNoModule(t *testing.T) {
	c := newTestCollector(t, "testdata/empty", false)
	want := `
# HELP realip_toa_module_loaded 1 when a TOA kernel module is loaded (its /proc/net/toa_stats exists), else 0.
# TYPE realip_toa_module_loaded gauge
realip_toa_module_loaded 0
# HELP realip_toa_scrape_error 1 when the last read of /proc/net/toa_stats failed or the file was malformed, else 0.
# TYPE realip_toa_scrape_error gauge
realip_toa_scrape_error 0
# HELP realip_toa_scrape_errors_total Reads of /proc/net/toa_stats that failed or found a malformed file.
# TYPE realip_toa_scrape_errors_total counter
realip_toa_scrape_errors_total 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestUnreadableFileIsScrapeError(t *testing.T) {
	root := t.TempDir()
	// A directory where the file should be: open works, read fails.
	if err := os.MkdirAll(filepath.Join(root, "net", "toa_stats"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := newTestCollector(t, root, false)
	if g, total, rows := scrapeErrorState(t, c); g != 1 || total != 1 || rows != 0 {
		t.Fatalf("gauge %v total %v rows %d", g, total, rows)
	}
}

func TestBadRoot(t *testing.T) {
	if _, err := NewTOACollector(TOAOptions{ProcRoot: "testdata/no-such-dir"}); err == nil {
		t.Error("missing procfs root accepted")
	}
	if _, err := NewTOACollector(TOAOptions{ProcRoot: "testdata/seed/net/toa_stats"}); err == nil {
		t.Error("a file as procfs root accepted")
	}
}

func TestParseErrors(t *testing.T) {
	good := "\tCPU0\tCPU1\nsyn_recv_sock_toa\t1\t2\n"
	if _, err := ParseTOAStats([]byte(good)); err != nil {
		t.Fatalf("good: %v", err)
	}
	for name, in := range map[string]string{
		"empty":             "",
		"blank lines only":  "\n\n",
		"header only":       "\tCPU0\tCPU1\n",
		"no newline":        strings.TrimSuffix(good, "\n"),
		"cut mid row":       "\tCPU0\tCPU1\nsyn_recv_sock_toa\t1\n",
		"too many values":   "\tCPU0\nsyn_recv_sock_toa\t1\t2\n",
		"bad header":        "\tCPU0\tCPUx\nsyn_recv_sock_toa\t1\t2\n",
		"lower-case header": "\tcpu0\nsyn_recv_sock_toa\t1\n",
		"negative":          "\tCPU0\nsyn_recv_sock_toa\t-1\n",
		"hex":               "\tCPU0\nsyn_recv_sock_toa\t0x10\n",
		"overflow":          "\tCPU0\nsyn_recv_sock_toa\t18446744073709551616\n",
		"float":             "\tCPU0\nsyn_recv_sock_toa\t1.5\n",
		"bad name":          "\tCPU0\nsyn-recv\t1\n",
		"digit first":       "\tCPU0\n1abc\t1\n",
		"duplicate":         "\tCPU0\nsyn_recv_sock_toa\t1\nsyn_recv_sock_toa\t2\n",
		"binary":            "\x00\x01\x02\n",
	} {
		if _, err := ParseTOAStats([]byte(in)); !errors.Is(err, ErrTOAStatsFormat) {
			t.Errorf("%s: err %v, want ErrTOAStatsFormat", name, err)
		}
	}
}

func TestRowNameClash(t *testing.T) {
	for _, in := range []string{
		"\tCPU0\nscrape_errors\t1\n",
		"\tCPU0\nfoo\t1\nfoo_total\t2\n",
	} {
		c := newTestCollector(t, fixtureTree(t, in), false)
		if g, _, rows := scrapeErrorState(t, c); g != 1 || rows != 0 {
			t.Errorf("%q: gauge %v rows %d, want a scrape error", in, g, rows)
		}
	}
}

func FuzzParseTOAStats(f *testing.F) {
	seed, _ := os.ReadFile("testdata/seed/net/toa_stats")
	f.Add(seed)
	f.Add([]byte(manyCPUs(3)))
	f.Add([]byte("\tCPU0\nx\t1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseTOAStats(b)
		if err != nil {
			return
		}
		for _, r := range st.Rows {
			if len(r.PerCPU) != len(st.CPUs) {
				t.Fatalf("row %s: %d values for %d CPUs", r.Name, len(r.PerCPU), len(st.CPUs))
			}
			var sum uint64
			for _, v := range r.PerCPU {
				sum += v
			}
			if sum != r.Total {
				t.Fatalf("row %s: total %d, sum %d", r.Name, r.Total, sum)
			}
		}
		if !bytes.HasSuffix(b, []byte("\n")) {
			t.Fatal("accepted a file without a final newline")
		}
	})
}

// constMetricsCollector is the straightforward per-CPU collector: read
// the file, ParseTOAStats, one prometheus.MustNewConstMetric per row and
// CPU. BenchmarkScrape64CPUs measures it in the same run as the baseline
// TOACollector's per-CPU mode is compared with, and TestPerCPUSamples
// checks that both give the same series.
type constMetricsCollector struct{ path string }

func (constMetricsCollector) Describe(chan<- *prometheus.Desc) {}

func (b constMetricsCollector) Collect(ch chan<- prometheus.Metric) {
	raw, err := os.ReadFile(b.path)
	if err != nil {
		panic(err)
	}
	st, err := ParseTOAStats(raw)
	if err != nil {
		panic(err)
	}
	for _, row := range st.Rows {
		desc := prometheus.NewDesc(TOARowMetricName(row.Name), "TOA module counter "+row.Name+".", []string{"cpu"}, nil)
		for j, v := range row.PerCPU {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), strconv.Itoa(st.CPUs[j]))
		}
	}
}

// rowSamples gathers g and returns the samples of the toa_stats rows as
// "name{labels} value" lines, in the registry's order.
func rowSamples(t testing.TB, g prometheus.Gatherer) []string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		switch mf.GetName() {
		case MetricTOAModuleLoaded, MetricTOAIP6InUse, MetricTOAScrapeError, MetricTOAScrapeErrors:
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName()+"="+lp.GetValue())
			}
			out = append(out, fmt.Sprintf("%s{%s} %v", mf.GetName(), strings.Join(ls, ","), m.GetCounter().GetValue()))
		}
	}
	return out
}

// cpuLayout renders a toa_stats file with the given CPU columns (CPUs
// may be offline, so the numbers need not be contiguous); the value of
// row r on CPU c is r*1000+c.
func cpuLayout(cpus ...int) string {
	var b strings.Builder
	for _, c := range cpus {
		fmt.Fprintf(&b, "\tCPU%d", c)
	}
	b.WriteByte('\n')
	for r, name := range StandardTOARows {
		b.WriteString(name)
		for _, c := range cpus {
			fmt.Fprintf(&b, "\t%d", r*1000+c)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// TestPerCPUSamples checks the per-CPU series value by value against the
// straightforward collector, on one file and across CPUs going offline
// and online between scrapes of the same collector.
func TestPerCPUSamples(t *testing.T) {
	root := fixtureTree(t, manyCPUs(64))
	path := filepath.Join(root, "net", "toa_stats")
	c := newTestCollector(t, root, true)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	base := prometheus.NewRegistry()
	base.MustRegister(constMetricsCollector{path: path})
	for _, tc := range []struct {
		name    string
		content string
		series  int
		spot    []string // samples that must be there (the fixture's formula)
	}{
		{"64 CPUs", manyCPUs(64), 13 * 64, []string{`realip_toa_getname_toa_ok_total{cpu=0} 2000`, `realip_toa_probe_missed_total{cpu=63} 12063`}},
		{"CPUs 1 and 5 offline", cpuLayout(0, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12), 8 * 11, []string{`realip_toa_ip6_address_free_total{cpu=10} 7010`}},
		{"one CPU", cpuLayout(7), 8, []string{`realip_toa_getname_toa_ok_total{cpu=7} 2007`}},
		{"CPU 1 online, CPU 100 too", cpuLayout(0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 100), 8 * 13, []string{`realip_toa_syn_recv_sock_no_toa_total{cpu=100} 1100`}},
		{"64 CPUs again", manyCPUs(64), 13 * 64, []string{`realip_toa_ip6_address_free_total{cpu=10} 7010`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			got, want := rowSamples(t, reg), rowSamples(t, base)
			if len(got) != tc.series || !slices.Equal(got, want) {
				t.Fatalf("%d series, want %d equal to the straightforward collector's:\ngot  %q\nwant %q", len(got), tc.series, got, want)
			}
			// Independent of both collectors: the fixture's formula.
			for _, s := range tc.spot {
				if !slices.Contains(got, s) {
					t.Errorf("no %s in %q", s, got)
				}
			}
		})
	}
}

// BenchmarkScrape64CPUs measures one full scrape of a 64-CPU toa_stats:
// read, parse and build every metric (Gather), summed and per CPU, and,
// as the same-run baseline of per CPU, the straightforward collector
// (constMetricsCollector). Compare perCPU=true with perCPU=baseline:
//
//	go test -run '^$' -bench Scrape64CPUs -benchmem -count 5 ./exporter
func BenchmarkScrape64CPUs(b *testing.B) {
	root := fixtureTree(b, manyCPUs(64))
	for _, mode := range []string{"false", "true", "baseline"} {
		b.Run("perCPU="+mode, func(b *testing.B) {
			reg := prometheus.NewRegistry()
			switch mode {
			case "baseline":
				reg.MustRegister(constMetricsCollector{path: filepath.Join(root, "net", "toa_stats")})
			default:
				reg.MustRegister(newTestCollector(b, root, mode == "true"))
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParse64CPUs measures the parser alone.
func BenchmarkParse64CPUs(b *testing.B) {
	in := []byte(manyCPUs(64))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseTOAStats(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCollect64CPUs measures the collector alone (read, parse, build
// the samples), without the registry's checks, sorting and encoding.
func BenchmarkCollect64CPUs(b *testing.B) {
	root := fixtureTree(b, manyCPUs(64))
	for _, perCPU := range []bool{false, true} {
		b.Run(fmt.Sprintf("perCPU=%v", perCPU), func(b *testing.B) {
			c := newTestCollector(b, root, perCPU)
			ch := make(chan prometheus.Metric, 13*64+8)
			b.ReportAllocs()
			for b.Loop() {
				c.Collect(ch)
				for len(ch) > 0 {
					<-ch
				}
			}
		})
	}
}
