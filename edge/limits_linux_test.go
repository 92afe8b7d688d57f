//go:build linux

package edge

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/realip/realip/edge/origin"
)

// These tests go through a Server in both relay modes (the epoll loops and
// the goroutines): the bounds per client address and the eviction at the
// server's UDP flow bound (issue 18 part 3).

var (
	loop1 = netip.MustParseAddr("127.0.0.1")
	loop2 = netip.MustParseAddr("127.0.0.2")
)

// udpFrom is a client on src connected to the edge's UDP port on 127.0.0.1.
func udpFrom(t *testing.T, src netip.Addr, port uint16) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), net.UDPAddrFromAddrPort(netip.AddrPortFrom(loop1, port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitTimeout))
	return c
}

// sendVia sends msg on c and returns the datagram the origin got next and
// the edge's port it came from.
func sendVia(t *testing.T, c *net.UDPConn, origin *net.UDPConn, msg string) (string, uint16) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	d, from := readFrom(t, origin)
	return string(d), from.Port()
}

// TestServerUDPPerIPLimit: a client address with MaxUDPFlowsPerIP flows
// gets no more (counted as per_ip_limit); another address still does.
func TestServerUDPPerIPLimit(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			origin, oport := udpOrigin(t)
			opts := Options{ListenIP: loop1, GoroutineRelay: mode.goroutine, MaxUDPFlowsPerIP: 2}
			e, port := startUDPEdge(t, opts, oport, "off")
			for i := range 2 {
				msg := fmt.Sprintf("flow %d", i)
				if got, _ := sendVia(t, udpFrom(t, loop1, port), origin, msg); got != msg {
					t.Fatalf("origin got %q, want %q", got, msg)
				}
			}
			third := udpFrom(t, loop1, port)
			if _, err := third.Write([]byte("third")); err != nil {
				t.Fatal(err)
			}
			e.waitMetric(t, 1, "realip_edge_errors_total", map[string]string{"reason": "per_ip_limit"})
			if got, _ := sendVia(t, udpFrom(t, loop2, port), origin, "other"); got != "other" {
				t.Fatalf("origin got %q from another address, want %q (the third flow of 127.0.0.1 went through)", got, "other")
			}
			e.waitMetric(t, 3, "realip_edge_udp_flows_active", nil)
		})
	}
}

// TestServerUDPEvictsBusiestLRU: at MaxUDPFlows a newcomer from another
// address is served; the flow given up is the least recently used one of
// the busiest address (counted as flow_evicted), and the other flows keep
// their upstream sockets.
func TestServerUDPEvictsBusiestLRU(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			origin, oport := udpOrigin(t)
			opts := Options{ListenIP: loop1, GoroutineRelay: mode.goroutine, MaxUDPFlows: 3}
			e, port := startUDPEdge(t, opts, oport, "off")
			var clients []*net.UDPConn
			var ports []uint16
			for i := range 3 {
				c := udpFrom(t, loop1, port)
				_, p := sendVia(t, c, origin, fmt.Sprintf("open %d", i))
				clients, ports = append(clients, c), append(ports, p)
			}
			for i := 1; i < 3; i++ { // the first flow is the least recently used
				if _, p := sendVia(t, clients[i], origin, "again"); p != ports[i] {
					t.Fatalf("flow %d moved from edge port %d to %d", i, ports[i], p)
				}
			}
			if got, _ := sendVia(t, udpFrom(t, loop2, port), origin, "newcomer"); got != "newcomer" {
				t.Fatalf("origin got %q, want the newcomer's datagram", got)
			}
			e.waitMetric(t, 1, "realip_edge_errors_total", map[string]string{"reason": "flow_evicted"})
			e.waitMetric(t, 3, "realip_edge_udp_flows_active", nil)
			if n := e.metric(t, "realip_edge_errors_total", map[string]string{"reason": "flow_limit"}); n != 0 {
				t.Errorf("flow_limit counted %v times, want 0", n)
			}
			for i := 1; i < 3; i++ {
				if _, p := sendVia(t, clients[i], origin, "kept"); p != ports[i] {
					t.Errorf("flow %d moved from edge port %d to %d: the wrong flow was evicted", i, ports[i], p)
				}
			}
		})
	}
}

// tcpFrom connects from src to the edge, sends '!' and returns the client
// end and, when the edge relayed it, the origin's end.
func tcpFrom(t *testing.T, e *loopEdge, origin *net.TCPListener, src netip.Addr) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	d := net.Dialer{Timeout: waitTimeout, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
	c, err := d.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := c.Write([]byte("!")); err != nil {
		return c.(*net.TCPConn), nil
	}
	origin.SetDeadline(time.Now().Add(waitTimeout))
	for {
		o, err := origin.AcceptTCP()
		if err != nil {
			t.Fatalf("origin accept: %v", err)
		}
		o.SetDeadline(time.Now().Add(waitTimeout))
		var b [1]byte
		if _, err := o.Read(b[:]); err != nil || b[0] != '!' {
			o.Close() // a health check
			continue
		}
		t.Cleanup(func() { o.Close() })
		return c.(*net.TCPConn), o
	}
}

// TestServerTCPPerIPLimit: a client address with MaxTCPConnsPerIP
// connections has the next one reset (counted as per_ip_limit); another
// address is still served, and so is the first once one of its closed.
func TestServerTCPPerIPLimit(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			ln, oport := originListener(t)
			opts := Options{GoroutineRelay: mode.goroutine, MaxTCPConnsPerIP: 2, Origin: origin.Options{CheckEvery: time.Hour}}
			e := startLoopEdge(t, opts, oport)
			var held [][2]*net.TCPConn
			for range 2 {
				c, o := tcpFrom(t, e, ln, loop1)
				if o == nil {
					t.Fatal("a connection within the bound was not relayed")
				}
				held = append(held, [2]*net.TCPConn{c, o})
			}
			d := net.Dialer{Timeout: waitTimeout, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
			// The edge accepts and resets it: the client sees that at its
			// first read, or already at connect.
			third, err := d.Dial("tcp", e.addr)
			if err == nil {
				defer third.Close()
				third.SetDeadline(time.Now().Add(waitTimeout))
				_, err = third.Read(make([]byte, 1))
			}
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("third connection from one address: %v, want a reset", err)
			}
			e.waitMetric(t, 1, "realip_edge_errors_total", map[string]string{"reason": "per_ip_limit"})
			if _, o := tcpFrom(t, e, ln, loop2); o == nil {
				t.Fatal("another address was not relayed")
			}
			held[0][0].Close()
			held[0][1].Close()
			e.waitMetric(t, 2, "realip_edge_tcp_connections_active", nil)
			if _, o := tcpFrom(t, e, ln, loop1); o == nil {
				t.Fatal("no slot of 127.0.0.1 freed after one of its connections closed")
			}
		})
	}
}
