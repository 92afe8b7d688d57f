//go:build linux

package loadkit

import (
	"net"
	"slices"
	"testing"
	"time"
)

func TestThroughput(t *testing.T) {
	addr := serve(t, Discard)
	for _, n := range []int{1, 3} {
		var conns []*net.TCPConn
		for range n {
			c, err := net.DialTCP("tcp", nil, addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		m, err := NewCPUMeter("")
		if err != nil {
			t.Fatal(err)
		}
		f := LoadFlags{Dur: 100 * time.Millisecond, Label: "discard", Rep: "1"}
		r := f.Throughput(conns, 4096, m)
		if r.Metric != "tcp_MBps" || r.Unit != "MB/s" || r.Op != "MB" || r.Relay != "discard" || r.Rep != "1" {
			t.Errorf("%d connections: %s", n, r)
		}
		if r.Value <= 0 || r.Ops <= 0 || r.CPU == nil || r.CPU.Relay || !slices.Equal(r.Extra, []string{"errors=0"}) {
			t.Errorf("%d connections: %s (%+v)", n, r, r.CPU)
		}
	}
}
