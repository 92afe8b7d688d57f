//go:build linux

package edge

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/rawsys"
	"github.com/realip/realip/wire"
)

// These tests go through a Server's UDP ports in both relay modes: the
// epoll loops (udploop_linux.go) and the goroutines (udprelay.go).

// udpOrigin is a UDP socket on 127.0.0.1 standing in for an origin.
func udpOrigin(t *testing.T) (*net.UDPConn, uint16) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

// startUDPEdge starts a Server with the one rule "udp:PORT 127.0.0.1
// originPort off mode" on a free port and returns it with that port.
func startUDPEdge(t *testing.T, opts Options, originPort uint16, mode string) (*loopEdge, uint16) {
	t.Helper()
	port := freePort(t, "udp")
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	s := startRules(t, opts, fmt.Sprintf("udp:%d 127.0.0.1 %d off %s\n", port, originPort, mode))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		s.Shutdown(ctx)
	})
	return &loopEdge{s: s, reg: reg}, port
}

// dialEdgeUDP is a client connected to the edge's port on addr.
func dialEdgeUDP(t *testing.T, addr netip.Addr, port uint16) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitTimeout))
	return c
}

// readFrom reads one datagram at the origin.
func readFrom(t *testing.T, origin *net.UDPConn) ([]byte, netip.AddrPort) {
	t.Helper()
	origin.SetReadDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, maxDatagram)
	n, from, err := origin.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("origin read: %v", err)
	}
	return buf[:n], from
}

// TestServerUDPRelay: each IP mode puts its header on the datagrams to the
// origin (PROXY v2 on the first only), SPP is cut off the replies, a burst
// longer than one recvmmsg arrives whole both ways, and all is counted.
func TestServerUDPRelay(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		for _, ipmode := range []string{"off", "spp", "ppv2"} {
			t.Run(mode.name+"/"+ipmode, func(t *testing.T) {
				t.Parallel()
				origin, oport := udpOrigin(t)
				opts := Options{ListenIP: netip.MustParseAddr("127.0.0.1"), GoroutineRelay: mode.goroutine}
				e, port := startUDPEdge(t, opts, oport, ipmode)
				c := dialEdgeUDP(t, netip.MustParseAddr("127.0.0.1"), port)
				client := netip.MustParseAddrPort(c.LocalAddr().String())
				target := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)

				const burst = 3*udpVlen + 1
				for i := range burst {
					if _, err := fmt.Fprintf(c, "msg %d", i); err != nil {
						t.Fatal(err)
					}
				}
				var from netip.AddrPort
				for i := range burst {
					d, src := readFrom(t, origin)
					from = src
					payload := checkUDPHeader(t, ipmode, i == 0, d, client, target)
					if want := fmt.Sprintf("msg %d", i); string(payload) != want {
						t.Fatalf("origin got %q, want %q", payload, want)
					}
					reply := []byte(fmt.Sprintf("reply %d", i))
					if ipmode == "spp" {
						reply = wire.AppendSPP(nil, wire.SPPHeader{Client: client, Proxy: target})
						reply = append(reply, fmt.Sprintf("reply %d", i)...)
					}
					if _, err := origin.WriteToUDPAddrPort(reply, from); err != nil {
						t.Fatal(err)
					}
				}
				buf := make([]byte, 2048)
				for i := range burst {
					n, err := c.Read(buf)
					if err != nil {
						t.Fatalf("reply %d: %v", i, err)
					}
					if want := fmt.Sprintf("reply %d", i); string(buf[:n]) != want {
						t.Fatalf("client got %q, want %q", buf[:n], want)
					}
				}
				labels := map[string]string{"direction": "to_client"}
				e.waitMetric(t, burst, "realip_edge_udp_datagrams_total", labels)
				labels["direction"] = "to_origin"
				e.waitMetric(t, burst, "realip_edge_udp_datagrams_total", labels)
				e.waitMetric(t, 1, "realip_edge_udp_flows_active", nil)
			})
		}
	}
}

// checkUDPHeader checks the header of mode in front of a datagram the
// origin got and returns the payload.
func checkUDPHeader(t *testing.T, mode string, first bool, d []byte, client, target netip.AddrPort) []byte {
	t.Helper()
	switch {
	case mode == "spp":
		h, err := wire.ParseSPP(d)
		if err != nil || h.Client != client || h.Proxy != target {
			t.Fatalf("SPP header %+v, %v; want client %v proxy %v", h, err, client, target)
		}
		return d[wire.SPPHeaderLen:]
	case mode == "ppv2" && first:
		h, payload, err := wire.ParseProxyDatagram(d)
		if err != nil || h.Source != client || h.Destination != target {
			t.Fatalf("PROXY v2 header %+v, %v; want %v -> %v", h, err, client, target)
		}
		return payload
	}
	if wire.IsSPP(d) {
		t.Fatalf("unexpected header on %q", d)
	}
	return d
}

