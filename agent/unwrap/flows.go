//go:build linux

package unwrap

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/realip/realip/internal/ilist"
	"github.com/realip/realip/listener"
)

// udpFlow is one client's UDP flow: the transparent socket bound to the
// client's address and connected to the server, and where the client's
// latest datagram came from.
type udpFlow struct {
	client netip.AddrPort
	conn   *net.UDPConn

	// The fields below are guarded by the flowTable's mutex.

	// rt is where the client's latest datagram came from: replies go
	// the same way back.
	rt route
	// last is the time of the latest datagram either way.
	last time.Time
	// links place the flow in the table's LRU list, most recent at the
	// front.
	links ilist.Links[*udpFlow]
	// gone is set once the flow has left the table.
	gone bool
}

// route is where a datagram came from, and so how to answer it: through
// the edge address and with the header that src names, from the
// listening socket pc that read it.
type route struct {
	src listener.Source
	pc  *listener.PacketConn
}

// flowTable maps a client's address to its flow, with an intrusive list in
// order of activity for O(1) lookup, touch, eviction and expiry.
//
// It is bounded: inserting a flow when max flows are live evicts the least
// recently active one. A new client is always served, and the table never
// grows beyond max; an active flow is only lost when more than max clients
// are active within its idle gap, that is under a flood beyond the limit.
// Refusing new clients instead would let such a flood lock every real client
// out until the flood's flows expire.
//
// The table only keeps flows in order; closing the sockets of the flows it
// hands back is the caller's job.
type flowTable struct {
	mu       sync.Mutex
	byClient map[netip.AddrPort]*udpFlow
	lru      ilist.List[*udpFlow]
	max      int
}

// Links places f in its table's LRU list (ilist.Item).
func (f *udpFlow) Links() *ilist.Links[*udpFlow] { return &f.links }

func newFlowTable(max int) *flowTable {
	return &flowTable{byClient: make(map[netip.AddrPort]*udpFlow), max: max}
}

// lookup returns the flow of client with rt recorded as its latest route
// and now as its latest activity, or nil when the client has none.
func (t *flowTable) lookup(client netip.AddrPort, rt route, now time.Time) *udpFlow {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.byClient[client]
	if f == nil {
		return nil
	}
	f.rt = rt
	t.touchLocked(f, now)
	return f
}

// reply records a reply on f at now and returns the route to answer
// through; ok is false once f has left the table.
func (t *flowTable) reply(f *udpFlow, now time.Time) (rt route, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f.gone {
		return route{}, false
	}
	t.touchLocked(f, now)
	return f.rt, true
}

// insert adds f with rt as its route, as the most recent flow, and returns
// it as cur; when max flows were live it evicts the least recently active
// and returns it. When f's client has a flow already (another read loop
// opened it meanwhile), f is not added: that flow is cur, with rt recorded
// as in lookup.
func (t *flowTable) insert(f *udpFlow, rt route, now time.Time) (cur, evicted *udpFlow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur = t.byClient[f.client]; cur != nil {
		cur.rt = rt
		t.touchLocked(cur, now)
		return cur, nil
	}
	if len(t.byClient) >= t.max && t.lru.Back() != nil {
		evicted = t.lru.Back()
		t.removeLocked(evicted)
	}
	f.rt, f.last, f.gone = rt, now, false
	t.byClient[f.client] = f
	t.lru.PushFront(f)
	return f, evicted
}

// expire removes the flows with no activity since now-idle and appends
// them to dst.
func (t *flowTable) expire(now time.Time, idle time.Duration, dst []*udpFlow) []*udpFlow {
	t.mu.Lock()
	defer t.mu.Unlock()
	for f := t.lru.Back(); f != nil && now.Sub(f.last) >= idle; f = t.lru.Back() {
		t.removeLocked(f)
		dst = append(dst, f)
	}
	return dst
}

// remove takes f out of the table; it reports false when f had already
// left it.
func (t *flowTable) remove(f *udpFlow) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f.gone {
		return false
	}
	t.removeLocked(f)
	return true
}

// drain removes every flow and returns them.
func (t *flowTable) drain() []*udpFlow {
	t.mu.Lock()
	defer t.mu.Unlock()
	all := make([]*udpFlow, 0, len(t.byClient))
	for f := t.lru.Front(); f != nil; f = t.lru.Front() {
		t.removeLocked(f)
		all = append(all, f)
	}
	return all
}

// len returns the number of live flows.
func (t *flowTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byClient)
}

func (t *flowTable) touchLocked(f *udpFlow, now time.Time) {
	f.last = now
	t.lru.MoveToFront(f)
}

func (t *flowTable) removeLocked(f *udpFlow) {
	t.lru.Remove(f)
	delete(t.byClient, f.client)
	f.gone = true
}
