//go:build linux

package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// common are the flags every load takes.
type common struct {
	addr    string
	dur     time.Duration
	pids    string
	label   string
	rep     string
	hdrName string
	seq     uint64

	raddr netip.AddrPort
	hdr   header
	tpl   ppv2Template
	meter *cpuMeter
}

func (c *common) register(fs *flag.FlagSet, udp bool) {
	fs.StringVar(&c.addr, "addr", "", "unwrapper (or, with -header none, server) address, required")
	fs.DurationVar(&c.dur, "dur", 3*time.Second, "how long to run")
	fs.StringVar(&c.pids, "pids", "", "comma-separated PIDs of the unwrapper, to measure its CPU time")
	fs.StringVar(&c.label, "label", "relay", "relay name printed in the result")
	fs.StringVar(&c.rep, "rep", "0", "repetition number printed in the result")
	hdrs := "none or ppv2"
	if udp {
		hdrs = "none, ppv2, ppv2-first or spp"
	}
	fs.StringVar(&c.hdrName, "header", "ppv2", "header in front of the payload: "+hdrs)
	fs.Uint64Var(&c.seq, "seq", 0, "identity of the first client (see clientAt)")
}

// setup checks the flags after parsing.
func (c *common) setup(udp bool) error {
	var err error
	if c.raddr, err = netip.ParseAddrPort(c.addr); err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	if c.hdr, err = parseHeader(c.hdrName, udp); err != nil {
		return err
	}
	if c.tpl, err = newPPv2Template(udp); err != nil {
		return err
	}
	c.meter, err = newCPUMeter(c.pids)
	return err
}

// result prints one result line; ops is the amount of work done, to
// report the relay's CPU time per unit (perUnit names the unit).
func (c *common) result(metric string, value float64, unit string, ops float64, perUnit string, extra ...string) {
	m := c.meter
	fields := []string{"result",
		"relay=" + c.label, "rep=" + c.rep, "metric=" + metric,
		"value=" + strconv.FormatFloat(value, 'f', 3, 64), "unit=" + unit,
		fmt.Sprintf("gen_cores=%.2f", m.selfCores)}
	if len(m.pids) > 0 {
		fields = append(fields, fmt.Sprintf("relay_cores=%.2f", m.relayCores))
		if ops > 0 {
			fields = append(fields, fmt.Sprintf("relay_us_per_op=%.3f", float64(m.relayCPU.Microseconds())/ops), "op="+perUnit)
		}
	}
	fields = append(fields, extra...)
	fmt.Println(strings.Join(fields, " "))
}

// runTput streams from -conns connections, each with its own client's
// header, through the unwrapper to the discard server for -dur, then
// half-closes and waits for the unwrapper to close (so everything written
// was delivered, or it gave up). The rate is the bytes written over the
// time from the start to the last close.
func runTput(args []string) error {
	fs := flag.NewFlagSet("tput", flag.ExitOnError)
	var c common
	c.register(fs, false)
	conns := fs.Int("conns", 4, "parallel connections")
	size := fs.Int("write", 256<<10, "bytes per write")
	fs.Parse(args)
	if err := c.setup(false); err != nil {
		return err
	}
	buf := make([]byte, *size)
	for i := range buf {
		buf[i] = byte(i)
	}
	var cs []*net.TCPConn
	for i := range *conns {
		conn, err := dialWithHeader(&c, c.seq+uint64(i), nil)
		if err != nil {
			return err
		}
		cs = append(cs, conn)
	}
	var total, errs atomic.Int64
	var wg sync.WaitGroup
	c.meter.start()
	start := time.Now()
	stopAt := start.Add(c.dur)
	for _, conn := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
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
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			io.Copy(io.Discard, conn)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	c.meter.stop()
	mb := float64(total.Load()) / 1e6
	c.result("tcp_MBps", mb/elapsed.Seconds(), "MB/s", mb, "MB", fmt.Sprintf("errors=%d", errs.Load()))
	return nil
}

// dialWithHeader connects to the unwrapper and writes client n's header
// followed by payload, in one write.
func dialWithHeader(c *common, n uint64, payload []byte) (*net.TCPConn, error) {
	conn, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(c.raddr))
	if err != nil {
		return nil, err
	}
	var b []byte
	if c.hdr == hdrPPv2 {
		b = c.tpl.put(make([]byte, 0, v2Len4+len(payload)), clientAt(n))
	}
	b = append(b, payload...)
	if len(b) > 0 {
		if _, err := conn.Write(b); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return conn, nil
}

// runConn opens connections in a loop from -workers goroutines: connect,
// write the header of a new client and -size bytes, read them back from
// the echo server, close.
func runConn(args []string) error {
	fs := flag.NewFlagSet("conn", flag.ExitOnError)
	var c common
	c.register(fs, false)
	workers := fs.Int("workers", 8, "parallel workers")
	size := fs.Int("size", 64, "request (and reply) bytes")
	fs.Parse(args)
	if err := c.setup(false); err != nil {
		return err
	}
	req := make([]byte, *size)
	for i := range req {
		req[i] = 'a' + byte(i%26)
	}
	var done, errs, bad atomic.Int64
	var next atomic.Uint64
	next.Store(c.seq)
	var wg sync.WaitGroup
	c.meter.start()
	start := time.Now()
	stopAt := start.Add(c.dur)
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reply := make([]byte, *size)
			for time.Now().Before(stopAt) {
				err := oneConn(&c, next.Add(1)-1, req, reply)
				switch {
				case errors.Is(err, errBadReply):
					bad.Add(1)
				case err != nil:
					errs.Add(1)
					time.Sleep(time.Millisecond)
				default:
					done.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	c.meter.stop()
	n := float64(done.Load())
	c.result("conn_per_s", n/elapsed.Seconds(), "conn/s", n, "conn",
		fmt.Sprintf("errors=%d", errs.Load()), fmt.Sprintf("bad=%d", bad.Load()), fmt.Sprintf("clients=%d", next.Load()-c.seq))
	return nil
}

var errBadReply = errors.New("reply differs from the request")

func oneConn(c *common, n uint64, req, reply []byte) error {
	conn, err := dialWithHeader(c, n, req)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, reply); err != nil {
		return err
	}
	if !bytes.Equal(req, reply) {
		return errBadReply
	}
	return nil
}
