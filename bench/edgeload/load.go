//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/realip/realip/bench/internal/loadkit"
)

const defaultWait = 10 * time.Second

// common are the flags every load takes.
type common struct {
	loadkit.LoadFlags
}

func (c *common) register(fs *flag.FlagSet) {
	c.Register(fs, "relay address to load, required", "the relay")
}

func tcpAddr(s string) (*net.TCPAddr, error) {
	if s == "" {
		return nil, errors.New("-addr is required")
	}
	return net.ResolveTCPAddr("tcp", s)
}

// runTput streams from -conns connections through the relay to a discard
// origin for -dur, then half-closes and waits for the relay to close (so
// everything written was delivered, or the relay gave up). The rate is the
// bytes written over the time from the start to the last close.
func runTput(args []string) error {
	fs := flag.NewFlagSet("tput", flag.ExitOnError)
	var c common
	c.register(fs)
	conns := fs.Int("conns", 4, "parallel connections")
	size := fs.Int("write", 256<<10, "bytes per write")
	fs.Parse(args)
	raddr, err := tcpAddr(c.Addr)
	if err != nil {
		return err
	}
	m, err := loadkit.NewCPUMeter(c.PIDs)
	if err != nil {
		return err
	}
	var cs []*net.TCPConn
	for range *conns {
		conn, err := net.DialTCP("tcp", nil, raddr)
		if err != nil {
			return err
		}
		cs = append(cs, conn)
	}
	fmt.Println(c.Throughput(cs, *size, m))
	return nil
}

// runConn opens connections in a loop from -workers goroutines: connect,
// write -size bytes, read them back from the echo origin, close.
func runConn(args []string) error {
	fs := flag.NewFlagSet("conn", flag.ExitOnError)
	var c common
	c.register(fs)
	workers := fs.Int("workers", 8, "parallel workers")
	size := fs.Int("size", 64, "request (and reply) bytes")
	fs.Parse(args)
	raddr, err := tcpAddr(c.Addr)
	if err != nil {
		return err
	}
	m, err := loadkit.NewCPUMeter(c.PIDs)
	if err != nil {
		return err
	}
	req := make([]byte, *size)
	for i := range req {
		req[i] = 'a' + byte(i%26)
	}
	lats := make([][]time.Duration, *workers)
	var errs atomic.Int64
	elapsed, cpu := m.Run(*workers, c.Dur, func(w int, stopAt time.Time) {
		reply := make([]byte, *size)
		l := make([]time.Duration, 0, 1<<16)
		for {
			t0 := time.Now()
			if !t0.Before(stopAt) {
				break
			}
			if err := oneConn(raddr, req, reply); err != nil {
				errs.Add(1)
				time.Sleep(time.Millisecond)
				continue
			}
			l = append(l, time.Since(t0))
		}
		lats[w] = l
	})
	all := slices.Concat(lats...)
	slices.Sort(all)
	n := float64(len(all))
	extra := fmt.Sprintf("errors=%d", errs.Load())
	fmt.Println(c.Result("conn_per_s", n/elapsed.Seconds(), "conn/s", cpu, n, "conn", extra))
	fmt.Println(c.Result("conn_p50_us", float64(pct(all, 50).Nanoseconds())/1e3, "us", nil, 0, ""))
	fmt.Println(c.Result("conn_p99_us", float64(pct(all, 99).Nanoseconds())/1e3, "us", nil, 0, ""))
	return nil
}

func oneConn(raddr *net.TCPAddr, req, reply []byte) error {
	conn, err := net.DialTCP("tcp", nil, raddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(req); err != nil {
		return err
	}
	if _, err := io.ReadFull(conn, reply); err != nil {
		return err
	}
	return nil
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

// runUDP runs -flows UDP flows (one client socket each) against an echo
// origin behind the relay, each keeping -window requests in flight: every
// reply sends the next request. A flow that hears nothing for 200ms counts
// its window as lost and sends a fresh one. The rate is replies per second
// (each is two datagrams through the relay, one each way).
func runUDP(args []string) error {
	fs := flag.NewFlagSet("udp", flag.ExitOnError)
	var c common
	c.register(fs)
	flows := fs.Int("flows", 4, "parallel flows (client sockets)")
	window := fs.Int("window", 1, "requests in flight per flow")
	size := fs.Int("size", 64, "datagram bytes")
	fs.Parse(args)
	if c.Addr == "" {
		return errors.New("-addr is required")
	}
	raddr, err := net.ResolveUDPAddr("udp", c.Addr)
	if err != nil {
		return err
	}
	m, err := loadkit.NewCPUMeter(c.PIDs)
	if err != nil {
		return err
	}
	fl, err := udpFlows(raddr, *flows, *size, *window)
	if err != nil {
		return err
	}
	var replies, lost atomic.Int64
	elapsed, cpu := m.Run(len(fl), c.Dur, func(i int, stopAt time.Time) {
		f := fl[i]
		defer f.Conn.Close()
		f.Run(stopAt)
		replies.Add(f.Got)
		lost.Add(f.Lost)
	})
	n := float64(replies.Load())
	fmt.Println(c.Result("udp_rt_per_s", n/elapsed.Seconds(), "req/s", cpu, n, "req", fmt.Sprintf("lost=%d", lost.Load())))
	return nil
}

// udpFlows opens n client sockets to raddr, each a flow of window
// requests of size zero bytes in flight.
func udpFlows(raddr *net.UDPAddr, n, size, window int) ([]*loadkit.UDPFlow, error) {
	req := make([]byte, size)
	var fl []*loadkit.UDPFlow
	for range n {
		s, err := net.DialUDP("udp", nil, raddr)
		if err != nil {
			return nil, err
		}
		fl = append(fl, &loadkit.UDPFlow{Conn: s, First: req, Req: req, Window: window})
	}
	return fl, nil
}
