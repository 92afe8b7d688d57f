package listener

import "time"

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
