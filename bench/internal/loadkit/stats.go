package loadkit

import (
	"slices"
	"strings"
)

// Median is the median of v (the mean of the middle two for an even
// count), 0 for none. v is not modified.
func Median(v []float64) float64 {
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

// Values is f of every sample, in order.
func Values(ss []Sample, f func(Sample) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

// MedianOf is the median of f over the samples.
func MedianOf(ss []Sample, f func(Sample) float64) float64 {
	return Median(Values(ss, f))
}

// ValueOf is s.Value, for Values and MedianOf (as Sample.ValueOf).
func (s Sample) ValueOf() float64 { return s.Value }

// USPerOpOf is s.USPerOp, for Values and MedianOf.
func (s Sample) USPerOpOf() float64 { return s.USPerOp }

// RelayCoresOf is s.RelayCores, for Values and MedianOf.
func (s Sample) RelayCoresOf() float64 { return s.RelayCores }

// GenCoresOf is s.GenCores, for Values and MedianOf.
func (s Sample) GenCoresOf() float64 { return s.GenCores }

// BestBaseline is the baseline whose samples in byRelay have the best
// median value (the highest, or the lowest with lower), and that median.
// Ties go to the earlier baseline; it is "" when no baseline has samples.
func BestBaseline(byRelay map[string][]Sample, baselines []string, lower bool) (string, float64) {
	best, bestMed := "", 0.0
	for _, b := range baselines {
		ss := byRelay[b]
		if len(ss) == 0 {
			continue
		}
		m := MedianOf(ss, Sample.ValueOf)
		if best == "" || (!lower && m > bestMed) || (lower && m < bestMed) {
			best, bestMed = b, m
		}
	}
	return best, bestMed
}

// Pair is a sample of each of two relays from the same repetition.
type Pair struct{ A, B Sample }

// SameRep is every pair of a sample of a and one of b with the same
// repetition number, in the order of a, then of b.
func SameRep(a, b []Sample) []Pair {
	var out []Pair
	for _, x := range a {
		for _, y := range b {
			if x.Rep == y.Rep {
				out = append(out, Pair{x, y})
			}
		}
	}
	return out
}

// Row is what a report's table shows of one relay's samples of a metric.
type Row struct {
	Median, Min, Max float64 // of the values
	// HasCPU: the first sample has the relay's CPU time; then RelayCores
	// and USPerOp are medians, per Op.
	HasCPU              bool
	RelayCores, USPerOp float64
	Op                  string
	GenCores            float64 // median
	// Notes are the samples' notes: "rep N: note note, rep M: note".
	Notes string
}

// Summarize is the row of the samples (a zero Row for none).
func Summarize(ss []Sample) Row {
	if len(ss) == 0 {
		return Row{}
	}
	vals := Values(ss, Sample.ValueOf)
	r := Row{Median: Median(vals), Min: slices.Min(vals), Max: slices.Max(vals),
		HasCPU: ss[0].HasCPU, Op: ss[0].Op, GenCores: MedianOf(ss, Sample.GenCoresOf)}
	if r.HasCPU {
		r.RelayCores, r.USPerOp = MedianOf(ss, Sample.RelayCoresOf), MedianOf(ss, Sample.USPerOpOf)
	}
	var notes []string
	for _, s := range ss {
		if len(s.Notes) > 0 {
			notes = append(notes, "rep "+s.Rep+": "+strings.Join(s.Notes, " "))
		}
	}
	r.Notes = strings.Join(notes, ", ")
	return r
}
