//go:build linux

package unwrap

import (
	"io"
	"net"
	"sync"
	"time"
)

// connQueue is the inner listener of a TCP relay's listener.Listener: the
// loops accept every connection from the kernel, relay those whose header
// they could check at once themselves, and queue the others here, where
// the listener takes them to apply its whole policy (untrusted peers, a
// header still on its way, errors and their counters).
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}

	mu     sync.Mutex
	closed bool
}

func newConnQueue(addr net.Addr, depth int) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn, depth), done: make(chan struct{})}
}

// put queues c without waiting; false when the queue is full or closed
// (c is then the caller's).
func (q *connQueue) put(c net.Conn) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	select {
	case q.ch <- c:
		return true
	default:
		return false
	}
}

// Accept returns the next queued connection (net.Listener).
func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

// Close ends Accept and closes the connections still queued.
func (q *connQueue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	close(q.done)
	for {
		select {
		case c := <-q.ch:
			c.Close()
		default:
			return nil
		}
	}
}

// Addr is the relay's listening address (net.Listener).
func (q *connQueue) Addr() net.Addr { return q.addr }

// prefixConn is a connection whose first bytes a loop already read: Read
// returns them before the socket's. It hides the socket's SyscallConn, so
// that the listener reads the header through Read.
type prefixConn struct {
	tc   *net.TCPConn
	rest []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.rest) > 0 {
		n := copy(b, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	return c.tc.Read(b)
}

// WriteTo writes the bytes read ahead, then the socket's through its own
// WriteTo (splice).
func (c *prefixConn) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(c.rest) > 0 {
		n, err := w.Write(c.rest)
		total += int64(n)
		c.rest = c.rest[n:]
		if err != nil {
			return total, err
		}
	}
	n, err := c.tc.WriteTo(w)
	return total + n, err
}

func (c *prefixConn) ReadFrom(r io.Reader) (int64, error) { return c.tc.ReadFrom(r) }
func (c *prefixConn) Write(b []byte) (int, error)         { return c.tc.Write(b) }
func (c *prefixConn) Close() error                        { return c.tc.Close() }
func (c *prefixConn) CloseWrite() error                   { return c.tc.CloseWrite() }
func (c *prefixConn) CloseRead() error                    { return c.tc.CloseRead() }
func (c *prefixConn) SetLinger(sec int) error             { return c.tc.SetLinger(sec) }
func (c *prefixConn) LocalAddr() net.Addr                 { return c.tc.LocalAddr() }
func (c *prefixConn) RemoteAddr() net.Addr                { return c.tc.RemoteAddr() }
func (c *prefixConn) SetDeadline(t time.Time) error       { return c.tc.SetDeadline(t) }
func (c *prefixConn) SetReadDeadline(t time.Time) error   { return c.tc.SetReadDeadline(t) }
func (c *prefixConn) SetWriteDeadline(t time.Time) error  { return c.tc.SetWriteDeadline(t) }
