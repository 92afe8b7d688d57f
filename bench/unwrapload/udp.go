//go:build linux

package main

import (
	"flag"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/realip/realip/bench/internal/loadkit"
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
	var fl []*loadkit.UDPFlow
	for i := range *flows {
		s, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(c.raddr))
		if err != nil {
			return err
		}
		f := newUDPFlow(s, datagramPrefix(c.hdr, c.tpl, clientAt(c.seq+uint64(i))), c.hdr, *size, *window)
		fl = append(fl, f)
	}
	var replies, lost, bad atomic.Int64
	elapsed, cpu := c.meter.Run(len(fl), c.Dur, func(i int, stopAt time.Time) {
		f := fl[i]
		defer f.Conn.Close()
		f.Run(stopAt)
		replies.Add(f.Got)
		lost.Add(f.Lost)
		bad.Add(f.Bad)
	})
	n := float64(replies.Load())
	fmt.Println(c.Result("udp_rt_per_s", n/elapsed.Seconds(), "req/s", cpu, n, "req",
		fmt.Sprintf("lost=%d", lost.Load()), fmt.Sprintf("bad=%d", bad.Load())))
	return nil
}

// newUDPFlow is the flow of a client on s: prefix (its header) in front
// of every datagram, or of the first only with first-datagram framing,
// and size bytes of payload; replies carry the SPP header too with h
// hdrSPP.
func newUDPFlow(s *net.UDPConn, prefix []byte, h header, size, window int) *loadkit.UDPFlow {
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	f := &loadkit.UDPFlow{Conn: s, Window: window, ReplyLen: size}
	f.First = append(append([]byte(nil), prefix...), payload...)
	f.Req = f.First
	if h == hdrPPv2First {
		f.Req, f.FirstAlone = payload, true
	}
	if h == hdrSPP {
		f.ReplyLen += wire.SPPHeaderLen
	}
	return f
}
