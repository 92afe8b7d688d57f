package listener

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// dialFrom connects to l from the loopback address from and sends b.
func dialFrom(t *testing.T, l net.Listener, from string, b []byte) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	return c
}

// isClosedByPeer reports whether the listener closed c (EOF or reset).
func isClosedByPeer(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !isTimeout(err)
}

func stillOpen(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	return isTimeout(err)
}

func waitStats(t *testing.T, l *Listener, pending, parked int64) {
	t.Helper()
	waitFor(t, func() bool { s := l.Stats(); return s.Pending == pending && s.Parked == parked })
}

// Issue 18.2: stalled trusted peers beyond MaxPending are parked, not
// waited for, so a connection whose header is complete is accepted at once;
// nor are they closed early (they would only reconnect).
func TestStalledPeersAreParked(t *testing.T) {
	l := newTestListener(t, Config{Trusted: loopback, HeaderTimeout: time.Hour, MaxPending: 4})
	a := serveAccepts(t, l)
	var stalls []net.Conn
	for range 6 {
		stalls = append(stalls, dialSend(t, l, []byte("PROXY ")))
	}
	waitStats(t, l, 4, 2)
	dialSend(t, l, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\nhi"))
	if c := a.next(t); c.Client() != client4 || readN(t, c, 2) != "hi" {
		t.Fatalf("client %v", c.Client())
	}
	for i, c := range stalls {
		if !stillOpen(t, c) {
			t.Fatalf("stall %d was closed", i)
		}
	}
	if s := l.Stats(); s.TotalRejected() != 0 {
		t.Fatalf("rejected %v", s.Rejected)
	}
}

// A parked handshake gets the next free slot of its address's share, and
// its header is read on from the bytes it had sent before.
func TestPendingPerSourceAndParkedHeader(t *testing.T) {
	l := newTestListener(t, Config{Trusted: loopback, HeaderTimeout: time.Hour, MaxPending: 8, MaxPendingPerSource: 2})
	a := serveAccepts(t, l)
	first := dialFrom(t, l, "127.0.0.1", []byte("PROXY "))
	dialFrom(t, l, "127.0.0.1", []byte("PROXY "))
	waitStats(t, l, 2, 0)
	parked := dialFrom(t, l, "127.0.0.1", []byte("PROXY TCP4 192.0.2.7 "))
	waitStats(t, l, 2, 1)
	dialFrom(t, l, "127.0.0.2", []byte("PROXY "))
	waitStats(t, l, 3, 1) // another address is not held back by the first's share
	first.Close()         // its handshake ends (truncated), the slot goes to the parked one
	waitStats(t, l, 3, 0)
	if _, err := parked.Write([]byte("198.51.100.1 40000 443\r\nhi")); err != nil {
		t.Fatal(err)
	}
	if c := a.next(t); c.Client() != client4 || readN(t, c, 2) != "hi" {
		t.Fatalf("client %v", c.Client())
	}
	if s := l.Stats(); s.Rejected[ReasonTruncated] != 1 || s.TotalRejected() != 1 {
		t.Fatalf("rejected %v", s.Rejected)
	}
}

func TestParkedHandshakesShedAndExpire(t *testing.T) {
	t.Run("shed beyond 4 x MaxPending", func(t *testing.T) {
		l := newTestListener(t, Config{Trusted: loopback, HeaderTimeout: time.Hour, MaxPending: 1})
		serveAccepts(t, l)
		var conns []net.Conn
		for i := range 6 {
			conns = append(conns, dialSend(t, l, []byte("PROXY ")))
			waitFor(t, func() bool { s := l.Stats(); return s.Pending+s.Parked+int64(s.Rejected[ReasonShed]) == int64(i+1) })
		}
		waitStats(t, l, 1, 4)
		if n := l.Stats().Rejected[ReasonShed]; n != 1 {
			t.Fatalf("shed %d, want 1", n)
		}
		if !isClosedByPeer(t, conns[1]) || !stillOpen(t, conns[0]) || !stillOpen(t, conns[2]) {
			t.Fatal("the oldest parked handshake was not the one shed")
		}
	})
	t.Run("expire after HeaderTimeout", func(t *testing.T) {
		l := newTestListener(t, Config{Trusted: loopback, HeaderTimeout: 100 * time.Millisecond, MaxPending: 1})
		serveAccepts(t, l)
		a, b := dialSend(t, l, []byte("PROXY ")), dialSend(t, l, []byte("PROXY "))
		waitFor(t, func() bool { return l.Stats().Rejected[ReasonTimeout] == 2 })
		if !isClosedByPeer(t, a) || !isClosedByPeer(t, b) {
			t.Fatal("timed-out handshakes left open")
		}
		waitStats(t, l, 0, 0)
	})
	t.Run("parked and silent, optional: served direct", func(t *testing.T) {
		l := newTestListener(t, Config{Trusted: loopback, HeaderTimeout: 100 * time.Millisecond, MaxPending: 1, Optional: true, NoDeferAccept: true})
		acc := serveAccepts(t, l)
		dialSend(t, l, nil)
		dialSend(t, l, nil)
		for range 2 {
			if c := acc.next(t); c.Via() != 0 || c.Client().Addr() != netip.MustParseAddr("127.0.0.1") {
				t.Fatalf("served as %v via %v", c.Client(), c.Via())
			}
		}
	})
}
