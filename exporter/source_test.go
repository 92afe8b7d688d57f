package exporter

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// seedStats parses the seed fixture, as a receiver without a file would
// hand its counters to the collector.
func seedStats(t testing.TB) *TOAStats {
	t.Helper()
	raw, err := os.ReadFile("testdata/seed/net/toa_stats")
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseTOAStats(raw)
	if err != nil {
		t.Fatal(err)
	}
	for i := range st.Rows {
		st.Rows[i].Total = 0 // the collector sums them itself
	}
	return st
}

func sourceCollector(t testing.TB, perCPU bool, src func() (*TOAStats, error)) *TOACollector {
	t.Helper()
	c, err := NewTOACollector(TOAOptions{Source: src, SourceName: "the eBPF TOA receiver", PerCPU: perCPU,
		ProcRoot: "/nonexistent"}) // not used with a source
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSourceSameMetricsAsFile: the same counters give the same series,
// names, labels and values, from a source as from the file, summed and
// per CPU.
func TestSourceSameMetricsAsFile(t *testing.T) {
	for _, perCPU := range []bool{false, true} {
		file := newTestCollector(t, "testdata/seed", perCPU)
		src := sourceCollector(t, perCPU, func() (*TOAStats, error) { return seedStats(t), nil })
		got, want := gatherSamples(t, src), gatherSamples(t, file)
		if len(want) < 8+4 {
			t.Fatalf("the file gives only %d samples:\n%s", len(want), strings.Join(want, "\n"))
		}
		if !slices.Equal(got, want) {
			t.Errorf("per CPU %v: source gives\n%s\nthe file\n%s", perCPU, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		problems, err := testutil.CollectAndLint(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
	c := sourceCollector(t, false, func() (*TOAStats, error) { return seedStats(t), nil })
	want := `
# HELP realip_toa_module_loaded 1 when the eBPF TOA receiver is in place, else 0.
# TYPE realip_toa_module_loaded gauge
realip_toa_module_loaded 1
# HELP realip_toa_ip6_addresses_in_use TOA address entries held by the eBPF TOA receiver: ip6_address_alloc minus ip6_address_free.
# TYPE realip_toa_ip6_addresses_in_use gauge
realip_toa_ip6_addresses_in_use 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), MetricTOAModuleLoaded, MetricTOAIP6InUse); err != nil {
		t.Error(err)
	}
	if c.Path() != "the eBPF TOA receiver" {
		t.Errorf("Path() = %q", c.Path())
	}
}

// gatherSamples returns every sample of c as "name{labels} value", in the
// registry's order: what a scrape shows but the help texts.
func gatherSamples(t testing.TB, c prometheus.Collector) []string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName()+"="+lp.GetValue())
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			out = append(out, fmt.Sprintf("%s %s{%s} %v", mf.GetType(), mf.GetName(), strings.Join(ls, ","), v))
		}
	}
	return out
}

func TestSourceStates(t *testing.T) {
	errRead := errors.New("map read failed")
	tests := []struct {
		name        string
		src         func() (*TOAStats, error)
		loaded      float64
		scrapeError float64
		rows        int
		wantErr     error
	}{
		{"in place", func() (*TOAStats, error) { return seedStats(t), nil }, 1, 0, 8, nil},
		{"not in place", func() (*TOAStats, error) { return nil, nil }, 0, 0, 0, nil},
		{"read error", func() (*TOAStats, error) { return nil, errRead }, 1, 1, 0, errRead},
		{"no rows", func() (*TOAStats, error) { return &TOAStats{CPUs: []int{0}}, nil }, 1, 1, 0, ErrTOAStatsFormat},
		{"short row", func() (*TOAStats, error) {
			return &TOAStats{CPUs: []int{0, 1}, Rows: []TOARow{{Name: "getname_toa_ok", PerCPU: []uint64{1}}}}, nil
		}, 1, 1, 0, ErrTOAStatsFormat},
		{"bad name", func() (*TOAStats, error) {
			return &TOAStats{CPUs: []int{0}, Rows: []TOARow{{Name: "getname-ok", PerCPU: []uint64{1}}}}, nil
		}, 1, 1, 0, ErrTOAStatsFormat},
		{"name twice", func() (*TOAStats, error) {
			r := TOARow{Name: "getname_toa_ok", PerCPU: []uint64{1}}
			return &TOAStats{CPUs: []int{0}, Rows: []TOARow{r, r}}, nil
		}, 1, 1, 0, ErrTOAStatsFormat},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := sourceCollector(t, false, tc.src)
			if _, err := c.Read(); !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Errorf("Read: %v, want %v", err, tc.wantErr)
			}
			g, total, rows := scrapeErrorState(t, c)
			if g != tc.scrapeError || total != tc.scrapeError || rows != tc.rows {
				t.Errorf("error gauge %v, errors %v, %d row metrics; want %v, %v, %d", g, total, rows, tc.scrapeError, tc.scrapeError, tc.rows)
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(c)
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, mf := range mfs {
				if mf.GetName() == MetricTOAModuleLoaded && mf.GetMetric()[0].GetGauge().GetValue() != tc.loaded {
					t.Errorf("module_loaded %v, want %v", mf.GetMetric()[0].GetGauge().GetValue(), tc.loaded)
				}
			}
		})
	}
}
