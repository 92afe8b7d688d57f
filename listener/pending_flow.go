package listener

import (
	"bytes"
	"net"
	"net/netip"
	"time"

	"github.com/realip/realip/wire"
)

// handOff finds a header that is still on its way a goroutine of its own
// (awaitHeader), or parks it (see pending.go); hr holds what arrived so
// far. It never waits. Everything is decided under l.mu, which Close
// takes after closing done: a handshake tracked here is closed by Close,
// and the l.wg.Add of a goroutine comes before Close's wait.
func (l *Listener) handOff(raw net.Conn, peer netip.AddrPort, hr *headerReader) {
	h := &handshake{raw: raw, peer: peer}
	var victim *handshake
	l.mu.Lock()
	select {
	case <-l.done:
		l.mu.Unlock()
		l.putReader(hr)
		raw.Close()
		return
	default:
	}
	h.born = l.tick
	if l.hasSlot(peer.Addr()) {
		l.slot(h)
		l.mu.Unlock()
		hr.src.wait = true // from now on reads wait, bounded by the clock
		go l.awaitHeader(raw, peer, hr)
		return
	}
	if n := hr.br.Buffered(); n > maxParkedBytes {
		victim = h
	} else {
		read, _ := hr.br.Peek(n)
		h.read = bytes.Clone(read)
		victim = l.park(h)
	}
	l.mu.Unlock()
	l.putReader(hr)
	if victim != nil {
		l.shed(victim)
	}
}

// park queues h for a slot and returns the handshake pushed out to make
// room, if any; l.mu is held.
func (l *Listener) park(h *handshake) (victim *handshake) {
	if l.pending.parked.n >= 4*l.pol.MaxPending {
		victim = l.pending.parked.oldest
		l.unpark(victim)
	}
	l.pending.parked.push(h)
	l.stats.parked.Add(1)
	return victim
}

func (l *Listener) unpark(h *handshake) {
	l.pending.parked.remove(h)
	l.stats.parked.Add(-1)
}

// shed closes a handshake that found no room and counts it.
func (l *Listener) shed(h *handshake) {
	l.stats.rejected[ReasonShed].Add(1)
	l.pol.Logger.Warn("realip: connection shed", "peer", h.peer, "reason", ReasonShed.String(),
		"err", "too many headers pending: MaxPending slots taken and 4 x MaxPending parked")
	h.raw.Close()
}

// awaitHeader finishes a handshake in a goroutine of its own and queues
// the connection for Accept; its slot then goes to a parked handshake.
func (l *Listener) awaitHeader(raw net.Conn, peer netip.AddrPort, hr *headerReader) {
	defer l.wg.Done()
	h, err := wire.ReadProxyHeader(hr.br)
	next, uerr := l.untrack(raw)
	if next != nil {
		l.startParked(next)
	}
	if uerr != nil && err == nil {
		err = uerr
	}
	if c := l.finish(raw, peer, hr, h, err); c != nil {
		l.enqueue(c)
	}
}

// startParked runs the goroutine of a parked handshake that got a slot,
// reading first what it had sent before.
func (l *Listener) startParked(h *handshake) {
	hr := l.readers.Get().(*headerReader)
	hr.reset(h.raw, true)
	hr.src.prefix, h.read = h.read, nil
	go l.awaitHeader(h.raw, h.peer, hr)
}

// untrack ends a connection's handshake and hands its slot to the oldest
// parked handshake that may take it, which it returns (slotted: the caller
// starts its goroutine). When the clock expired the connection, the
// deadline it set is cleared, so it reads normally if kept (a header
// complete just in time, or an optional header); clearing fails only on a
// closed connection.
func (l *Listener) untrack(raw net.Conn) (next *handshake, err error) {
	l.mu.Lock()
	h := l.pending.byConn[raw]
	if h != nil {
		l.unslot(h)
	}
	next = l.nextParked()
	l.mu.Unlock()
	if h != nil && h.expired {
		err = raw.SetReadDeadline(time.Time{})
	}
	return next, err
}

// nextParked moves the oldest parked handshake whose address is under its
// share into a slot; l.mu is held.
func (l *Listener) nextParked() *handshake {
	select {
	case <-l.done:
		return nil // Close closes the parked ones
	default:
	}
	for h := l.pending.parked.oldest; h != nil && l.pending.slotted.n < l.pol.MaxPending; h = h.next {
		if l.hasSlot(h.peer.Addr()) {
			l.unpark(h)
			l.slot(h)
			return h
		}
	}
	return nil
}

// expireHandshakes ends the header reads that took more than
// HeaderTimeout, oldest first: a slotted one's read ends with a deadline
// in the past; a parked one is given a goroutine beyond MaxPending (with
// that deadline, so it ends at once) to be finished like any other.
func (l *Listener) expireHandshakes() {
	var overdue []*handshake
	l.mu.Lock()
	l.tick++
	select {
	case <-l.done:
		l.mu.Unlock()
		return // Close closed them all; no goroutine may start now
	default:
	}
	for h := l.pending.slotted.oldest; h != nil && l.tick-h.born > handshakeTicks; h = h.next {
		if !h.expired {
			l.expire(h)
		}
	}
	for h := l.pending.parked.oldest; h != nil && l.tick-h.born > handshakeTicks; h = l.pending.parked.oldest {
		l.unpark(h)
		l.slot(h)
		l.expire(h)
		overdue = append(overdue, h)
	}
	l.mu.Unlock()
	for _, h := range overdue {
		l.startParked(h)
	}
}

func (l *Listener) expire(h *handshake) {
	h.expired = true
	// An error here means the connection is closed: its read ends anyway.
	_ = h.raw.SetReadDeadline(aLongTimeAgo)
}
