//go:build linux

package edge

import (
	"net/netip"
	"testing"
)

func TestTupleSet(t *testing.T) {
	a := udpTuple{netip.MustParseAddrPort("198.51.100.1:45001"), netip.MustParseAddrPort("198.51.100.10:9002")}
	otherOrigin := udpTuple{a.local, netip.MustParseAddrPort("198.51.100.11:9002")}
	var s tupleSet
	steps := []struct {
		op   string
		t    udpTuple
		want bool
	}{
		{"claim", a, true},
		{"claim", a, false},          // the clash the edge redials on
		{"claim", otherOrigin, true}, // same local port, another origin: a distinct pair
		{"release", a, true},
		{"claim", a, true},
	}
	for i, st := range steps {
		switch st.op {
		case "claim":
			if got := s.claim(st.t); got != st.want {
				t.Errorf("step %d: claim(%v) = %v, want %v", i, st.t, got, st.want)
			}
		case "release":
			s.release(st.t)
		}
	}
}
