package listener

import (
	"net"
	"time"
)

// Header reads are bounded by a clock the listener runs, not by a read
// deadline per connection: two SetReadDeadline calls (one to arm, one to
// clear) cost more than the rest of a handshake. The clock ticks
// handshakeTicks times per HeaderTimeout; a connection still in its
// handshake more than handshakeTicks ticks after it arrived gets a read
// deadline in the past, which ends its header read with a timeout. A slow
// peer therefore gets between HeaderTimeout and (1+1/handshakeTicks) x
// HeaderTimeout.
const handshakeTicks = 8

// aLongTimeAgo is a read deadline that has passed: it ends a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// handshake is the bookkeeping of one connection whose header is being read.
type handshake struct {
	born    uint64 // l.tick when the connection arrived
	expired bool   // its read deadline was set to aLongTimeAgo
}

// runClock advances l.tick and expires overdue handshakes until Close.
func (l *Listener) runClock() {
	defer l.wg.Done()
	t := time.NewTicker(max(l.pol.HeaderTimeout/handshakeTicks, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.expireHandshakes()
		case <-l.done:
			return
		}
	}
}

// expireHandshakes ends the header reads that took more than HeaderTimeout.
func (l *Listener) expireHandshakes() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tick++
	for c, h := range l.inFlight {
		if h.expired || l.tick-h.born <= handshakeTicks {
			continue
		}
		h.expired = true
		l.inFlight[c] = h
		// An error here means the connection is closed: its read ends anyway.
		_ = c.SetReadDeadline(aLongTimeAgo)
	}
}

// track registers a connection in handshake, for the clock and for Close,
// and counts its goroutine in l.wg; it closes nothing and returns false
// when the listener is closed. Both happen under l.mu, which Close takes
// after closing done: a connection tracked here is closed by Close, and
// the l.wg.Add comes before Close's wait.
func (l *Listener) track(raw net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		return false
	default:
		l.inFlight[raw] = handshake{born: l.tick}
		l.wg.Add(1)
		return true
	}
}

// untrack ends a connection's handshake. When the clock expired it, the
// deadline it set is cleared, so the connection reads normally if it is
// kept (a header complete just in time, or an optional header); clearing
// fails only on a closed connection.
func (l *Listener) untrack(raw net.Conn) error {
	l.mu.Lock()
	h := l.inFlight[raw]
	delete(l.inFlight, raw)
	l.mu.Unlock()
	if h.expired {
		return raw.SetReadDeadline(time.Time{})
	}
	return nil
}
