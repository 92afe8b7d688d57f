package listener

import (
	"net"
	"net/netip"
)

// Handshakes whose header is still on its way. A slow peer must never
// stall anyone else, and closing it early only makes it reconnect (a storm
// of reconnections costs everyone more than the stalls themselves):
//
//   - A connection whose header is complete at accept needs no slot at all
//     (admit reads it at once).
//   - One that is incomplete gets a slot (a goroutine reading its header)
//     when fewer than MaxPending are taken and fewer than
//     MaxPendingPerSource by its address: a trusted prefix is often a
//     whole network, and one host must not take every slot.
//   - Otherwise it is parked: the bytes read so far are kept (at most
//     maxParkedBytes), no goroutine runs, accepting goes on at once. A
//     freed slot goes to the oldest parked handshake whose address is
//     under its share; a parked handshake whose HeaderTimeout ran out is
//     finished like any other (a timeout, or a direct client with
//     Optional).
//   - Beyond 4 x MaxPending parked, the oldest parked one is closed to
//     make room, counted as ReasonShed.

// maxParkedBytes bounds what a parked handshake keeps: more than a whole
// v1 header and any v2 header without large TLVs. A connection that sent
// more and still has no complete header is shed when it finds no slot.
const maxParkedBytes = 1024

// handshake is one connection whose header is being waited for, in a list
// oldest first: in a slot (a goroutine reads it) or parked.
type handshake struct {
	raw        net.Conn
	peer       netip.AddrPort
	born       uint64 // l.tick when the connection arrived
	expired    bool   // its read deadline was set to aLongTimeAgo
	read       []byte // parked: the bytes read so far
	prev, next *handshake
}

// handshakeList is a list of handshakes, oldest first.
type handshakeList struct {
	oldest, newest *handshake
	n              int
}

func (q *handshakeList) push(h *handshake) {
	h.prev, h.next = q.newest, nil
	if q.newest != nil {
		q.newest.next = h
	} else {
		q.oldest = h
	}
	q.newest = h
	q.n++
}

func (q *handshakeList) remove(h *handshake) {
	if h.prev != nil {
		h.prev.next = h.next
	} else {
		q.oldest = h.next
	}
	if h.next != nil {
		h.next.prev = h.prev
	} else {
		q.newest = h.prev
	}
	h.prev, h.next = nil, nil
	q.n--
}

func (q *handshakeList) closeAll() {
	for h := q.oldest; h != nil; h = h.next {
		h.raw.Close()
	}
}

// pendingSet is every handshake of a listener. Guarded by Listener.mu.
type pendingSet struct {
	slotted  handshakeList
	parked   handshakeList
	byConn   map[net.Conn]*handshake // slotted ones
	bySource map[netip.Addr]int      // slotted ones
}

func newPendingSet() pendingSet {
	return pendingSet{byConn: make(map[net.Conn]*handshake), bySource: make(map[netip.Addr]int)}
}

// closePending closes every connection in handshake (Close): the slotted
// ones' goroutines then end; the parked ones have none and are dropped.
// l.mu is held.
func (l *Listener) closePending() {
	l.pending.slotted.closeAll()
	l.pending.parked.closeAll()
	l.stats.parked.Add(-int64(l.pending.parked.n))
	l.pending.parked = handshakeList{}
}

// hasSlot reports whether a handshake from source may take a slot.
func (l *Listener) hasSlot(source netip.Addr) bool {
	return l.pending.slotted.n < l.pol.MaxPending && l.pending.bySource[source] < l.pol.MaxPendingPerSource
}

// slot gives h a slot and counts its goroutine in l.wg; l.mu is held.
func (l *Listener) slot(h *handshake) {
	l.pending.slotted.push(h)
	l.pending.byConn[h.raw] = h
	l.pending.bySource[h.peer.Addr()]++
	l.stats.pending.Add(1)
	l.wg.Add(1)
}

// unslot takes h out of its slot; l.mu is held.
func (l *Listener) unslot(h *handshake) {
	l.pending.slotted.remove(h)
	delete(l.pending.byConn, h.raw)
	if l.pending.bySource[h.peer.Addr()]--; l.pending.bySource[h.peer.Addr()] <= 0 {
		delete(l.pending.bySource, h.peer.Addr())
	}
	l.stats.pending.Add(-1)
}
