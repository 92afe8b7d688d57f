//go:build linux

package edge

import (
	"container/heap"
	"hash/maphash"
	"net/netip"
	"sync"
)

// flowLimits admits the UDP flows of a server: at most perIP per client
// address (all ports and rules together) and at most max in all. At max a
// newcomer is not refused: the least recently used flow of the address
// holding the most flows is given up for it (so one address cannot lock
// every other out by holding all the flows).
type flowLimits struct {
	mu    sync.Mutex
	max   int // of the whole server; 0 until setMax
	perIP int // <= 0: no bound
	n     int // flows admitted: open or being opened
	srcs  map[netip.Addr]*flowSource
	busy  sourceHeap // the sources, most flows first
}

// flowSource is one client address's admitted flows.
type flowSource struct {
	addr  netip.Addr
	flows map[*udpFlow]struct{}
	idx   int // in busy
}

func newFlowLimits(max, perIP int) *flowLimits {
	return &flowLimits{max: max, perIP: perIP, srcs: map[netip.Addr]*flowSource{}}
}

// setMax changes the server's bound; flows above it stay until they end.
func (t *flowLimits) setMax(max int) {
	t.mu.Lock()
	t.max = max
	t.mu.Unlock()
}

// admit registers f, a new flow of f.client, unless its address is at the
// per-address bound (reason "per_ip_limit"). At the server's bound it
// unregisters the flow to give up and returns it as victim, for the
// caller to close (outside any lock), or refuses f ("flow_limit") when
// no flow can be given up (every flow is still being opened).
func (t *flowLimits) admit(f *udpFlow) (victim *udpFlow, reason string) {
	a := f.client.Addr()
	t.mu.Lock()
	defer t.mu.Unlock()
	src := t.srcs[a]
	if src != nil && t.perIP > 0 && len(src.flows) >= t.perIP {
		return nil, "per_ip_limit"
	}
	if t.n >= t.max {
		if victim = t.lruOfBusiest(); victim == nil {
			return nil, "flow_limit"
		}
		t.removeLocked(victim)
		src = t.srcs[a] // gone if the victim was its only flow
	}
	if src == nil {
		src = &flowSource{addr: a, flows: map[*udpFlow]struct{}{}}
		t.srcs[a] = src
		heap.Push(&t.busy, src)
	}
	src.flows[f] = struct{}{}
	heap.Fix(&t.busy, src.idx)
	t.n++
	return victim, ""
}

// lruOfBusiest returns the least recently used open flow of the source
// with the most flows, or nil.
func (t *flowLimits) lruOfBusiest() *udpFlow {
	if len(t.busy) == 0 {
		return nil
	}
	var lru *udpFlow
	for f := range t.busy[0].flows {
		if f.ready.Load() && (lru == nil || f.last.Load() < lru.last.Load()) {
			lru = f
		}
	}
	return lru
}

// remove unregisters f; a flow given up already (or never admitted) is
// left alone.
func (t *flowLimits) remove(f *udpFlow) {
	t.mu.Lock()
	t.removeLocked(f)
	t.mu.Unlock()
}

func (t *flowLimits) removeLocked(f *udpFlow) {
	src := t.srcs[f.client.Addr()]
	if src == nil {
		return
	}
	if _, ok := src.flows[f]; !ok {
		return
	}
	delete(src.flows, f)
	t.n--
	if len(src.flows) == 0 {
		heap.Remove(&t.busy, src.idx)
		delete(t.srcs, src.addr)
		return
	}
	heap.Fix(&t.busy, src.idx)
}

// sourceHeap is a max-heap of sources by their number of flows.
type sourceHeap []*flowSource

func (h sourceHeap) Len() int           { return len(h) }
func (h sourceHeap) Less(i, j int) bool { return len(h[i].flows) > len(h[j].flows) }
func (h sourceHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *sourceHeap) Push(x any) {
	s := x.(*flowSource)
	s.idx = len(*h)
	*h = append(*h, s)
}
func (h *sourceHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return s
}

// ipCounts bounds the TCP connections of each client address, in shards
// so that connections arriving on many CPUs do not queue on one lock.
type ipCounts struct {
	limit  int // <= 0: no bound
	seed   maphash.Seed
	shards [16]ipShard
}

type ipShard struct {
	mu sync.Mutex
	n  map[netip.Addr]int
}

func newIPCounts(limit int) *ipCounts {
	c := &ipCounts{limit: limit, seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].n = map[netip.Addr]int{}
	}
	return c
}

func (c *ipCounts) shard(a netip.Addr) *ipShard {
	return &c.shards[maphash.Comparable(c.seed, a)%uint64(len(c.shards))]
}

// acquire counts a connection of a, unless a is at the bound.
func (c *ipCounts) acquire(a netip.Addr) bool {
	sh := c.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if c.limit > 0 && sh.n[a] >= c.limit {
		return false
	}
	sh.n[a]++
	return true
}

// release gives back a connection acquire counted.
func (c *ipCounts) release(a netip.Addr) {
	sh := c.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.n[a] <= 1 {
		delete(sh.n, a)
		return
	}
	sh.n[a]--
}
