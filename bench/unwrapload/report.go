//go:build linux

package main

import (
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/realip/realip/bench/internal/loadkit"
)

// metricInfo names a metric in the report.
type metricInfo struct{ name, title string }

var metricOrder = []metricInfo{
	{"tcp_MBps", "TCP throughput, MB/s"},
	{"conn_per_s", "new TCP connections/s"},
	{"udp_rt_per_s", "UDP requests/s"},
}

type sample = loadkit.Sample

// variant is a relay compared with the subject rather than with the
// baselines, with an optional target ratio (0: none).
type variant struct {
	name   string
	target float64
}

// report is what the steps of runReport share.
type report struct {
	subject   string
	baselines []string
	ceiling   string
	variants  []variant
	target    float64
	relays    []string // every relay, in input order, then in the tables' order
	summary   []string
}

// runReport prints, per metric, every relay's median and range over the
// repetitions with its CPU cost, the subject's ratio to the best baseline
// and to the ceiling, each variant's ratio to the subject, and a summary.
func runReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	subject := fs.String("subject", "realip", "the relay compared with the baselines")
	base := fs.String("base", "go-mmproxy,haproxy,haproxy-splice", "comma-separated baseline relays")
	ceiling := fs.String("ceiling", "direct", "the path without unwrapper")
	variants := fs.String("variant", "", "comma-separated RELAY[:MIN]: compared with the subject, MIN the target ratio")
	target := fs.Float64("target", 1.0, "target ratio of the subject to the best baseline")
	fs.Parse(args)
	r := &report{subject: *subject, baselines: loadkit.SplitList(*base), ceiling: *ceiling, target: *target}
	for _, v := range loadkit.SplitList(*variants) {
		name, min, _ := strings.Cut(v, ":")
		x := variant{name: name}
		if min != "" {
			t, err := strconv.ParseFloat(min, 64)
			if err != nil {
				return fmt.Errorf("-variant %q: %w", v, err)
			}
			x.target = t
		}
		r.variants = append(r.variants, x)
	}
	res, err := loadkit.ReadResultsFile(fs.Arg(0))
	if err != nil {
		return err
	}
	r.relays = res.Relays
	r.order()
	for _, mi := range metricOrder {
		if byRelay := res.Data[mi.name]; len(byRelay) > 0 {
			r.printTable(mi, byRelay)
			r.compare(mi, byRelay)
		}
	}
	if len(r.summary) > 0 {
		fmt.Printf("\nSummary: %s's ratio (medians; pairs: same-round ratios)\n", r.subject)
		fmt.Printf("  %-34s %10s  %-26s %6s  %-12s %6s  %-7s  %s\n", "figure", r.subject, "compared with", "ratio", "pairs", "target", "verdict", "CPU/op ratio")
		for _, l := range r.summary {
			fmt.Println(l)
		}
	}
	return nil
}

// order puts the relays in the order of the tables: the ceiling, the
// subject, its variants, the baselines, then any other.
func (r *report) order() {
	want := []string{r.ceiling, r.subject}
	for _, v := range r.variants {
		want = append(want, v.name)
	}
	want = append(want, r.baselines...)
	rank := func(s string) int {
		if i := slices.Index(want, s); i >= 0 {
			return i
		}
		return len(want)
	}
	slices.SortStableFunc(r.relays, func(a, b string) int { return rank(a) - rank(b) })
}

// printTable prints the metric's title and a row per relay.
func (r *report) printTable(mi metricInfo, byRelay map[string][]sample) {
	fmt.Printf("\n%s (higher is better)\n", mi.title)
	fmt.Printf("  %-18s %10s  %-19s %10s %13s %8s  %s\n", "relay", "median", "[min .. max]", "relay CPU", "relay CPU/op", "gen CPU", "")
	for _, relay := range r.relays {
		ss := byRelay[relay]
		if len(ss) == 0 {
			continue
		}
		row := loadkit.Summarize(ss)
		rng := fmt.Sprintf("[%.0f .. %.0f]", row.Min, row.Max)
		cpu, perOp := "-", "-"
		if row.HasCPU {
			cpu = fmt.Sprintf("%.2f cores", row.RelayCores)
			perOp = fmt.Sprintf("%.2fµs/%s", row.USPerOp, row.Op)
		}
		gen := fmt.Sprintf("%.2f", row.GenCores)
		fmt.Printf("  %-18s %10.0f  %-19s %10s %13s %8s  %s\n", relay, row.Median, rng, cpu, perOp, gen, row.Notes)
	}
}

