//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realip/realip/wire"
)

// runUDP runs -flows UDP flows (one socket each, client identity -seq+i)
// against the echo server behind the unwrapper, each keeping -window
// requests in flight: every reply sends the next request. A flow that
// hears nothing for 200ms counts its window as lost and sends a fresh one.
// The rate is replies per second (each is two datagrams through the
// unwrapper, one each way).
func runUDP(args []string) error {
	fs := flag.NewFlagSet("udp", flag.ExitOnError)
	var c common
	c.register(fs, true)
	flows := fs.Int("flows", 4, "parallel flows (client sockets)")
	window := fs.Int("window", 1, "requests in flight per flow")
	size := fs.Int("size", 64, "payload bytes per datagram")
	fs.Parse(args)
	if err := c.setup(true); err != nil {
		return err
	}
	var fl []*udpFlow
	for i := range *flows {
		s, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(c.raddr))
		if err != nil {
			return err
		}
		f := newUDPFlow(s, datagramPrefix(c.hdr, c.tpl, clientAt(c.seq+uint64(i))), c.hdr, *size, *window)
		fl = append(fl, f)
	}
	var replies, lost, bad atomic.Int64
	var wg sync.WaitGroup
	c.meter.start()
	start := time.Now()
	stopAt := start.Add(c.dur)
	for _, f := range fl {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer f.s.Close()
			f.run(stopAt)
			replies.Add(f.got)
			lost.Add(f.miss)
			bad.Add(f.bad)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	c.meter.stop()
	n := float64(replies.Load())
	c.result("udp_rt_per_s", n/elapsed.Seconds(), "req/s", n, "req",
		fmt.Sprintf("lost=%d", lost.Load()), fmt.Sprintf("bad=%d", bad.Load()))
	return nil
}

// udpFlow is one flow of runUDP.
type udpFlow struct {
	s         *net.UDPConn
	req       []byte // header (unless first-datagram framing) and payload
	first     []byte // the flow's first datagram: header and payload
	replyLen  int
	window    int
	firstOnly bool // first-datagram framing: the header on the first datagram only
	started   bool // a reply came: with first-datagram framing, no more headers
	got, miss int64
	bad       int64 // replies of the wrong length
}

func newUDPFlow(s *net.UDPConn, prefix []byte, h header, size, window int) *udpFlow {
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	f := &udpFlow{s: s, window: window, replyLen: size}
	f.first = append(append([]byte(nil), prefix...), payload...)
	f.req = f.first
	if h == hdrPPv2First {
		f.req, f.firstOnly = payload, true
	}
	if h == hdrSPP {
		f.replyLen += wire.SPPHeaderLen
	}
	return f
}

// send sends k requests; until the first reply they all carry the header,
// so that a lost first datagram does not leave the flow without one.
func (f *udpFlow) send(k int) {
	d := f.req
	if !f.started {
		d = f.first
	}
	for range k {
		f.s.Write(d)
	}
}

// run sends and receives until stopAt. With first-datagram framing the
// flow's first datagram goes alone, and the window fills after its reply:
// the relay takes a second header for payload.
func (f *udpFlow) run(stopAt time.Time) {
	buf := make([]byte, 2048)
	f.send(f.inFlight())
	for {
		now := time.Now()
		if !now.Before(stopAt) {
			return
		}
		dl := now.Add(200 * time.Millisecond)
		if stopAt.Before(dl) {
			dl = stopAt
		}
		f.s.SetReadDeadline(dl)
		n, err := f.s.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if time.Now().Before(stopAt) {
					f.miss += int64(f.inFlight())
					f.send(f.inFlight())
				}
				continue
			}
			// ECONNREFUSED from an ICMP error: try again soon.
			f.miss++
			time.Sleep(time.Millisecond)
			f.send(1)
			continue
		}
		if n != f.replyLen {
			f.bad++
			f.send(1)
			continue
		}
		f.got++
		if !f.started {
			f.started = true
			if f.firstOnly {
				f.send(f.window) // the window was 1 until now
				continue
			}
		}
		f.send(1)
	}
}

// inFlight is how many requests the flow keeps in flight now.
func (f *udpFlow) inFlight() int {
	if f.firstOnly && !f.started {
		return 1
	}
	return f.window
}
