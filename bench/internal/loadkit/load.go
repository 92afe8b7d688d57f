package loadkit

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// drainWait is how long Stream waits for the far end to close after its
// half-close.
const drainWait = 10 * time.Second

// Parallel runs work(i, stopAt) for i from 0 to n-1, each in a goroutine
// of its own, all released together; stopAt is dur after the start. It
// returns the time from the start until the last work returned.
func Parallel(n int, dur time.Duration, work func(i int, stopAt time.Time)) time.Duration {
	var wg sync.WaitGroup
	ready := make(chan struct{})
	start := time.Now()
	stopAt := start.Add(dur)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			work(i, stopAt)
		}()
	}
	close(ready)
	wg.Wait()
	return time.Since(start)
}

// Stream writes buf on c over and over until stopAt or a write fails,
// then half-closes c and reads what comes until the far end closes (so
// that everything written was delivered, or the far end gave up) or 10s
// pass, and closes c. It returns the bytes written and the write error.
func Stream(c *net.TCPConn, buf []byte, stopAt time.Time) (int64, error) {
	defer c.Close()
	var n int64
	var werr error
	for time.Now().Before(stopAt) {
		w, err := c.Write(buf)
		n += int64(w)
		if err != nil {
			werr = err
			break
		}
	}
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(drainWait))
	io.Copy(io.Discard, c)
	return n, werr
}

// lossTimeout is how long a UDPFlow waits for a reply before it counts
// its window as lost.
const lossTimeout = 200 * time.Millisecond

// UDPFlow is one request/response flow on a connected UDP socket: it
// keeps Window requests in flight, each reply sending the next request.
// A flow that hears nothing for 200ms counts its window as lost and sends
// a fresh one.
type UDPFlow struct {
	Conn *net.UDPConn
	// First is the datagram sent until the first reply comes, Req the one
	// after it (the same but for framings that put a header on the first
	// datagram of a flow only).
	First, Req []byte
	Window     int
	// FirstAlone: the first datagram goes alone, and the window fills
	// after its reply (a relay that takes the header of the first
	// datagram only would take a second one for payload).
	FirstAlone bool
	// ReplyLen is the length of a good reply; a reply of another length
	// counts as Bad. 0 takes any length.
	ReplyLen int

	Got  int64 // good replies
	Lost int64 // requests counted as lost
	Bad  int64 // replies of the wrong length

	started bool // a reply came
}

// Run sends and receives until stopAt.
func (f *UDPFlow) Run(stopAt time.Time) {
	buf := make([]byte, 2048)
	f.send(f.inFlight())
	for {
		now := time.Now()
		if !now.Before(stopAt) {
			return
		}
		dl := now.Add(lossTimeout)
		if stopAt.Before(dl) {
			dl = stopAt
		}
		f.Conn.SetReadDeadline(dl)
		n, err := f.Conn.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if time.Now().Before(stopAt) {
					f.Lost += int64(f.inFlight())
					f.send(f.inFlight())
				}
				continue
			}
			// ECONNREFUSED from an ICMP error: try again soon.
			f.Lost++
			time.Sleep(time.Millisecond)
			f.send(1)
			continue
		}
		if f.ReplyLen > 0 && n != f.ReplyLen {
			f.Bad++
			f.send(1)
			continue
		}
		f.Got++
		if !f.started {
			f.started = true
			if f.FirstAlone {
				f.send(f.Window) // the window was 1 until now
				continue
			}
		}
		f.send(1)
	}
}

// send sends k requests; until the first reply they are all First, so
// that a lost first datagram does not leave the flow without its header.
func (f *UDPFlow) send(k int) {
	d := f.Req
	if !f.started {
		d = f.First
	}
	for range k {
		f.Conn.Write(d)
	}
}

// inFlight is how many requests the flow keeps in flight now.
func (f *UDPFlow) inFlight() int {
	if f.FirstAlone && !f.started {
		return 1
	}
	return f.Window
}
