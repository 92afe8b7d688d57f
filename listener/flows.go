package listener

import (
	"net/netip"
	"sync"
	"time"

	"github.com/realip/realip/wire"
)

// flowInfo is what a UDP flow fixed when its first datagram opened it.
type flowInfo struct {
	// opened is the header protocol of the first datagram (wire.SPP or
	// wire.PPv2): the only one the flow takes afterwards.
	opened wire.Proto
	// src is whom the payload of a FramingFirstDatagram PROXY v2 flow
	// belongs to (direct when its header was LOCAL).
	src Source
}

// flow is a UDP flow: one socket address of a proxy, fixed by its first
// datagram.
type flow struct {
	proxy      netip.AddrPort
	info       flowInfo
	lastSeen   time.Time
	prev, next *flow // LRU list, most recent at head
}

// flowTable maps a proxy's socket address to its flow. It is bounded by
// size (least recently used evicted) and by idle time (checked on lookup and
// at the tail on insert). A flow is only ever created whole by open and
// never changed afterwards: nothing a later datagram carries re-points it.
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
func (t *flowTable) lookup(proxy netip.AddrPort, now time.Time) (flowInfo, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.live(proxy, now)
	if f == nil {
		return flowInfo{}, false
	}
	return f.info, true
}

// touch marks the live flow of proxy used at now (a reply went out on it).
func (t *flowTable) touch(proxy netip.AddrPort, now time.Time) {
	t.mu.Lock()
	t.live(proxy, now)
	t.mu.Unlock()
}

// live returns the flow of proxy, moved to the front and stamped now, or
// nil (after expiring it) when it is missing or idle. t.mu is held.
func (t *flowTable) live(proxy netip.AddrPort, now time.Time) *flow {
	f := t.byProxy[proxy]
	if f == nil {
		return nil
	}
	if now.Sub(f.lastSeen) > t.idle {
		t.remove(f)
		t.stats.flowsExpired.Add(1)
		return nil
	}
	f.lastSeen = now
	t.moveToFront(f)
	return f
}

// open records the flow of proxy, which has none, as info. The caller reads
// the socket under PacketConn.readMu, so no other datagram of proxy can open
// it in between; a flow already there is left as it is.
func (t *flowTable) open(proxy netip.AddrPort, info flowInfo, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.live(proxy, now) != nil {
		return
	}
	t.expireTail(now)
	for len(t.byProxy) >= t.max && t.tail != nil {
		t.remove(t.tail)
		t.stats.flowsEvicted.Add(1)
	}
	f := &flow{proxy: proxy, info: info, lastSeen: now}
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
