package edge

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// relayChunk is how much one io.Copy call may move before the idle deadline
// is re-armed. io.Copy hands an *io.LimitedReader over a *net.TCPConn to the
// kernel's splice, so chunking costs no copy.
const relayChunk = 1 << 20

// relay copies both ways between the client and the origin until both sides
// finished (a half-close is passed on with CloseWrite), an error, or both
// directions were idle for idle. It closes both connections and returns the
// bytes moved each way.
func relay(client, upstream *net.TCPConn, idle time.Duration, count func(toOrigin bool, n int64)) {
	var last atomic.Int64 // unix nanoseconds of the last byte moved either way
	last.Store(time.Now().UnixNano())
	var once sync.Once
	abort := func() {
		once.Do(func() {
			client.SetLinger(0)
			upstream.SetLinger(0)
			client.Close()
			upstream.Close()
		})
	}
	var ended atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		pipe(upstream, client, idle, &last, &ended, abort, func(n int64) { count(true, n) })
	}()
	pipe(client, upstream, idle, &last, &ended, abort, func(n int64) { count(false, n) })
	<-done
	client.Close()
	upstream.Close()
}

// pipe copies src to dst in chunks, re-arming src's read deadline each time.
func pipe(dst, src *net.TCPConn, idle time.Duration, last *atomic.Int64, ended *atomic.Int32, abort func(), count func(int64)) {
	for {
		// A copy in progress reports its bytes only when it returns, so
		// make it return often enough for `last` to tell a busy
		// direction from an idle one.
		if err := src.SetReadDeadline(time.Now().Add(idle / 4)); err != nil {
			abort()
			return
		}
		n, err := io.Copy(dst, &io.LimitedReader{R: src, N: relayChunk})
		if n > 0 {
			count(n)
			last.Store(time.Now().UnixNano())
		}
		switch {
		case err == nil && n < relayChunk:
			// EOF from src: pass the half-close on and let the other way
			// finish; the second way to end leaves the FIN to Close.
			if ended.Add(1) == 1 {
				dst.CloseWrite()
			}
			return
		case err == nil:
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			if time.Since(time.Unix(0, last.Load())) < idle {
				continue // the other direction is busy
			}
			abort()
			return
		default:
			abort()
			return
		}
	}
}
