package loadkit

import (
	"bytes"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParallel(t *testing.T) {
	for _, n := range []int{0, 1, 7} {
		var mu sync.Mutex
		var seen []int
		var stops []time.Time
		elapsed := Parallel(n, time.Hour, func(i int, stopAt time.Time) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, i)
			stops = append(stops, stopAt)
		})
		slices.Sort(seen)
		want := make([]int, n)
		for i := range want {
			want[i] = i
		}
		if !slices.Equal(seen, want) {
			t.Errorf("n=%d: work ran for %v", n, seen)
		}
		for _, s := range stops {
			if s != stops[0] {
				t.Errorf("n=%d: different stop times %v and %v", n, s, stops[0])
			}
		}
		if elapsed < 0 {
			t.Errorf("n=%d: elapsed %v", n, elapsed)
		}
	}
}

func TestStream(t *testing.T) {
	var received atomic.Int64
	addr := serve(t, func(c *net.TCPConn) {
		defer c.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	c, err := net.DialTCP("tcp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := Stream(c, make([]byte, 32<<10), time.Now().Add(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	// Stream returns after the server closed: it has read everything.
	if n <= 0 || received.Load() != n {
		t.Errorf("wrote %d bytes, the server read %d", n, received.Load())
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("the connection is still open after Stream")
	}
}

// udpRecorder is a UDP echo server that keeps every datagram it gets.
type udpRecorder struct {
	*net.UDPConn
	mu  sync.Mutex
	got [][]byte
}

func newUDPRecorder(t *testing.T) *udpRecorder {
	t.Helper()
	r := &udpRecorder{}
	srv, err := ServeUDP("127.0.0.1:0", 1, func(c *net.UDPConn) {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.got = append(r.got, bytes.Clone(buf[:n]))
			r.mu.Unlock()
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	r.UDPConn = srv
	t.Cleanup(func() { srv.Close() })
	return r
}

func TestUDPFlow(t *testing.T) {
	for _, tc := range []struct {
		name      string
		flow      UDPFlow
		wantGood  bool // good replies come
		wantFirst int  // how many First open the flow (0: no check)
		firstOnce bool // First never follows Req
		wantBad   bool // replies count as bad
	}{
		{"every datagram alike", UDPFlow{First: []byte("payload1"), Req: []byte("payload1"), Window: 3}, true, 3, false, false},
		{"header on every datagram, reply length checked", UDPFlow{First: []byte("HDR:data"), Req: []byte("HDR:data"), Window: 2, ReplyLen: 8}, true, 2, false, false},
		{"header on the first datagram", UDPFlow{First: []byte("HDR:data"), Req: []byte("data"), Window: 4, FirstAlone: true}, true, 1, true, false},
		{"first datagram with the window", UDPFlow{First: []byte("HDR:data"), Req: []byte("data"), Window: 4}, true, 4, true, false},
		{"replies of the wrong length", UDPFlow{First: []byte("data"), Req: []byte("data"), Window: 1, ReplyLen: 42}, false, 1, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newUDPRecorder(t)
			c, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			f := tc.flow
			f.Conn = c
			f.Run(time.Now().Add(300 * time.Millisecond))
			if (f.Got > 0) != tc.wantGood || (f.Bad > 0) != tc.wantBad {
				t.Errorf("got %d, bad %d, lost %d", f.Got, f.Bad, f.Lost)
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if len(srv.got) < tc.wantFirst {
				t.Fatalf("the server got %d datagrams", len(srv.got))
			}
			for i, d := range srv.got[:tc.wantFirst] {
				if !bytes.Equal(d, f.First) {
					t.Errorf("datagram %d is %q, want the first %q", i, d, f.First)
				}
			}
			if tc.firstOnce && f.Lost == 0 {
				firsts := 0
				for _, d := range srv.got {
					if bytes.Equal(d, f.First) {
						firsts++
					}
				}
				if firsts != tc.wantFirst {
					t.Errorf("%d first datagrams, want %d", firsts, tc.wantFirst)
				}
			}
		})
	}
}

func TestUDPFlowLost(t *testing.T) {
	// A socket that never answers: every window is lost, nothing comes.
	quiet, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer quiet.Close()
	c, err := net.DialUDP("udp", nil, quiet.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f := UDPFlow{Conn: c, First: []byte("x"), Req: []byte("x"), Window: 3}
	f.Run(time.Now().Add(500 * time.Millisecond))
	if f.Got != 0 || f.Bad != 0 || f.Lost == 0 || f.Lost%3 != 0 {
		t.Errorf("got %d, bad %d, lost %d: want only whole windows lost", f.Got, f.Bad, f.Lost)
	}
}
