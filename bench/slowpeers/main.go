// Command slowpeers measures how long a legitimate client behind a trusted
// proxy waits while other hosts of the trusted prefix hold connections
// open with a header that never completes (issue 18.2). It runs a realip
// listener in process on loopback, N stalling connections from K source
// addresses (127.0.0.1..127.0.0.K) that send "P" and wait, reconnecting
// when closed, and then M probes in a row, each a fresh connection with a
// complete PROXY v1 header and a ping, timed from dial to the reply.
//
//	go run ./bench/slowpeers -stalls 2000 -sources 1 -probes 300
//
// bench/slowpeers.sh runs it against the listener of another commit too.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realip/realip/listener"
)

func main() {
	stalls := flag.Int("stalls", 2000, "stalled connections held open")
	sources := flag.Int("sources", 1, "loopback source addresses the stalls come from (127.0.0.1..)")
	probes := flag.Int("probes", 300, "timed connections with a complete header")
	settle := flag.Duration("settle", 2*time.Second, "wait after the stalls are connected, before probing")
	flag.Parse()
	if err := run(*stalls, *sources, *probes, *settle); err != nil {
		fmt.Fprintln(os.Stderr, "slowpeers:", err)
		os.Exit(1)
	}
}

func run(stalls, sources, probes int, settle time.Duration) error {
	l, err := listener.Listen("tcp", "127.0.0.1:0", listener.Config{
		Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	})
	if err != nil {
		return err
	}
	defer l.Close()
	go serve(l)
	done := make(chan struct{})
	var connected, reconnects atomic.Int64
	var wg sync.WaitGroup
	for i := range stalls {
		wg.Add(1)
		src := net.IPv4(127, 0, 0, byte(1+i%sources))
		go func() {
			defer wg.Done()
			stall(l.Addr().String(), src, done, &connected, &reconnects)
		}()
	}
	for deadline := time.Now().Add(30 * time.Second); connected.Load() < int64(stalls); {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d stalls connected", connected.Load(), stalls)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(settle)
	lat, failed := probe(l.Addr().String(), probes)
	close(done)
	report(stalls, sources, lat, failed, reconnects.Load(), l.Stats())
	return nil
}

// serve answers "ping" with "pong" on every connection Accept returns.
func serve(l *listener.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err == nil {
				c.Write([]byte("pong"))
			}
		}()
	}
}

// stall keeps one connection with an incomplete header open from src,
// reconnecting whenever the listener closes it, until done.
func stall(addr string, src net.IP, done <-chan struct{}, connected, reconnects *atomic.Int64) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
	first := true
	for {
		select {
		case <-done:
			return
		default:
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		c.Write([]byte("P"))
		if first {
			connected.Add(1)
			first = false
		} else {
			reconnects.Add(1)
		}
		go func() { <-done; c.Close() }()
		io.Copy(io.Discard, c) // until the listener closes it
		c.Close()
	}
}

// probe times n connections with a complete header, one after another.
func probe(addr string, n int) (lat []time.Duration, failed int) {
	hdr := []byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\nping")
	for range n {
		t0 := time.Now()
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			failed++
			continue
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 4)
		_, err = c.Write(hdr)
		if err == nil {
			_, err = io.ReadFull(c, buf)
		}
		c.Close()
		if err != nil || string(buf) != "pong" {
			failed++
			continue
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, failed
}

func report(stalls, sources int, lat []time.Duration, failed int, reconnects int64, s listener.Stats) {
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	fmt.Printf("stalls=%d sources=%d probes_ok=%d failed=%d p50=%v p90=%v p99=%v max=%v stall_reconnects=%d pending=%d rejected=%d\n",
		stalls, sources, len(lat), failed, pct(0.50).Round(10*time.Microsecond), pct(0.90).Round(10*time.Microsecond),
		pct(0.99).Round(10*time.Microsecond), pct(1).Round(10*time.Microsecond), reconnects, s.Pending, s.TotalRejected())
}
