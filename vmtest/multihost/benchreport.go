//go:build linux

package main

// The bench's report: per state and quantity, the median over rounds of
// the ratio to the baseline (none) of the same round, with its spread.

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// quantity is one measured figure and the target for it (0: none).
type quantity struct {
	name           string
	get            func(measurement) float64
	higherIsBetter bool
	target         float64
	unit           func(float64) string
}

func quantities() []quantity {
	perSec := func(v float64) string { return fmt.Sprintf("%.0f/s", v) }
	dur := func(v float64) string { return time.Duration(v).Round(time.Microsecond).String() }
	dur1 := func(v float64) string { return fmt.Sprintf("%.1fµs", v/1e3) }
	nanos := func(v float64) string { return fmt.Sprintf("%.0f ns", v) }
	return []quantity{
		{"connections/s", func(m measurement) float64 { return m.connsPerSec }, true, 0.03, perSec},
		{"CPU/connection", func(m measurement) float64 { return float64(m.cpuPerConn) }, false, 0, dur1},
		{"latency p50", func(m measurement) float64 { return float64(m.p50) }, false, 0, dur},
		{"latency p90", func(m measurement) float64 { return float64(m.p90) }, false, 0, dur},
		{"getpeername TOA", func(m measurement) float64 { return m.peerTOA }, false, 0, nanos},
		{"getpeername no-TOA", func(m measurement) float64 { return m.peerNoTOA }, false, 0.10, nanos},
	}
}

// summarize prints a result line per state other than the baseline and
// quantity.
func summarize(results map[state][]measurement, states []state) {
	for _, s := range states[1:] {
		for _, q := range quantities() {
			summary(s, results[s], results[stateNone], q)
		}
	}
	line := "result failed connections (connect or read errors, all windows):"
	for _, s := range states {
		errs := 0
		for _, m := range results[s] {
			errs += m.errs
		}
		line += fmt.Sprintf(" %s %d", s, errs)
	}
	fmt.Println(line)
}

// summary prints the result line of q for state s: the median ratio s/none
// over rounds (each round's s against the same round's none), its range,
// the medians of the values, and the verdict against q's target.
func summary(s state, got, base []measurement, q quantity) {
	ratios := make([]float64, len(got))
	for i := range got {
		ratios[i] = q.get(got[i]) / q.get(base[i])
	}
	slices.Sort(ratios)
	med := median(ratios)
	cost := med - 1 // how much worse than without a receiver
	if q.higherIsBetter {
		cost = 1 - med
	}
	verdict := fmt.Sprintf("costs %+.1f%% (no target)", 100*cost)
	if q.target > 0 {
		verdict = fmt.Sprintf("costs %+.1f%%: within the %.0f%% target", 100*cost, 100*q.target)
		if cost > q.target {
			verdict = fmt.Sprintf("costs %+.1f%%: NOT within the %.0f%% target", 100*cost, 100*q.target)
		}
	}
	fmt.Printf("result %-4s %-18s %s/none median %.3f (min %.3f, max %.3f over %d rounds; medians %s %s, %s none): %s\n",
		s, q.name, s, med, ratios[0], ratios[len(ratios)-1], len(ratios),
		q.unit(median(sortedOf(got, q.get))), s, q.unit(median(sortedOf(base, q.get))), verdict)
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func sortedOf(ms []measurement, f func(measurement) float64) []float64 {
	out := make([]float64, len(ms))
	for i, m := range ms {
		out[i] = f(m)
	}
	slices.Sort(out)
	return out
}
