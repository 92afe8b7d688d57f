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

// metricInfo names a metric in the report.
type metricInfo struct{ name, title string }

var metricOrder = []metricInfo{
	{"tcp_MBps", "TCP throughput, MB/s"},
	{"conn_per_s", "new TCP connections/s"},
	{"udp_rt_per_s", "UDP requests/s"},
}

type sample struct {
	rep        string
	value      float64
	usPerOp    float64
	op         string
	relayCores float64
	genCores   float64
	hasCPU     bool
	notes      []string // errors=N, lost=N, bad=N when not zero
}

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
	relays    []string                       // every relay, in input order
	data      map[string]map[string][]sample // metric -> relay -> samples
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
	r := &report{subject: *subject, baselines: splitList(*base), ceiling: *ceiling, target: *target,
		data: map[string]map[string][]sample{}}
	for _, v := range splitList(*variants) {
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
	var in io.Reader = os.Stdin
	if fs.NArg() > 0 {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	if err := r.read(in); err != nil {
		return err
	}
	r.order()
	for _, mi := range metricOrder {
		if byRelay := r.data[mi.name]; len(byRelay) > 0 {
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
	for _, k := range []string{"errors", "lost", "bad"} {
		if kv[k] != "" && kv[k] != "0" {
			s.notes = append(s.notes, k+"="+kv[k])
		}
	}
	return kv["relay"], kv["metric"], s, true
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
		vals := values(ss, func(s sample) float64 { return s.value })
		rng := fmt.Sprintf("[%.0f .. %.0f]", slices.Min(vals), slices.Max(vals))
		cpu, perOp := "-", "-"
		if ss[0].hasCPU {
			cpu = fmt.Sprintf("%.2f cores", median(values(ss, func(s sample) float64 { return s.relayCores })))
			perOp = fmt.Sprintf("%.2fµs/%s", median(values(ss, func(s sample) float64 { return s.usPerOp })), ss[0].op)
		}
		gen := fmt.Sprintf("%.2f", median(values(ss, func(s sample) float64 { return s.genCores })))
		var notes []string
		for _, s := range ss {
			if len(s.notes) > 0 {
				notes = append(notes, "rep "+s.rep+": "+strings.Join(s.notes, " "))
			}
		}
		fmt.Printf("  %-18s %10.0f  %-19s %10s %13s %8s  %s\n", relay, median(vals), rng, cpu, perOp, gen, strings.Join(notes, ", "))
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
	if best := r.bestBaseline(byRelay); best != "" {
		line := r.ratioLine(mi.title, subj, best, byRelay[best], r.target)
		fmt.Printf("  -> %s / best baseline: %s\n", r.subject, line.text)
		cpu := "-"
		if e, b, ok := cpuPerOp(subj, byRelay[best]); ok {
			fmt.Printf("  -> relay CPU per %s: %s %.2fµs, %s %.2fµs (%.2fx)\n", subj[0].op, r.subject, e, best, b, e/b)
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
	if !a[0].hasCPU || !b[0].hasCPU {
		return 0, 0, false
	}
	per := func(s sample) float64 { return s.usPerOp }
	return median(values(a, per)), median(values(b, per)), true
}

type ratio struct{ text, row string }

// ratioLine compares samples a with samples b of relay bName: the ratio of
// medians, the range of same-round ratios, and the verdict for target (0:
// none).
func (r *report) ratioLine(figure string, a []sample, bName string, b []sample, target float64) ratio {
	am, bm := medianOf(a), medianOf(b)
	x := am / bm
	var pairs []float64
	for _, s := range a {
		for _, t := range b {
			if s.rep == t.rep && t.value > 0 {
				pairs = append(pairs, s.value/t.value)
			}
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

// bestBaseline is the baseline with the highest median ("" if none has
// samples).
func (r *report) bestBaseline(byRelay map[string][]sample) string {
	best, bestMed := "", 0.0
	for _, b := range r.baselines {
		if ss := byRelay[b]; len(ss) > 0 {
			if m := medianOf(ss); best == "" || m > bestMed {
				best, bestMed = b, m
			}
		}
	}
	return best
}

func medianOf(ss []sample) float64 {
	return median(values(ss, func(s sample) float64 { return s.value }))
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
