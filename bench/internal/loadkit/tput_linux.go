//go:build linux

package loadkit

import (
	"fmt"
	"net"
	"sync/atomic"
	"time"
)

// Throughput streams writes of size bytes on every connection of conns
// for f.Dur (see Stream), m measuring the CPU time, and returns the
// result: metric tcp_MBps, the MB written per second from the start until
// the last connection closed, and errors=N, the connections whose writes
// failed.
func (f *LoadFlags) Throughput(conns []*net.TCPConn, size int, m *CPUMeter) Result {
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i)
	}
	var total, errs atomic.Int64
	elapsed, cpu := m.Run(len(conns), f.Dur, func(i int, stopAt time.Time) {
		n, err := Stream(conns[i], buf, stopAt)
		total.Add(n)
		if err != nil {
			errs.Add(1)
		}
	})
	mb := float64(total.Load()) / 1e6
	return f.Result("tcp_MBps", mb/elapsed.Seconds(), "MB/s", cpu, mb, "MB", fmt.Sprintf("errors=%d", errs.Load()))
}
