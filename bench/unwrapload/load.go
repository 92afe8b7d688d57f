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
	"sync/atomic"
	"time"

	"github.com/realip/realip/bench/internal/loadkit"
)

// common are the flags every load takes.
type common struct {
	loadkit.LoadFlags
	hdrName string
	seq     uint64

	raddr netip.AddrPort
	hdr   header
	tpl   ppv2Template
	meter *loadkit.CPUMeter
}

func (c *common) register(fs *flag.FlagSet, udp bool) {
	c.Register(fs, "unwrapper (or, with -header none, server) address, required", "the unwrapper")
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
	if c.raddr, err = netip.ParseAddrPort(c.Addr); err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	if c.hdr, err = parseHeader(c.hdrName, udp); err != nil {
		return err
	}
	if c.tpl, err = newPPv2Template(udp); err != nil {
		return err
	}
	c.meter, err = loadkit.NewCPUMeter(c.PIDs)
	return err
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
	var cs []*net.TCPConn
	for i := range *conns {
		conn, err := dialWithHeader(&c, c.seq+uint64(i), nil)
		if err != nil {
			return err
		}
		cs = append(cs, conn)
	}
	fmt.Println(c.Throughput(cs, *size, c.meter))
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
	elapsed, cpu := c.meter.Run(*workers, c.Dur, func(_ int, stopAt time.Time) {
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
	})
	n := float64(done.Load())
	fmt.Println(c.Result("conn_per_s", n/elapsed.Seconds(), "conn/s", cpu, n, "conn",
		fmt.Sprintf("errors=%d", errs.Load()), fmt.Sprintf("bad=%d", bad.Load()), fmt.Sprintf("clients=%d", next.Load()-c.seq)))
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
