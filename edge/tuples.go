//go:build linux

package edge

import (
	"net/netip"
	"sync"
)

// udpTuple is the address pair of one connected upstream UDP socket.
type udpTuple struct{ local, remote netip.AddrPort }

// tupleSet records the address pairs of the edge's upstream UDP sockets.
//
// Those sockets carry SO_REUSEADDR so that a forwarding port a flow happens
// to hold can still be bound by a new rule (see internal/sockopt). On UDP
// that option has a cost: the kernel treats every port held only by
// SO_REUSEADDR sockets as free, so two flows to the same origin can be
// given the same local port, and the origin's replies for both then reach
// one socket (the other client gets nothing, or worse, the wrong answer).
// The edge is the only program whose sockets can collide that way with its
// own, so it keeps the pairs it holds and redials on a clash.
type tupleSet struct {
	mu sync.Mutex
	m  map[udpTuple]struct{}
}

// claim records t and reports whether it was free.
func (s *tupleSet) claim(t udpTuple) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.m[t]; taken {
		return false
	}
	if s.m == nil {
		s.m = map[udpTuple]struct{}{}
	}
	s.m[t] = struct{}{}
	return true
}

// release forgets t.
func (s *tupleSet) release(t udpTuple) {
	s.mu.Lock()
	delete(s.m, t)
	s.mu.Unlock()
}
