package listener

import (
	"errors"
	"net"
	"time"
)

// Loop mode, for inner listeners that a deadline cannot wake: a goroutine
// of the listener accepts from inner ahead of Accept and queues what it
// admits; Accept takes from the queue. The queue (MaxPending deep) holds
// the loop back when Accept does not keep up, and the kernel's backlog
// absorbs the rest; a header still on its way never holds it back
// (pending.go).

// acceptQueued is Accept in loop mode.
func (l *Listener) acceptQueued() (net.Conn, error) {
	// A connection already waiting costs a plain receive, not a select
	// over every channel below.
	select {
	case c := <-l.ready:
		l.stats.accepted[c.via].Add(1)
		return c, nil
	default:
	}
	select {
	case c := <-l.ready:
		l.stats.accepted[c.via].Add(1)
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.fatal:
		return nil, l.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		raw, err := l.inner.Accept()
		if err != nil {
			if !l.acceptFailed(err, &backoff) {
				return
			}
			continue
		}
		backoff = 0
		if c := l.admit(raw); c != nil {
			l.enqueue(c)
		}
	}
}

// acceptFailed hands an error of the inner Accept to a caller of Accept and
// reports whether accepting should go on (after a backoff).
func (l *Listener) acceptFailed(err error, backoff *time.Duration) bool {
	if errors.Is(err, net.ErrClosed) {
		select {
		case <-l.done:
		default:
			l.err = err
			close(l.fatal)
		}
		return false
	}
	select {
	case l.errs <- err:
	case <-l.done:
		return false
	}
	*backoff = min(max(2*(*backoff), 5*time.Millisecond), time.Second)
	select {
	case <-time.After(*backoff):
		return true
	case <-l.done:
		return false
	}
}
