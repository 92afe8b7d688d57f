//go:build linux

package main

import (
	"flag"
	"fmt"
	"slices"

	"github.com/realip/realip/bench/internal/loadkit"
)

// metricInfo describes how a metric is shown and compared.
type metricInfo struct {
	name   string
	title  string
	lower  bool // lower is better (latency)
	format string
}

var metricOrder = []metricInfo{
	{"tcp_MBps", "TCP throughput, MB/s", false, "%.0f"},
	{"conn_per_s", "new TCP connections, conn/s", false, "%.0f"},
	{"conn_p50_us", "connection latency p50, µs", true, "%.0f"},
	{"conn_p99_us", "connection latency p99, µs", true, "%.0f"},
	{"udp_rt_per_s", "UDP echo, requests/s", false, "%.0f"},
}

type sample = loadkit.Sample

// report is what the steps of runReport share.
type report struct {
	edgeName  string   // the relay compared with the baselines
	baselines []string // baseline relays
	variants  []string // variants of the edge relay
	relays    []string // every relay, in the order of the input
}

// verdict is a row of the summary table.
type verdict struct{ metric, best, ratio, pairs, word, cpu string }

// runReport prints, per metric, every relay's median and range over the
// repetitions with its CPU cost, and realip-edge's ratio to the best
// baseline, then a summary table.
func runReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	base := fs.String("base", "haproxy,haproxy-splice,nginx", "comma-separated baseline relays")
	edgeName := fs.String("edge", "realip-edge", "the relay compared with the baselines")
	variantList := fs.String("variants", "", "comma-separated variants of the edge relay, compared with it")
	fs.Parse(args)
	res, err := loadkit.ReadResultsFile(fs.Arg(0))
	if err != nil {
		return err
	}
	r := &report{edgeName: *edgeName, relays: res.Relays,
		baselines: loadkit.SplitList(*base), variants: loadkit.SplitList(*variantList)}
	var verdicts []verdict
	for _, mi := range metricOrder {
		byRelay := res.Data[mi.name]
		if len(byRelay) == 0 {
			continue
		}
		r.printTable(mi, byRelay)
		if v, ok := r.compare(mi, byRelay); ok {
			verdicts = append(verdicts, v)
		}
	}
	r.printSummary(verdicts)
	return nil
}

// printTable prints the metric's title and a row per relay.
func (r *report) printTable(mi metricInfo, byRelay map[string][]sample) {
	better := "higher"
	if mi.lower {
		better = "lower"
	}
	fmt.Printf("\n%s (%s is better)\n", mi.title, better)
	fmt.Printf("  %-16s %10s  %-21s %10s %14s %8s  %s\n", "relay", "median", "[min .. max]", "relay CPU", "relay CPU/op", "gen CPU", "")
	for _, relay := range r.relays {
		ss := byRelay[relay]
		if len(ss) == 0 {
			continue
		}
		row := loadkit.Summarize(ss)
		rng := fmt.Sprintf("["+mi.format+" .. "+mi.format+"]", row.Min, row.Max)
		cpu, perOp, gen := "", "", ""
		if row.HasCPU {
			cpu = fmt.Sprintf("%.2f cores", row.RelayCores)
			perOp = fmt.Sprintf("%.1fµs/%s", row.USPerOp, row.Op)
			gen = fmt.Sprintf("%.2f", row.GenCores)
		}
		fmt.Printf("  %-16s %10s  %-21s %10s %14s %8s  %s\n", relay, fmt.Sprintf(mi.format, row.Median), rng, cpu, perOp, gen, row.Notes)
	}
}

// compare prints the edge relay's ratio to the best baseline (a speed-up:
// >1 is better, also for latencies), overall and per rep, its CPU cost
// against that baseline's, and each variant's ratio to it. ok is false
// (nothing printed) without the edge relay or a baseline.
func (r *report) compare(mi metricInfo, byRelay map[string][]sample) (v verdict, ok bool) {
	edge := byRelay[r.edgeName]
	best, bestMed := loadkit.BestBaseline(byRelay, r.baselines, mi.lower)
	if len(edge) == 0 || best == "" {
		return v, false
	}
	edgeMed := loadkit.MedianOf(edge, sample.ValueOf)
	ratio := mi.speed(edgeMed, bestMed)
	var pairs []float64
	for _, p := range loadkit.SameRep(edge, byRelay[best]) {
		pairs = append(pairs, mi.speed(p.A.Value, p.B.Value))
	}
	word := "yes"
	switch {
	case ratio < 0.97:
		word = "NO"
	case ratio < 1:
		word = "within 3% (noise)"
	}
	pr := ""
	if len(pairs) > 0 {
		pr = fmt.Sprintf("%.2f .. %.2f", slices.Min(pairs), slices.Max(pairs))
	}
	fmt.Printf("  -> %s vs best baseline %s: %.2fx (same-rep pairs %s); at least as fast: %s\n", r.edgeName, best, ratio, pr, word)
	cpu := ""
	if edge[0].HasCPU && byRelay[best][0].HasCPU {
		e := loadkit.MedianOf(edge, sample.USPerOpOf)
		b := loadkit.MedianOf(byRelay[best], sample.USPerOpOf)
		cpu = fmt.Sprintf("%.2fx", e/b)
		fmt.Printf("  -> relay CPU per %s: %s %.1fµs, %s %.1fµs (%s)\n", edge[0].Op, r.edgeName, e, best, b, cpu)
	}
	r.printVariants(mi, byRelay, edgeMed)
	return verdict{mi.title, best, fmt.Sprintf("%.2fx", ratio), pr, word, cpu}, true
}

// speed is how much better e is than b: e/b, or b/e where lower is better.
func (mi metricInfo) speed(e, b float64) float64 {
	if mi.lower {
		return b / e
	}
	return e / b
}

// printVariants prints each variant's ratio to the edge relay (median
// edgeMed) and, with CPU times, its CPU cost against the edge relay's.
func (r *report) printVariants(mi metricInfo, byRelay map[string][]sample, edgeMed float64) {
	edge := byRelay[r.edgeName]
	for _, x := range r.variants {
		if v := byRelay[x]; len(v) > 0 && len(edge) > 0 {
			vm := loadkit.MedianOf(v, sample.ValueOf)
			line := fmt.Sprintf("  -> %s vs %s: %.2fx", x, r.edgeName, mi.speed(vm, edgeMed))
			if v[0].HasCPU && edge[0].HasCPU {
				line += fmt.Sprintf(", CPU per %s %.2fx", v[0].Op,
					loadkit.MedianOf(v, sample.USPerOpOf)/loadkit.MedianOf(edge, sample.USPerOpOf))
			}
			fmt.Println(line)
		}
	}
}

// printSummary prints the summary table, if there is anything to sum up.
func (r *report) printSummary(verdicts []verdict) {
	if len(verdicts) == 0 {
		return
	}
	fmt.Printf("\nSummary: %s speed relative to the best baseline (>1 = faster; for latencies baseline/edge)\n", r.edgeName)
	fmt.Printf("  %-36s %-16s %7s  %-14s %-18s %s\n", "metric", "best baseline", "ratio", "pairs", "at least as fast", "relay CPU/op ratio")
	for _, v := range verdicts {
		fmt.Printf("  %-36s %-16s %7s  %-14s %-18s %s\n", v.metric, v.best, v.ratio, v.pairs, v.word, v.cpu)
	}
}
