package listener

import (
	"net/netip"
	"sync"
	"time"
)

// flow is a PROXY v2 UDP flow: the proxy's socket address stands for one
// client from the first datagram on.
type flow struct {
	proxy      netip.AddrPort
	client     netip.AddrPort
	target     netip.AddrPort
	lastSeen   time.Time
	prev, next *flow // LRU list, most recent at head
}

// flowTable maps a proxy's socket address to its client. It is bounded by
// size (least recently used evicted) and by idle time (checked on lookup and
// at the tail on insert).
type flowTable struct {
	mu         sync.Mutex
	byProxy    map[netip.AddrPort]*flow
	head, tail *flow
	max        int
	idle       time.Duration
	stats      *counters
}

func newFlowTable(max int, idle time.Duration, stats *counters) *flowTable {
	return &flowTable{byProxy: make(map[netip.AddrPort]*flow), max: max, idle: idle, stats: stats}
}

// lookup returns the live flow of proxy and marks it used at now.
func (t *flowTable) lookup(proxy netip.AddrPort, now time.Time) (client, target netip.AddrPort, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.byProxy[proxy]
	if f == nil {
		return client, target, false
	}
	if now.Sub(f.lastSeen) > t.idle {
		t.remove(f)
		t.stats.flowsExpired.Add(1)
		return client, target, false
	}
	f.lastSeen = now
	t.moveToFront(f)
	return f.client, f.target, true
}

// update records (or moves) the flow of proxy to client.
func (t *flowTable) update(proxy, client, target netip.AddrPort, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.byProxy[proxy]; f != nil {
		f.client, f.target, f.lastSeen = client, target, now
		t.moveToFront(f)
		return
	}
	t.expireTail(now)
	for len(t.byProxy) >= t.max && t.tail != nil {
		t.remove(t.tail)
		t.stats.flowsEvicted.Add(1)
	}
	f := &flow{proxy: proxy, client: client, target: target, lastSeen: now}
	t.byProxy[proxy] = f
	t.pushFront(f)
	t.stats.flowsLive.Add(1)
}

func (t *flowTable) expireTail(now time.Time) {
	for t.tail != nil && now.Sub(t.tail.lastSeen) > t.idle {
		t.remove(t.tail)
		t.stats.flowsExpired.Add(1)
	}
}

func (t *flowTable) remove(f *flow) {
	t.unlink(f)
	delete(t.byProxy, f.proxy)
	t.stats.flowsLive.Add(-1)
}

func (t *flowTable) moveToFront(f *flow) {
	if t.head == f {
		return
	}
	t.unlink(f)
	t.pushFront(f)
}

func (t *flowTable) pushFront(f *flow) {
	f.prev, f.next = nil, t.head
	if t.head != nil {
		t.head.prev = f
	}
	t.head = f
	if t.tail == nil {
		t.tail = f
	}
}

func (t *flowTable) unlink(f *flow) {
	if f.prev != nil {
		f.prev.next = f.next
	} else {
		t.head = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else {
		t.tail = f.prev
	}
	f.prev, f.next = nil, nil
}
