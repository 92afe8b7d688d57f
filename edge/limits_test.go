//go:build linux

package edge

import (
	"fmt"
	"net/netip"
	"testing"
)

// TestFlowLimits drives flowLimits through sequences of new flows (by
// client address) and ends, checking each admission: refused at the
// per-address bound, and at the server's bound served by giving up the
// least recently used flow of the busiest address.
func TestFlowLimits(t *testing.T) {
	type step struct {
		open   string // client address of a new flow; "" ends flow end
		end    int    // index of the flow to end (with open == "")
		reason string // admit's refusal, "" when admitted
		victim int    // index of the flow given up, -1 for none
	}
	for _, tc := range []struct {
		name       string
		max, perIP int
		steps      []step
	}{
		{"per address bound", 10, 2, []step{
			{open: "192.0.2.1", victim: -1},
			{open: "192.0.2.1", victim: -1},
			{open: "192.0.2.1", reason: "per_ip_limit", victim: -1},
			{open: "192.0.2.2", victim: -1},
			{end: 0, victim: -1},
			{open: "192.0.2.1", victim: -1},
		}},
		{"evicts the busiest address's least recently used", 3, 0, []step{
			{open: "192.0.2.1", victim: -1},
			{open: "192.0.2.1", victim: -1},
			{open: "192.0.2.2", victim: -1},
			{open: "192.0.2.3", victim: 0},
		}},
		{"a newcomer of the busiest address evicts its own", 2, 0, []step{
			{open: "192.0.2.1", victim: -1},
			{open: "192.0.2.1", victim: -1},
			{open: "192.0.2.1", victim: 0},
			{open: "192.0.2.1", victim: 1},
		}},
		{"no bound per address", 100, -1, []step{
			{open: "192.0.2.1", victim: -1},
			{open: "192.0.2.1", victim: -1},
			{open: "192.0.2.1", victim: -1},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := newFlowLimits(tc.max, tc.perIP)
			var flows []*udpFlow
			for i, st := range tc.steps {
				if st.open == "" {
					lim.remove(flows[st.end])
					flows = append(flows, nil)
					continue
				}
				f := &udpFlow{client: netip.AddrPortFrom(netip.MustParseAddr(st.open), uint16(1000+i))}
				f.last.Store(int64(i)) // opened in order, so least recent first
				victim, reason := lim.admit(f)
				if reason != st.reason {
					t.Fatalf("step %d: reason %q, want %q", i, reason, st.reason)
				}
				want := (*udpFlow)(nil)
				if st.victim >= 0 {
					want = flows[st.victim]
				}
				if victim != want {
					t.Fatalf("step %d: victim %v, want %v", i, describe(victim), describe(want))
				}
				f.ready.Store(reason == "")
				flows = append(flows, f)
			}
			if lim.n > tc.max {
				t.Errorf("%d flows admitted, above the bound %d", lim.n, tc.max)
			}
		})
	}
}

func describe(f *udpFlow) string {
	if f == nil {
		return "none"
	}
	return fmt.Sprint(f.client)
}

// TestFlowLimitsRemoveIdempotent: ending a flow given up already, or never
// admitted, changes nothing.
func TestFlowLimitsRemoveIdempotent(t *testing.T) {
	lim := newFlowLimits(1, 0)
	a := &udpFlow{client: netip.MustParseAddrPort("192.0.2.1:1")}
	b := &udpFlow{client: netip.MustParseAddrPort("192.0.2.2:1")}
	if _, r := lim.admit(a); r != "" {
		t.Fatal(r)
	}
	a.ready.Store(true)
	if v, r := lim.admit(b); r != "" || v != a {
		t.Fatalf("admit at the bound: %v, %q; want a given up", describe(v), r)
	}
	lim.remove(a) // given up already
	lim.remove(&udpFlow{client: netip.MustParseAddrPort("192.0.2.3:1")})
	if lim.n != 1 || len(lim.srcs) != 1 || len(lim.busy) != 1 {
		t.Fatalf("n %d, %d sources, heap %d; want b alone", lim.n, len(lim.srcs), len(lim.busy))
	}
	lim.remove(b)
	if lim.n != 0 || len(lim.srcs) != 0 || len(lim.busy) != 0 {
		t.Fatalf("n %d, %d sources, heap %d after every flow ended", lim.n, len(lim.srcs), len(lim.busy))
	}
	opening := &udpFlow{client: netip.MustParseAddrPort("192.0.2.1:1")}
	if v, r := lim.admit(opening); r != "" || v != nil {
		t.Fatalf("admit when empty: %v, %q", describe(v), r)
	}
	// At the bound with the only flow still being opened (not ready):
	// nothing can be given up, the newcomer is refused.
	if v, r := lim.admit(&udpFlow{client: netip.MustParseAddrPort("192.0.2.2:1")}); r != "flow_limit" || v != nil {
		t.Fatalf("admit at the bound with no ready flow: %v, %q; want flow_limit", describe(v), r)
	}
}

// TestIPCounts: acquire stops at the bound per address, release frees a
// place, and a bound of 0 or less bounds nothing.
func TestIPCounts(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	for _, tc := range []struct {
		limit int
		want  []bool // results of acquire(a) in a row
	}{
		{2, []bool{true, true, false, false}},
		{1, []bool{true, false}},
		{0, []bool{true, true, true}},
	} {
		c := newIPCounts(tc.limit)
		for i, w := range tc.want {
			if got := c.acquire(a); got != w {
				t.Fatalf("limit %d: acquire %d = %v, want %v", tc.limit, i, got, w)
			}
		}
		if !c.acquire(b) {
			t.Fatalf("limit %d: another address refused", tc.limit)
		}
		c.release(a)
		if !c.acquire(a) {
			t.Fatalf("limit %d: no place after a release", tc.limit)
		}
	}
}
