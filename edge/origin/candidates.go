//go:build linux

package origin

import (
	"net/netip"
	"slices"
)

// snapshot is an immutable view of the pool's addresses for Candidates.
type snapshot struct {
	entries []entry // healthy first, each part in address order
	healthy int     // number of healthy entries
	index   map[netip.Addr]int
}

type entry struct {
	addr    netip.Addr
	hash    uint64 // hashAddr(addr)
	healthy bool
}

// Candidates returns the addresses to try for a connection or new flow of
// client, best first: the healthy addresses, then the unhealthy ones as a
// last resort. With persist on, the order comes from rendezvous hashing of
// the client address, so a client keeps its origin while that origin is
// healthy; with persist off, the healthy addresses take turns at the
// front. The result is empty only while no host has an address; it is a
// new slice the caller may keep.
func (p *Pool) Candidates(client netip.Addr) []netip.Addr {
	s := p.snap.Load()
	if len(s.entries) == 0 {
		return nil
	}
	return p.appendCandidates(make([]netip.Addr, 0, len(s.entries)), s, client)
}

// AppendCandidates is Candidates appending to dst, for callers that reuse
// a buffer.
func (p *Pool) AppendCandidates(dst []netip.Addr, client netip.Addr) []netip.Addr {
	return p.appendCandidates(dst, p.snap.Load(), client)
}

func (p *Pool) appendCandidates(dst []netip.Addr, s *snapshot, client netip.Addr) []netip.Addr {
	n := len(s.entries)
	if n == 0 {
		return dst
	}
	if !p.persist {
		k := p.rr.Add(1) - 1
		dst = appendRotated(dst, s.entries[:s.healthy], k)
		return appendRotated(dst, s.entries[s.healthy:], k)
	}
	hc := hashAddr(client)
	var buf [16]ranked
	r := buf[:0]
	if n > len(buf) {
		r = make([]ranked, 0, n)
	}
	for i := range s.entries {
		r = append(r, ranked{w: weight(hc, s.entries[i].hash), i: int32(i)})
	}
	sortRanked(r[:s.healthy])
	sortRanked(r[s.healthy:])
	for _, x := range r {
		dst = append(dst, s.entries[x.i].addr)
	}
	return dst
}

// appendRotated appends the addresses of es starting at index k mod len(es).
func appendRotated(dst []netip.Addr, es []entry, k uint64) []netip.Addr {
	if len(es) == 0 {
		return dst
	}
	start := int(k % uint64(len(es)))
	for _, e := range es[start:] {
		dst = append(dst, e.addr)
	}
	for _, e := range es[:start] {
		dst = append(dst, e.addr)
	}
	return dst
}

type ranked struct {
	w uint64
	i int32
}

// sortRanked sorts by weight, highest first; equal weights (practically
// never) keep address order.
func sortRanked(r []ranked) {
	if len(r) > 16 {
		slices.SortStableFunc(r, func(a, b ranked) int {
			switch {
			case a.w > b.w:
				return -1
			case a.w < b.w:
				return 1
			}
			return 0
		})
		return
	}
	for i := 1; i < len(r); i++ {
		x := r[i]
		j := i
		for ; j > 0 && r[j-1].w < x.w; j-- {
			r[j] = r[j-1]
		}
		r[j] = x
	}
}

// The hash is part of the behaviour: persistent clients keep their origin
// across restarts and across edges only while it stays the same, so it
// must not change between versions (TestHashStable pins it).
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// hashAddr is FNV-1a 64 of the 16-byte form of a (an IPv4 address and its
// IPv4-mapped IPv6 form hash alike; the zone is ignored).
func hashAddr(a netip.Addr) uint64 {
	b := a.As16()
	h := uint64(fnvOffset64)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime64
	}
	return h
}

// weight is the rendezvous weight of an origin for a client, from their
// hashAddr values: the murmur3 64-bit finalizer of their xor, which
// spreads every input bit over the whole weight.
func weight(client, origin uint64) uint64 {
	x := client ^ origin
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
