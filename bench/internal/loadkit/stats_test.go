package loadkit

import (
	"slices"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{7}, 7},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{5, 5, 1, 9, 5}, 5},
		{[]float64{-1, 1}, 0},
	} {
		in := slices.Clone(tc.in)
		if got := Median(in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("Median(%v) reordered its argument: %v", tc.in, in)
		}
	}
}

func TestMedianOf(t *testing.T) {
	ss := []Sample{{Value: 1, USPerOp: 30, RelayCores: 0.5, GenCores: 0.1}, {Value: 3, USPerOp: 10, RelayCores: 0.7, GenCores: 0.3},
		{Value: 2, USPerOp: 20, RelayCores: 0.6, GenCores: 0.2}}
	for _, tc := range []struct {
		name string
		f    func(Sample) float64
		want float64
	}{
		{"value", Sample.ValueOf, 2},
		{"µs per op", Sample.USPerOpOf, 20},
		{"relay cores", Sample.RelayCoresOf, 0.6},
		{"gen cores", Sample.GenCoresOf, 0.2},
	} {
		if got := MedianOf(ss, tc.f); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := Values(ss, Sample.ValueOf); !slices.Equal(got, []float64{1, 3, 2}) {
		t.Errorf("Values: %v, want the values in order", got)
	}
}

func TestBestBaseline(t *testing.T) {
	byRelay := map[string][]Sample{
		"haproxy": {{Value: 100}, {Value: 120}, {Value: 110}},
		"nginx":   {{Value: 130}, {Value: 90}, {Value: 95}},
		"edge":    {{Value: 500}},
		"tie":     {{Value: 110}},
	}
	for _, tc := range []struct {
		name      string
		baselines []string
		lower     bool
		want      string
		wantMed   float64
	}{
		{"higher is better", []string{"haproxy", "nginx"}, false, "haproxy", 110},
		{"lower is better", []string{"haproxy", "nginx"}, true, "nginx", 95},
		{"the subject is no baseline", []string{"nginx"}, false, "nginx", 95},
		{"a baseline without samples", []string{"go-mmproxy", "nginx"}, false, "nginx", 95},
		{"ties go to the first", []string{"haproxy", "tie"}, false, "haproxy", 110},
		{"none with samples", []string{"go-mmproxy"}, false, "", 0},
		{"no baselines", nil, true, "", 0},
	} {
		best, med := BestBaseline(byRelay, tc.baselines, tc.lower)
		if best != tc.want || med != tc.wantMed {
			t.Errorf("%s: %q %v, want %q %v", tc.name, best, med, tc.want, tc.wantMed)
		}
	}
}

func TestSameRep(t *testing.T) {
	a := []Sample{{Rep: "1", Value: 1}, {Rep: "2", Value: 2}, {Rep: "3", Value: 3}}
	b := []Sample{{Rep: "3", Value: 30}, {Rep: "1", Value: 10}, {Rep: "1", Value: 11}, {Rep: "4", Value: 40}}
	var got [][2]float64
	for _, p := range SameRep(a, b) {
		if p.A.Rep != p.B.Rep {
			t.Errorf("pair of reps %s and %s", p.A.Rep, p.B.Rep)
		}
		got = append(got, [2]float64{p.A.Value, p.B.Value})
	}
	want := [][2]float64{{1, 10}, {1, 11}, {3, 30}}
	if !slices.Equal(got, want) {
		t.Errorf("pairs %v, want %v", got, want)
	}
	if p := SameRep(a, nil); p != nil {
		t.Errorf("pairs with nothing: %v", p)
	}
}

func TestSummarize(t *testing.T) {
	cpu := []Sample{
		{Rep: "1", Value: 10, HasCPU: true, USPerOp: 3, RelayCores: 0.3, GenCores: 0.1, Op: "MB"},
		{Rep: "2", Value: 30, HasCPU: true, USPerOp: 1, RelayCores: 0.1, GenCores: 0.3, Op: "MB", Notes: []string{"errors=2"}},
		{Rep: "3", Value: 20, HasCPU: true, USPerOp: 2, RelayCores: 0.2, GenCores: 0.2, Op: "MB", Notes: []string{"lost=1", "bad=4"}},
	}
	for _, tc := range []struct {
		name string
		ss   []Sample
		want Row
	}{
		{"none", nil, Row{}},
		{"with CPU", cpu, Row{Median: 20, Min: 10, Max: 30, HasCPU: true, RelayCores: 0.2, USPerOp: 2, Op: "MB", GenCores: 0.2,
			Notes: "rep 2: errors=2, rep 3: lost=1 bad=4"}},
		{"without CPU", []Sample{{Rep: "1", Value: 5, GenCores: 0.5}, {Rep: "2", Value: 7, GenCores: 0.7, RelayCores: 9}},
			Row{Median: 6, Min: 5, Max: 7, GenCores: 0.6}},
	} {
		if got := Summarize(tc.ss); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
