//go:build linux

package origin

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"testing"
)

func newTestPool(t testing.TB, persist bool, hosts ...string) *Pool {
	t.Helper()
	p, err := NewPool(hostsOf(hosts...), persist, Check{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var fourHosts = []string{"192.0.2.1", "192.0.2.2", "2001:db8::3", "198.51.100.4"}

func TestPersistSameClientSameOrigin(t *testing.T) {
	p1 := newTestPool(t, true, fourHosts...)
	reversed := slices.Clone(fourHosts)
	slices.Reverse(reversed)
	p2 := newTestPool(t, true, reversed...) // same hosts, other order

	for i := range 2000 {
		c := clientAddr(i)
		first := p1.Candidates(c)
		if len(first) != len(fourHosts) {
			t.Fatalf("client %v: %d candidates, want %d", c, len(first), len(fourHosts))
		}
		for range 3 {
			if again := p1.Candidates(c); !slices.Equal(again, first) {
				t.Fatalf("client %v: %v then %v", c, first, again)
			}
		}
		if other := p2.Candidates(c); !slices.Equal(other, first) {
			t.Fatalf("client %v: pool 1 %v, pool 2 %v", c, first, other)
		}
	}
}

func TestPersistMappedClientIsSameClient(t *testing.T) {
	p := newTestPool(t, true, fourHosts...)
	v4 := netip.MustParseAddr("203.0.113.9")
	mapped := netip.AddrFrom16(v4.As16())
	if a, b := p.Candidates(v4), p.Candidates(mapped); !slices.Equal(a, b) {
		t.Fatalf("%v -> %v, %v -> %v", v4, a, mapped, b)
	}
}

// TestHashStable pins the hash: changing it would send every persistent
// client to another origin after an upgrade.
func TestHashStable(t *testing.T) {
	tests := []struct {
		addr string
		want uint64
	}{
		{"192.0.2.1", 0xd9c70e8395f6d4f6},
		{"::ffff:192.0.2.1", 0xd9c70e8395f6d4f6},
		{"2001:db8::1", 0xf97161b7a3be1c14},
		{"::", 0x88201fb960ff6465},
	}
	for _, tt := range tests {
		if got := hashAddr(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("hashAddr(%s) = %#x, want %#x", tt.addr, got, tt.want)
		}
		b := netip.MustParseAddr(tt.addr).As16()
		h := fnv.New64a()
		h.Write(b[:])
		if got := hashAddr(netip.MustParseAddr(tt.addr)); got != h.Sum64() {
			t.Errorf("hashAddr(%s) = %#x, FNV-1a 64 is %#x", tt.addr, got, h.Sum64())
		}
	}
	if got, want := weight(1, 2), uint64(0x0b5181c509f8d8ce); got != want {
		t.Errorf("weight(1, 2) = %#x, want %#x", got, want)
	}
	p := newTestPool(t, true, fourHosts...)
	firsts := []struct {
		client, want string
	}{
		{"10.0.0.1", "192.0.2.2"},
		{"10.0.0.2", "2001:db8::3"},
		{"203.0.113.77", "192.0.2.2"},
		{"2001:db8:ffff::1", "192.0.2.2"},
	}
	for _, f := range firsts {
		got := p.Candidates(netip.MustParseAddr(f.client))[0]
		if got.String() != f.want {
			t.Errorf("client %s: first origin %v, want %s", f.client, got, f.want)
		}
	}
}

func TestRendezvousAddRemoveHost(t *testing.T) {
	const clients = 10000
	five := append(slices.Clone(fourHosts), "203.0.113.5")
	added := netip.MustParseAddr("203.0.113.5")
	p4 := newTestPool(t, true, fourHosts...)
	p5 := newTestPool(t, true, five...)

	moved := 0
	for i := range clients {
		c := clientAddr(i)
		before, after := p4.Candidates(c)[0], p5.Candidates(c)[0]
		if before == after {
			continue
		}
		moved++
		if after != added {
			t.Fatalf("client %v moved from %v to %v, not to the new host", c, before, after)
		}
	}
	frac := float64(moved) / clients
	t.Logf("adding a 5th host moved %.1f%% of clients", 100*frac)
	if frac < 0.10 || frac > 0.30 {
		t.Errorf("adding a 5th host moved %.1f%% of clients, want 10%%..30%%", 100*frac)
	}

	// Removing a host moves its clients only.
	p3 := newTestPool(t, true, fourHosts[1:]...)
	removed := netip.MustParseAddr(fourHosts[0])
	for i := range clients {
		c := clientAddr(i)
		before, after := p4.Candidates(c)[0], p3.Candidates(c)[0]
		if before != after && before != removed {
			t.Fatalf("client %v of %v moved to %v when %v was removed", c, before, after, removed)
		}
	}
}

func TestSpread(t *testing.T) {
	const calls = 10000
	tests := []struct {
		name    string
		persist bool
		down    []string
		// each healthy host must be first for a share within [lo, hi]
		lo, hi float64
	}{
		{"persist all up", true, nil, 0.22, 0.28},
		{"persist one down", true, []string{"192.0.2.2"}, 0.30, 0.37},
		{"round robin all up", false, nil, 0.25, 0.25},
		{"round robin one down", false, []string{"2001:db8::3"}, 0.333, 0.334},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestPool(t, tt.persist, fourHosts...)
			for _, d := range tt.down {
				p.MarkDown(netip.MustParseAddr(d), errors.New("test"))
			}
			count := map[netip.Addr]int{}
			for i := range calls {
				c := p.Candidates(clientAddr(i))
				count[c[0]]++
				for _, d := range tt.down {
					if c[len(c)-1] != netip.MustParseAddr(d) {
						t.Fatalf("down host %s not last in %v", d, c)
					}
				}
			}
			healthy := len(fourHosts) - len(tt.down)
			if len(count) != healthy {
				t.Fatalf("first choices %v, want %d distinct hosts", count, healthy)
			}
			for a, n := range count {
				if slices.Contains(tt.down, a.String()) {
					t.Errorf("down host %v chosen first %d times", a, n)
				}
				share := float64(n) / calls
				if share < tt.lo || share > tt.hi {
					t.Errorf("%v first for %.3f of calls, want %.3f..%.3f", a, share, tt.lo, tt.hi)
				}
			}
		})
	}
}

func TestRoundRobinRotates(t *testing.T) {
	p := newTestPool(t, false, "192.0.2.1", "192.0.2.2", "192.0.2.3")
	c := netip.MustParseAddr("10.1.1.1")
	want := [][]netip.Addr{
		addrs("192.0.2.1", "192.0.2.2", "192.0.2.3"),
		addrs("192.0.2.2", "192.0.2.3", "192.0.2.1"),
		addrs("192.0.2.3", "192.0.2.1", "192.0.2.2"),
		addrs("192.0.2.1", "192.0.2.2", "192.0.2.3"),
	}
	for i, w := range want {
		if got := p.Candidates(c); !slices.Equal(got, w) {
			t.Fatalf("call %d: %v, want %v", i, got, w)
		}
	}
}

func TestMarkDownAndUpAtOnce(t *testing.T) {
	for _, persist := range []bool{true, false} {
		t.Run(fmt.Sprint("persist=", persist), func(t *testing.T) {
			p := newTestPool(t, persist, fourHosts...)
			c := clientAddr(7)
			first := p.Candidates(c)[0]

			p.MarkDown(first, errors.New("connection refused"))
			got := p.Candidates(c)
			if got[len(got)-1] != first || got[0] == first {
				t.Fatalf("after MarkDown(%v): %v, want it last", first, got)
			}
			if h, _ := healthyOf(p, first); h {
				t.Fatalf("status of %v still healthy", first)
			}
			for _, s := range p.Status() {
				if s.Addr == first && s.LastErr != "connection refused" {
					t.Errorf("LastErr %q", s.LastErr)
				}
			}

			p.MarkUp(first)
			if h, _ := healthyOf(p, first); !h {
				t.Fatalf("status of %v not healthy after MarkUp", first)
			}
			if persist {
				if got := p.Candidates(c)[0]; got != first {
					t.Fatalf("after MarkUp the client goes to %v, want back to %v", got, first)
				}
			}
		})
	}
}

func TestPersistDownMovesOnlyItsClients(t *testing.T) {
	p := newTestPool(t, true, fourHosts...)
	const clients = 4000
	before := make([][]netip.Addr, clients)
	for i := range clients {
		before[i] = p.Candidates(clientAddr(i))
	}
	down := netip.MustParseAddr(fourHosts[2])
	p.MarkDown(down, nil)
	for i := range clients {
		after := p.Candidates(clientAddr(i))
		want := slices.DeleteFunc(slices.Clone(before[i]), func(a netip.Addr) bool { return a == down })
		want = append(want, down)
		if !slices.Equal(after, want) {
			t.Fatalf("client %v: %v before, %v after %v went down, want %v", clientAddr(i), before[i], after, down, want)
		}
	}
}

func TestAllDownStillCandidates(t *testing.T) {
	for _, persist := range []bool{true, false} {
		p := newTestPool(t, persist, fourHosts...)
		for _, h := range fourHosts {
			p.MarkDown(netip.MustParseAddr(h), errors.New("unreachable"))
		}
		got := p.Candidates(clientAddr(1))
		if len(got) != len(fourHosts) {
			t.Fatalf("persist=%v: all down gives %v, want all %d as last resort", persist, got, len(fourHosts))
		}
		if persist {
			if again := p.Candidates(clientAddr(1)); !slices.Equal(got, again) {
				t.Fatalf("all down, persist: %v then %v", got, again)
			}
		}
	}
}

func TestMarkUnknownAddressIgnored(t *testing.T) {
	p := newTestPool(t, true, fourHosts...)
	before := p.Status()
	p.MarkDown(netip.MustParseAddr("192.0.2.99"), errors.New("x"))
	p.MarkUp(netip.MustParseAddr("192.0.2.99"))
	p.MarkDown(netip.Addr{}, nil)
	if after := p.Status(); !slices.Equal(before, after) {
		t.Fatalf("status changed: %v -> %v", before, after)
	}
}

func TestAppendCandidatesReusesBuffer(t *testing.T) {
	p := newTestPool(t, true, fourHosts...)
	buf := make([]netip.Addr, 0, 8)
	got := p.AppendCandidates(buf, clientAddr(3))
	if &got[:1][0] != &buf[:1][0] {
		t.Fatal("buffer not reused")
	}
	if want := p.Candidates(clientAddr(3)); !slices.Equal(got, want) {
		t.Fatalf("AppendCandidates %v, Candidates %v", got, want)
	}
	allocs := testing.AllocsPerRun(100, func() {
		buf = p.AppendCandidates(buf[:0], clientAddr(3))
	})
	if allocs != 0 {
		t.Errorf("AppendCandidates allocates %v times", allocs)
	}
	allocs = testing.AllocsPerRun(100, func() { _ = p.Candidates(clientAddr(3)) })
	if allocs > 1 {
		t.Errorf("Candidates allocates %v times, want at most 1", allocs)
	}
}

func TestManyHosts(t *testing.T) {
	// More hosts than the on-stack buffer: the same rules apply.
	var hosts []string
	for i := range 40 {
		hosts = append(hosts, fmt.Sprintf("192.0.2.%d", i+1))
	}
	p := newTestPool(t, true, hosts...)
	p.MarkDown(netip.MustParseAddr("192.0.2.5"), nil)
	for i := range 200 {
		c := clientAddr(i)
		got := p.Candidates(c)
		if len(got) != 40 || got[39] != netip.MustParseAddr("192.0.2.5") {
			t.Fatalf("client %v: %v", c, got)
		}
		hc := hashAddr(c)
		for j := 1; j < 39; j++ {
			if weight(hc, hashAddr(got[j-1])) < weight(hc, hashAddr(got[j])) {
				t.Fatalf("client %v: not in weight order: %v", c, got)
			}
		}
	}
}

func BenchmarkCandidates(b *testing.B) {
	hosts := []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4",
		"2001:db8::5", "2001:db8::6", "2001:db8::7", "2001:db8::8"}
	for _, persist := range []bool{true, false} {
		b.Run(fmt.Sprint("persist=", persist), func(b *testing.B) {
			p := newTestPool(b, persist, hosts...)
			p.MarkDown(netip.MustParseAddr("192.0.2.3"), nil)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_ = p.Candidates(clientAddr(i & 1023))
				i++
			}
		})
	}
	b.Run("append/persist=true", func(b *testing.B) {
		p := newTestPool(b, true, hosts...)
		buf := make([]netip.Addr, 0, len(hosts))
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			buf = p.AppendCandidates(buf[:0], clientAddr(i&1023))
			i++
		}
	})
	b.Run("parallel/persist=true", func(b *testing.B) {
		p := newTestPool(b, true, hosts...)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				_ = p.Candidates(clientAddr(i & 1023))
				i++
			}
		})
	})
}