// compare prints the subject's ratio to the best baseline and to the
// ceiling, and each variant's ratio to the subject, and adds the lines
// with a target to the summary.
func (r *report) compare(mi metricInfo, byRelay map[string][]sample) {
	subj := byRelay[r.subject]
	if len(subj) == 0 {
		return
	}
	sm := medianOf(subj)
	if best, _ := loadkit.BestBaseline(byRelay, r.baselines, false); best != "" {
		line := r.ratioLine(mi.title, subj, best, byRelay[best], r.target)
		fmt.Printf("  -> %s / best baseline: %s\n", r.subject, line.text)
		cpu := "-"
		if e, b, ok := cpuPerOp(subj, byRelay[best]); ok {
			fmt.Printf("  -> relay CPU per %s: %s %.2fµs, %s %.2fµs (%.2fx)\n", subj[0].Op, r.subject, e, best, b, e/b)
			cpu = fmt.Sprintf("%.2fx", e/b)
		}
		r.summary = append(r.summary, fmt.Sprintf("%s  %s", line.row, cpu))
	}
	if c := byRelay[r.ceiling]; len(c) > 0 {
		fmt.Printf("  -> %s / %s (no unwrapper, the ceiling): %.2fx\n", r.subject, r.ceiling, sm/medianOf(c))
	}
	for _, v := range r.variants {
		vs := byRelay[v.name]
		if len(vs) == 0 {
			continue
		}
		line := r.ratioLine(mi.title+", "+v.name, vs, r.subject, subj, v.target)
		fmt.Printf("  -> %s / %s: %s\n", v.name, r.subject, line.text)
		if v.target > 0 {
			cpu := "-"
			if e, b, ok := cpuPerOp(vs, subj); ok {
				cpu = fmt.Sprintf("%.2fx", e/b)
			}
			r.summary = append(r.summary, fmt.Sprintf("%s  %s", line.row, cpu))
		}
	}
}

// cpuPerOp is the median relay CPU time per unit of a and of b; ok is
// false unless both were measured.
func cpuPerOp(a, b []sample) (ca, cb float64, ok bool) {
	if !a[0].HasCPU || !b[0].HasCPU {
		return 0, 0, false
	}
	return loadkit.MedianOf(a, sample.USPerOpOf), loadkit.MedianOf(b, sample.USPerOpOf), true
}

type ratio struct{ text, row string }

// ratioLine compares samples a with samples b of relay bName: the ratio of
// medians, the range of same-round ratios, and the verdict for target (0:
// none).
func (r *report) ratioLine(figure string, a []sample, bName string, b []sample, target float64) ratio {
	am, bm := medianOf(a), medianOf(b)
	x := am / bm
	var pairs []float64
	for _, p := range loadkit.SameRep(a, b) {
		if p.B.Value > 0 {
			pairs = append(pairs, p.A.Value/p.B.Value)
		}
	}
	pr := "-"
	if len(pairs) > 0 {
		pr = fmt.Sprintf("%.2f..%.2f", slices.Min(pairs), slices.Max(pairs))
	}
	text := fmt.Sprintf("%.2fx against %s (same-round pairs %s)", x, bName, pr)
	verdict, tgt := "", "-"
	if target > 0 {
		verdict = "met"
		if x < target {
			verdict = "NOT met"
		}
		tgt = fmt.Sprintf(">=%.2f", target)
		text += fmt.Sprintf("; target %s: %s", tgt, verdict)
	}
	row := fmt.Sprintf("  %-34s %10.0f  %-26s %5.2fx  %-12s %6s  %-7s", figure, am, fmt.Sprintf("%s %.0f", bName, bm), x, pr, tgt, verdict)
	return ratio{text, row}
}

// medianOf is the median value of the samples.
func medianOf(ss []sample) float64 {
	return loadkit.MedianOf(ss, sample.ValueOf)
}
