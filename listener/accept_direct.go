package listener

import (
	"errors"
	"net"
	"os"
	"time"
)

// Direct mode, for the standard library's listeners, whose Accept a
// deadline interrupts: Accept takes connections from the kernel in the
// caller's goroutine and admits them there, as a plain listener would,
// with no goroutine or hand-off between CPUs per connection. A connection
// whose header is still on its way is finished by awaitHeader and queued;
// a caller blocked in inner.Accept at that moment is woken by a deadline
// in the past (wakeWaiters) and takes it from the queue. The listener owns
// inner's deadline: one set on inner by its owner is cleared at the first
// wake-up.

// deadliner is an inner listener whose Accept a deadline interrupts.
type deadliner interface {
	SetDeadline(t time.Time) error
}

// wakeable returns inner when it is a listener whose Accept does nothing
// but wait for the kernel, so that a deadline is sure to interrupt it;
// nil for any other listener (a wrapper may block where no deadline
// reaches), which gets loop mode.
func wakeable(inner net.Listener) deadliner {
	switch ln := inner.(type) {
	case *net.TCPListener:
		return ln
	case *net.UnixListener:
		return ln
	}
	return nil
}

// acceptDirect is Accept in direct mode.
func (l *Listener) acceptDirect() (net.Conn, error) {
	for {
		// Counted as waiting before the queue is looked at: a connection
		// queued after this look sees the count and wakes inner.Accept.
		l.waiting.Add(1)
		select {
		case c := <-l.ready:
			l.waiting.Add(-1)
			if len(l.ready) > 0 {
				// Another caller may have gone back to the kernel after
				// this one cleared the deadline that would have woken it.
				l.wakeWaiters()
			}
			l.stats.accepted[c.via].Add(1)
			return c, nil
		default:
		}
		raw, err := l.inner.Accept()
		l.waiting.Add(-1)
		if err != nil {
			if l.woken(err) {
				continue
			}
			return nil, l.acceptErr(err)
		}
		if c := l.admit(raw); c != nil {
			l.stats.accepted[c.via].Add(1)
			return c, nil
		}
	}
}

// woken reports whether err is the wake-up of wakeWaiters, and clears the
// deadline. A wake-up that comes while the deadline is being cleared is
// not lost: its connection was queued before, and the queue is looked at
// before the next wait (and a caller that takes a connection while more
// are queued wakes the others again). When clearing fails, inner was
// closed: the next inner.Accept says so.
func (l *Listener) woken(err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	select {
	case <-l.done:
		return false
	default:
	}
	_ = l.deadline.SetDeadline(time.Time{})
	return true
}

// acceptErr is what Accept returns for an error of inner.Accept: the
// listener's own closing reads as net.ErrClosed.
func (l *Listener) acceptErr(err error) error {
	select {
	case <-l.done:
		return net.ErrClosed
	default:
		return err
	}
}

// wakeWaiters ends the inner.Accept of callers blocked in it, after a
// connection was queued (direct mode only).
func (l *Listener) wakeWaiters() {
	if l.deadline != nil && l.waiting.Load() > 0 {
		_ = l.deadline.SetDeadline(aLongTimeAgo) // fails only once closed
	}
}
