//go:build linux

package main

import (
	"net/netip"
	"slices"
	"testing"
)

func TestParseStates(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []state
		ok   bool
	}{
		{"none,ebpf,kmod", []state{stateNone, stateEBPF, stateKmod}, true},
		{"none,ebpf", []state{stateNone, stateEBPF}, true},
		{"none, kmod", []state{stateNone, stateKmod}, true},
		{"none,ebpf,hook", []state{stateNone, stateEBPF, stateHook}, true},
		{"ebpf,none", nil, false},      // the baseline first
		{"none", nil, false},           // nothing to compare
		{"none,ebpf,ebpf", nil, false}, // twice
		{"none,bpf", nil, false},       // unknown
		{"", nil, false},
	} {
		got, err := parseStates(tc.in)
		if (err == nil) != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("parseStates(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// TestAnswerOK: the C server's line must name the client (port too) with a
// receiver, the sender (any port) without, in both accept= and peer=.
func TestAnswerOK(t *testing.T) {
	b := &bencher{client: netip.MustParseAddrPort("192.0.2.10:40000")}
	for _, tc := range []struct {
		line   string
		client bool
		want   bool
	}{
		{"accept=inet6/[::ffff:192.0.2.10]:40000 peer=inet6/[::ffff:192.0.2.10]:40000 v4=inet/192.0.2.10:40000\n", true, true},
		{"accept=inet6/[::ffff:198.51.100.1]:51000 peer=inet6/[::ffff:198.51.100.1]:51000 v4=inet/198.51.100.1:51000\n", false, true},
		{"accept=inet6/[::ffff:198.51.100.1]:51000 peer=inet6/[::ffff:198.51.100.1]:51000 v4=-\n", true, false},
		{"accept=inet6/[::ffff:192.0.2.10]:40000 peer=inet6/[::ffff:192.0.2.10]:40000 v4=-\n", false, false},
		// accept() and getpeername() disagree: wrong either way
		{"accept=inet6/[::ffff:192.0.2.10]:40000 peer=inet6/[::ffff:198.51.100.1]:51000 v4=-\n", true, false},
		{"accept=inet6/[::ffff:198.51.100.1]:51000 peer=inet6/[::ffff:192.0.2.10]:40000 v4=-\n", false, false},
		{"accept=inet6/[::ffff:192.0.2.10]:4000 peer=inet6/[::ffff:192.0.2.10]:4000 v4=-\n", true, false}, // port
		{"accept=inet6/[::ffff:192.0.2.100]:40000 peer=inet6/[::ffff:192.0.2.100]:40000 v4=-\n", true, false},
		{"accept=inet6/[::ffff:198.51.100.10]:1 peer=inet6/[::ffff:198.51.100.10]:1 v4=-\n", false, false},
		{"", true, false},
		{"accept=inet6/[::ffff:192.0.2.10]:40000\n", true, false}, // cut short
	} {
		if got := b.answerOK(tc.line, tc.client); got != tc.want {
			t.Errorf("answerOK(%q, client %v) = %v, want %v", tc.line, tc.client, got, tc.want)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{1}, 1},
		{[]float64{1, 3}, 2},
		{[]float64{1, 2, 10}, 2},
		{[]float64{0.9, 1.0, 1.1, 5}, 1.05},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
