//go:build linux

package edge

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// A relayed connection moves bytes each way in one of two modes, the way
// HAProxy's "option splice-auto" does:
//
//   - Small reads: wait until the source is readable without holding a
//     buffer (syscall.RawConn.Read), read what is there into a pooled
//     buffer and write it on. Request/response traffic (most short
//     connections) costs one read and one write per message, and the first
//     read is tried at once, before asking the poller, so a client's first
//     bytes, usually already there, cost no wait.
//   - Splice: a read that fills the buffer means a stream, so the relay
//     hands the next relayChunk bytes to io.Copy, which the kernel moves
//     with splice(2) without copying; then it goes back to small reads.
//
// Splicing tiny messages costs more than reading them (two splice calls
// and a pipe per direction per message) and Go's splice holds a pipe
// (two descriptors) for as long as it waits for data, so waiting in small
// reads also keeps an idle connection at its two sockets.
//
// Nothing here sets deadlines: idleness is the connection table's job
// (conntable.go), which reads it from the kernel.

// smallBuf is the buffer of one small read; a read that fills it switches
// the direction to splice. HAProxy's default buffer is 16 KiB too.
const smallBuf = 16 << 10

// relayChunk is how much one splice run may move before the direction goes
// back to small reads: it bounds how stale the byte counters get and how
// long a quiet stream holds a pipe.
const relayChunk = 1 << 20

var smallBufs = sync.Pool{New: func() any { return new([smallBuf]byte) }}

// adder is what a relay counts bytes with (a prometheus.Counter).
type adder interface{ Add(float64) }

// relayConn is one relayed connection: a client's and the connection to
// its origin, the counters of its rule, and its place in the connection
// table (which the table's lock guards).
type relayConn struct {
	client, upstream   *net.TCPConn
	toOrigin, toClient adder
	// onEnd runs once, after both connections are closed.
	onEnd func()

	ended   atomic.Int32 // directions done
	aborted atomic.Bool

	shard      *connShard
	prev, next *relayConn
	due        uint64 // sweep tick of the next idle check; the sweeper's
}

// run relays both ways until both directions finished (a half-close is
// passed on with CloseWrite), an error, or the connection table closed
// the connections. The calling goroutine copies client to origin; a new
// one copies origin to client, and the direction that ends last closes
// both connections, removes the connection from its table and calls
// onEnd. run returns when its own direction is done.
func (c *relayConn) run() {
	go c.pipe(c.client, c.upstream, c.toClient, nil)
	c.pipe(c.upstream, c.client, c.toOrigin, nil)
}

// runPending is run for a connection taken over from an epoll loop with
// bytes read but not yet written: the direction they belong to (toward
// the origin if toOrigin) writes them first, inside its pipe, so that the
// other direction goes on meanwhile and an abort (idle, drain) ends a
// write the peer does not take.
func (c *relayConn) runPending(pending []byte, toOrigin bool) {
	var toO, toC []byte
	if toOrigin {
		toO = pending
	} else {
		toC = pending
	}
	go c.pipe(c.client, c.upstream, c.toClient, toC)
	c.pipe(c.upstream, c.client, c.toOrigin, toO)
}

// abort resets both connections (SO_LINGER 0: RST, no TIME_WAIT), which
// ends both directions with an error.
func (c *relayConn) abort() {
	if c.aborted.Swap(true) {
		return
	}
	c.client.SetLinger(0)
	c.upstream.SetLinger(0)
	c.client.Close()
	c.upstream.Close()
}

// cut closes both connections the ordinary way (drain): marked aborted
// first, so that the error the first Close wakes a direction with does not
// turn the second one into a reset.
func (c *relayConn) cut() {
	c.aborted.Store(true)
	c.client.Close()
	c.upstream.Close()
}

// pipe copies src to dst, after first, until EOF or an error.
func (c *relayConn) pipe(dst, src *net.TCPConn, count adder, first []byte) {
	var err error
	if len(first) > 0 {
		var n int
		n, err = dst.Write(first)
		count.Add(float64(n))
	}
	if err == nil {
		err = copyConn(dst, src, count)
	}
	switch {
	case err == nil:
		// EOF from src: pass the half-close on and let the other way
		// finish; the second way to end leaves the FIN to Close.
		if c.ended.Add(1) == 1 {
			dst.CloseWrite()
			return
		}
	default:
		c.abort()
		if c.ended.Add(1) == 1 {
			return
		}
	}
	c.client.Close()
	c.upstream.Close()
	if c.shard != nil {
		c.shard.remove(c)
	}
	if c.onEnd != nil {
		c.onEnd()
	}
}

// copyConn copies src to dst until EOF (nil) or an error, counting the
// bytes.
func copyConn(dst, src *net.TCPConn, count adder) error {
	rc, err := src.SyscallConn()
	if err != nil {
		return err
	}
	for {
		buf, n, err := readSmall(rc)
		if n > 0 {
			_, werr := dst.Write(buf[:n])
			count.Add(float64(n))
			if werr != nil {
				err = werr
			}
		}
		if buf != nil {
			smallBufs.Put(buf)
		}
		if err != nil || n == 0 {
			return err // nil at EOF
		}
		if n < smallBuf {
			continue
		}
		// A full buffer: splice a stream. io.Copy hands an
		// *io.LimitedReader over a *net.TCPConn to splice(2).
		m, err := io.Copy(dst, &io.LimitedReader{R: src, N: relayChunk})
		if m > 0 {
			count.Add(float64(m))
		}
		if err != nil {
			return err
		}
		if m < relayChunk {
			return nil // EOF
		}
	}
}

// readSmall waits until rc is readable and reads what is there into a
// buffer from smallBufs, which it takes only once a read is tried. It
// returns the buffer holding n bytes (nil when no read was tried); n is 0
// with a nil error at EOF.
func readSmall(rc syscall.RawConn) (buf *[smallBuf]byte, n int, err error) {
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		if buf == nil {
			buf = smallBufs.Get().(*[smallBuf]byte)
		}
		for {
			n, rerr = syscall.Read(int(fd), buf[:])
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			// Not readable yet: give the buffer back while waiting.
			smallBufs.Put(buf)
			buf = nil
			return false
		}
		return true
	})
	if err == nil && rerr != nil {
		err = os.NewSyscallError("read", rerr)
	}
	return buf, max(n, 0), err
}