// TestServerUDPEveryAddress: listening on every address, the edge answers
// IPv4 and IPv6 clients from the address they sent to (their connected
// sockets would drop a reply from another).
func TestServerUDPEveryAddress(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			origin, oport := udpOrigin(t)
			go func() {
				buf := make([]byte, 2048)
				for {
					n, from, err := origin.ReadFromUDPAddrPort(buf)
					if err != nil {
						return
					}
					origin.WriteToUDPAddrPort(buf[:n], from)
				}
			}()
			_, port := startUDPEdge(t, Options{GoroutineRelay: mode.goroutine}, oport, "off")
			for _, addr := range []string{"127.0.0.1", "::1"} {
				c := dialEdgeUDP(t, netip.MustParseAddr(addr), port)
				if _, err := c.Write([]byte("ping " + addr)); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 64)
				n, err := c.Read(buf)
				if err != nil || string(buf[:n]) != "ping "+addr {
					t.Fatalf("%s: reply %q, %v", addr, buf[:n], err)
				}
			}
		})
	}
}

// TestServerUDPIdle: a flow quiet for UDPIdle is closed, and the client's
// next datagram opens a new one.
func TestServerUDPIdle(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			origin, oport := udpOrigin(t)
			opts := Options{ListenIP: netip.MustParseAddr("127.0.0.1"), GoroutineRelay: mode.goroutine, UDPIdle: 100 * time.Millisecond}
			e, port := startUDPEdge(t, opts, oport, "off")
			c := dialEdgeUDP(t, netip.MustParseAddr("127.0.0.1"), port)
			c.Write([]byte("one"))
			_, first := readFrom(t, origin)
			e.waitMetric(t, 0, "realip_edge_udp_flows_active", nil)
			c.Write([]byte("two"))
			_, second := readFrom(t, origin)
			e.waitMetric(t, 2, "realip_edge_udp_flows_total", nil)
			if first == second {
				t.Logf("the new flow got the same upstream port %v (allowed, just unlikely)", first)
			}
		})
	}
}

// TestServerUDPOriginRefuses: an origin port nobody listens on answers with
// ICMP port unreachable; the flow is closed, and the next datagram opens a
// new one. (Whether the write or the read meets the refusal first is the
// kernel's timing, so the error counter is not asserted.)
func TestServerUDPOriginRefuses(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			origin, oport := udpOrigin(t)
			origin.Close()
			opts := Options{ListenIP: netip.MustParseAddr("127.0.0.1"), GoroutineRelay: mode.goroutine}
			e, port := startUDPEdge(t, opts, oport, "off")
			c := dialEdgeUDP(t, netip.MustParseAddr("127.0.0.1"), port)
			deadline := time.Now().Add(waitTimeout)
			for e.metric(t, "realip_edge_udp_flows_total", nil) < 2 || e.metric(t, "realip_edge_udp_flows_active", nil) != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("flows total %v active %v: the refused flow was not closed",
						e.metric(t, "realip_edge_udp_flows_total", nil), e.metric(t, "realip_edge_udp_flows_active", nil))
				}
				c.Write([]byte("anyone?"))
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// TestServerUDPHandOver: a client datagram read by another loop than its
// flow's (the port's SO_REUSEPORT group changed) is forwarded by the
// owner.
func TestServerUDPHandOver(t *testing.T) {
	t.Parallel()
	origin, oport := udpOrigin(t)
	e, port := startUDPEdge(t, Options{ListenIP: netip.MustParseAddr("127.0.0.1")}, oport, "off")
	loops := e.s.evLoops.loops
	if len(loops) < 2 {
		t.Skip("one epoll loop (GOMAXPROCS=1): nothing to hand over to")
	}
	c := dialEdgeUDP(t, netip.MustParseAddr("127.0.0.1"), port)
	c.Write([]byte("first"))
	readFrom(t, origin)
	client := netip.MustParseAddrPort(c.LocalAddr().String())
	p := e.s.udp[port].(*udpLoopPort)
	f := p.flow(client)
	if f == nil || f.loop == nil {
		t.Fatalf("no loop flow for %v: %+v", client, f)
	}
	other := loops[0]
	if other == f.loop {
		other = loops[1]
	}
	other.Call(func() { other.handOver(f, []byte("handed over")) })
	if d, _ := readFrom(t, origin); string(d) != "handed over" {
		t.Fatalf("origin got %q", d)
	}
}

// TestSockaddrRoundTrip: addresses go into a sockaddr of the socket's
// family and come back as they were (IPv4 unmapped from an AF_INET6
// socket, a link-local IPv6 peer with its interface as the zone).
func TestSockaddrRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		family int
		in     string
	}{
		{unix.AF_INET, "192.0.2.1:53"},
		{unix.AF_INET6, "192.0.2.1:53"},
		{unix.AF_INET6, "[2001:db8::1]:443"},
		{unix.AF_INET6, "[fe80::1%7]:9000"},
	} {
		var sa unix.RawSockaddrAny
		in := netip.MustParseAddrPort(tc.in)
		rawsys.PutSockaddr(&sa, tc.family, in)
		if got := rawsys.SockaddrAddrPort(&sa); got != in {
			t.Errorf("family %d: %v came back as %v", tc.family, in, got)
		}
	}
}
