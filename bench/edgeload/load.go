//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const defaultWait = 10 * time.Second

// common are the flags every load takes.
type common struct {
	addr  string
	dur   time.Duration
	pids  string
	label string
	rep   string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "addr", "", "relay address to load, required")
	fs.DurationVar(&c.dur, "dur", 3*time.Second, "how long to run")
	fs.StringVar(&c.pids, "pids", "", "comma-separated PIDs of the relay, to measure its CPU time")
	fs.StringVar(&c.label, "label", "relay", "relay name printed in the result")
	fs.StringVar(&c.rep, "rep", "0", "repetition number printed in the result")
}

// cpuMeter measures the CPU time of the relay's processes and of this one.
type cpuMeter struct {
	pids       []int
	relay0     time.Duration
	self0      time.Duration
	wall0      time.Time
	relayCores float64 // CPU seconds per wall second
	selfCores  float64
	relayCPU   time.Duration
}

func newCPUMeter(list string) (*cpuMeter, error) {
	m := &cpuMeter{}
	for _, f := range splitList(list) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("-pids: %q is not a PID", f)
		}
		m.pids = append(m.pids, pid)
	}
	return m, nil
}

func (m *cpuMeter) start() {
	m.relay0, m.self0, m.wall0 = procsCPU(m.pids), selfCPU(), time.Now()
}

func (m *cpuMeter) stop() {
	wall := time.Since(m.wall0).Seconds()
	m.relayCPU = procsCPU(m.pids) - m.relay0
	m.relayCores = m.relayCPU.Seconds() / wall
	m.selfCores = (selfCPU() - m.self0).Seconds() / wall
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procsCPU sums user and system time of the processes (all their threads).
func procsCPU(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * clockTick
	}
	return total
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// result prints one result line; perOp is the amount of work done, to
// report the relay's CPU time per unit (perUnit names the unit).
func (c *common) result(metric string, value float64, unit string, m *cpuMeter, ops float64, perUnit string, extra ...string) {
	fields := []string{"result",
		"relay=" + c.label, "rep=" + c.rep, "metric=" + metric,
		"value=" + strconv.FormatFloat(value, 'f', 3, 64), "unit=" + unit}
	if m != nil {
		fields = append(fields, fmt.Sprintf("gen_cores=%.2f", m.selfCores))
		if len(m.pids) > 0 {
			fields = append(fields, fmt.Sprintf("relay_cores=%.2f", m.relayCores))
			if ops > 0 {
				fields = append(fields, fmt.Sprintf("relay_us_per_op=%.3f", float64(m.relayCPU.Microseconds())/ops), "op="+perUnit)
			}
		}
	}
	fields = append(fields, extra...)
	fmt.Println(strings.Join(fields, " "))
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
	raddr, err := tcpAddr(c.addr)
	if err != nil {
		return err
	}
	m, err := newCPUMeter(c.pids)
	if err != nil {
		return err
	}
	buf := make([]byte, *size)
	for i := range buf {
		buf[i] = byte(i)
	}
	var total atomic.Int64
	var errs atomic.Int64
	var wg sync.WaitGroup
	ready := make(chan struct{})
	var cs []*net.TCPConn
	for range *conns {
		conn, err := net.DialTCP("tcp", nil, raddr)
		if err != nil {
			return err
		}
		cs = append(cs, conn)
	}
	m.start()
	start := time.Now()
	stopAt := start.Add(c.dur)
	for _, conn := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			<-ready
			var n int64
			for time.Now().Before(stopAt) {
				w, err := conn.Write(buf)
				n += int64(w)
				if err != nil {
					errs.Add(1)
					break
				}
			}
			total.Add(n)
			conn.CloseWrite()
			conn.SetReadDeadline(time.Now().Add(defaultWait))
			io.Copy(io.Discard, conn)
		}()
	}
	close(ready)
	wg.Wait()
	elapsed := time.Since(start)
	m.stop()
	mb := float64(total.Load()) / 1e6
	c.result("tcp_MBps", mb/elapsed.Seconds(), "MB/s", m, mb, "MB", fmt.Sprintf("errors=%d", errs.Load()))
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
	raddr, err := tcpAddr(c.addr)
	if err != nil {
		return err
	}
	m, err := newCPUMeter(c.pids)
	if err != nil {
		return err
	}
	req := make([]byte, *size)
	for i := range req {
		req[i] = 'a' + byte(i%26)
	}
	lats := make([][]time.Duration, *workers)
	var errs atomic.Int64
	var wg sync.WaitGroup
	m.start()
	start := time.Now()
	stopAt := start.Add(c.dur)
	for w := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
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
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	m.stop()
	all := slices.Concat(lats...)
	slices.Sort(all)
	n := float64(len(all))
	extra := fmt.Sprintf("errors=%d", errs.Load())
	c.result("conn_per_s", n/elapsed.Seconds(), "conn/s", m, n, "conn", extra)
	c.result("conn_p50_us", float64(pct(all, 50).Nanoseconds())/1e3, "us", nil, 0, "")
	c.result("conn_p99_us", float64(pct(all, 99).Nanoseconds())/1e3, "us", nil, 0, "")
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
	if c.addr == "" {
		return errors.New("-addr is required")
	}
	raddr, err := net.ResolveUDPAddr("udp", c.addr)
	if err != nil {
		return err
	}
	m, err := newCPUMeter(c.pids)
	if err != nil {
		return err
	}
	socks, err := dialUDP(raddr, *flows)
	if err != nil {
		return err
	}
	var replies, lost atomic.Int64
	var wg sync.WaitGroup
	m.start()
	start := time.Now()
	stopAt := start.Add(c.dur)
	for _, s := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.Close()
			got, miss := udpFlow(s, stopAt, *size, *window)
			replies.Add(got)
			lost.Add(miss)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	m.stop()
	n := float64(replies.Load())
	c.result("udp_rt_per_s", n/elapsed.Seconds(), "req/s", m, n, "req", fmt.Sprintf("lost=%d", lost.Load()))
	return nil
}

// dialUDP opens n client sockets to raddr.
func dialUDP(raddr *net.UDPAddr, n int) ([]*net.UDPConn, error) {
	var socks []*net.UDPConn
	for range n {
		s, err := net.DialUDP("udp", nil, raddr)
		if err != nil {
			return nil, err
		}
		socks = append(socks, s)
	}
	return socks, nil
}

// udpFlow is one flow of runUDP on s until stopAt, with window requests of
// size bytes in flight; it returns the replies it got and the requests it
// counted as lost.
func udpFlow(s *net.UDPConn, stopAt time.Time, size, window int) (got, miss int64) {
	req := make([]byte, size)
	buf := make([]byte, 2048)
	send := func(k int) {
		for range k {
			s.Write(req)
		}
	}
	send(window)
	for {
		now := time.Now()
		if !now.Before(stopAt) {
			break
		}
		dl := now.Add(200 * time.Millisecond)
		if stopAt.Before(dl) {
			dl = stopAt
		}
		s.SetReadDeadline(dl)
		if _, err := s.Read(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && time.Now().Before(stopAt) {
				miss += int64(window)
				send(window)
				continue
			}
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			// ECONNREFUSED from an ICMP error: try again soon.
			miss++
			time.Sleep(time.Millisecond)
			send(1)
			continue
		}
		got++
		send(1)
	}
	return got, miss
}
