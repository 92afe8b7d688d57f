//go:build linux

package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
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

type sample struct {
	rep        string
	value      float64
	usPerOp    float64
	op         string
	relayCores float64
	genCores   float64
	hasCPU     bool
	note       string // errors=N or lost=N when not zero
}

// report is what the steps of runReport share.
type report struct {
	edgeName  string                         // the relay compared with the baselines
	baselines []string                       // baseline relays
	variants  []string                       // variants of the edge relay
	relays    []string                       // every relay, in the order of the input
	data      map[string]map[string][]sample // metric -> relay -> samples
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
	var in io.Reader = os.Stdin
	if fs.NArg() > 0 {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	r := &report{edgeName: *edgeName, data: map[string]map[string][]sample{}}
	if err := r.read(in); err != nil {
		return err
	}
	r.baselines = splitList(*base)
	r.variants = splitList(*variantList)
	var verdicts []verdict
	for _, mi := range metricOrder {
		byRelay := r.data[mi.name]
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

// read collects the result lines of in.
func (r *report) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		relay, metric, s, ok := parseResult(sc.Text())
		if !ok {
			continue
		}
		if r.data[metric] == nil {
			r.data[metric] = map[string][]sample{}
		}
		if !slices.Contains(r.relays, relay) {
			r.relays = append(r.relays, relay)
		}
		r.data[metric][relay] = append(r.data[metric][relay], s)
	}
	return sc.Err()
}

// parseResult reads a result line; ok is false for any other line and for
// a result without a numeric value.
func parseResult(line string) (relay, metric string, s sample, ok bool) {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != "result" {
		return "", "", s, false
	}
	kv := map[string]string{}
	for _, x := range f[1:] {
		if k, v, ok := strings.Cut(x, "="); ok {
			kv[k] = v
		}
	}
	v, err := strconv.ParseFloat(kv["value"], 64)
	if err != nil {
		return "", "", s, false
	}
	s = sample{rep: kv["rep"], value: v, op: kv["op"]}
	if x, err := strconv.ParseFloat(kv["relay_us_per_op"], 64); err == nil {
		s.usPerOp, s.hasCPU = x, true
	}
	s.relayCores, _ = strconv.ParseFloat(kv["relay_cores"], 64)
	s.genCores, _ = strconv.ParseFloat(kv["gen_cores"], 64)
	for _, k := range []string{"errors", "lost"} {
		if kv[k] != "" && kv[k] != "0" {
			s.note = k + "=" + kv[k]
		}
	}
	return kv["relay"], kv["metric"], s, true
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
		vals := values(ss, func(s sample) float64 { return s.value })
		rng := fmt.Sprintf("["+mi.format+" .. "+mi.format+"]", slices.Min(vals), slices.Max(vals))
		cpu, perOp, gen := "", "", ""
		if ss[0].hasCPU {
			cpu = fmt.Sprintf("%.2f cores", median(values(ss, func(s sample) float64 { return s.relayCores })))
			perOp = fmt.Sprintf("%.1fµs/%s", median(values(ss, func(s sample) float64 { return s.usPerOp })), ss[0].op)
			gen = fmt.Sprintf("%.2f", median(values(ss, func(s sample) float64 { return s.genCores })))
		}
		var notes []string
		for _, s := range ss {
			if s.note != "" {
				notes = append(notes, "rep "+s.rep+": "+s.note)
			}
		}
		fmt.Printf("  %-16s %10s  %-21s %10s %14s %8s  %s\n", relay, fmt.Sprintf(mi.format, median(vals)), rng, cpu, perOp, gen, strings.Join(notes, ", "))
	}
}

// compare prints the edge relay's ratio to the best baseline (a speed-up:
// >1 is better, also for latencies), overall and per rep, its CPU cost
// against that baseline's, and each variant's ratio to it. ok is false
// (nothing printed) without the edge relay or a baseline.
func (r *report) compare(mi metricInfo, byRelay map[string][]sample) (v verdict, ok bool) {
	edge := byRelay[r.edgeName]
	best, bestMed := r.bestBaseline(mi, byRelay)
	if len(edge) == 0 || best == "" {
		return v, false
	}
	edgeMed := median(values(edge, func(s sample) float64 { return s.value }))
	ratio := mi.speed(edgeMed, bestMed)
	var pairs []float64
	for _, e := range edge {
		for _, b := range byRelay[best] {
			if b.rep == e.rep {
				pairs = append(pairs, mi.speed(e.value, b.value))
			}
		}
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
	if edge[0].hasCPU && byRelay[best][0].hasCPU {
		e := median(values(edge, func(s sample) float64 { return s.usPerOp }))
		b := median(values(byRelay[best], func(s sample) float64 { return s.usPerOp }))
		cpu = fmt.Sprintf("%.2fx", e/b)
		fmt.Printf("  -> relay CPU per %s: %s %.1fµs, %s %.1fµs (%s)\n", edge[0].op, r.edgeName, e, best, b, cpu)
	}
	r.printVariants(mi, byRelay, edgeMed)
	return verdict{mi.title, best, fmt.Sprintf("%.2fx", ratio), pr, word, cpu}, true
}

// bestBaseline is the baseline with the best median ("" if none has
// samples).
func (r *report) bestBaseline(mi metricInfo, byRelay map[string][]sample) (string, float64) {
	best, bestMed := "", 0.0
	for _, b := range r.baselines {
		ss := byRelay[b]
		if len(ss) == 0 {
			continue
		}
		m := median(values(ss, func(s sample) float64 { return s.value }))
		if best == "" || (!mi.lower && m > bestMed) || (mi.lower && m < bestMed) {
			best, bestMed = b, m
		}
	}
	return best, bestMed
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
			vm := median(values(v, func(s sample) float64 { return s.value }))
			line := fmt.Sprintf("  -> %s vs %s: %.2fx", x, r.edgeName, mi.speed(vm, edgeMed))
			if v[0].hasCPU && edge[0].hasCPU {
				line += fmt.Sprintf(", CPU per %s %.2fx", v[0].op,
					median(values(v, func(s sample) float64 { return s.usPerOp }))/median(values(edge, func(s sample) float64 { return s.usPerOp })))
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

func values(ss []sample, f func(sample) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
