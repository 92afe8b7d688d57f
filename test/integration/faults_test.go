//go:build linux

package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/netns"
	"github.com/realip/realip/internal/testenv"
	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// Faults of the origin side, seen through realip-edge in the lab: what the
// client gets, what the edge counts, and that the edge goes on serving.

// originV4b is a second address of the origin host, for origin groups.
var originV4b = netip.MustParseAddr("198.51.100.11")

// TestFaultOriginRefuses forwards to a port where nothing listens: the
// client's connection, accepted by the edge, is closed at once (reset or
// EOF, no byte), every attempt counts as a dial error, and the origin is
// reported down.
func TestFaultOriginRefuses(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	e := startMetricsEdge(t, l.edge, "tcp:7101 198.51.100.10 7199 off ppv1 nothing listens\n"+
		"tcp:7102 2001:db8:2::10 7199 off ppv2 nothing listens over IPv6\n")
	for _, port := range []uint16{7101, 7102} {
		rule := fmt.Sprintf(`rule="tcp:%d"`, port)
		for _, fr := range []netip.Addr{edgeFrontV4, edgeFrontV6} {
			c, err := dial(l.client, netip.AddrPortFrom(fr, port))
			if errors.Is(err, unix.ECONNRESET) {
				continue // the reset came before the dialer saw the handshake end
			}
			if err != nil {
				t.Fatalf("dial the edge's port %d: %v", port, err)
			}
			c.SetDeadline(time.Now().Add(ioTimeout))
			_, _ = io.WriteString(c, "anyone there?\n") // may fail: the edge may have reset already
			readClosed(t, c)
			c.Close()
		}
		// The edge counts before it closes the client: no wait needed.
		if got := e.metricOf(t, "realip_edge_errors_total", rule, `reason="dial"`); got != 2 {
			t.Errorf("errors_total{%s,reason=dial} = %v, want 2 (one per connection)", rule, got)
		}
		if got := e.metricOf(t, "realip_edge_origin_up", rule); got != 0 {
			t.Errorf("origin_up{%s} = %v, want 0 after a refused dial", rule, got)
		}
		e.waitMetric(t, 0, "realip_edge_tcp_connections_active", rule)
	}
}

// TestFaultOriginDiesMidStream forwards to an origin that answers, reads a
// little, then dies: with a reset or with a plain close. The client sees its
// connection end (no hang), and the edge serves the next connection, again
// with the client's address.
func TestFaultOriginDiesMidStream(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	const originPort = 7299
	var ln *listener.Listener
	err := l.origin.Do(func() (err error) {
		ln, err = listener.Listen("tcp", fmt.Sprintf(":%d", originPort), listener.Config{
			Protocols: []wire.Proto{wire.PPv1, wire.PPv2},
			Trusted:   []netip.Prefix{netip.PrefixFrom(edgeBackV4, 32), netip.PrefixFrom(edgeBackV6, 128)},
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serveThenDie(ln)
	e := startMetricsEdge(t, l.edge, "tcp:7201 198.51.100.10 7299 off ppv1 dies\n"+
		"tcp:7202 2001:db8:2::10 7299 off ppv2 dies over IPv6\n")

	for _, port := range []uint16{7201, 7202} {
		for _, fr := range []netip.Addr{edgeFrontV4, edgeFrontV6} {
			for _, how := range []string{"rst!!", "fin!!"} {
				c := mustDial(t, l.client, netip.AddrPortFrom(fr, port))
				local := addrPort(c.LocalAddr())
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if want := "ok " + local.String() + "\n"; err != nil || line != want {
					t.Fatalf("port %d from %v: origin said %q (%v), want %q", port, local, line, err, want)
				}
				if _, err := io.WriteString(c, how); err != nil {
					t.Fatal(err)
				}
				readClosed(t, br) // the origin dies now: the connection must end
				c.Close()
			}
		}
		rule := fmt.Sprintf(`rule="tcp:%d"`, port)
		e.waitMetric(t, 0, "realip_edge_tcp_connections_active", rule)
		if got := e.metricOf(t, "realip_edge_tcp_connections_total", rule); got != 4 {
			t.Errorf("tcp_connections_total{%s} = %v, want 4", rule, got)
		}
	}
}

// serveThenDie serves ln: on each connection it writes "ok CLIENT\n", reads
// five bytes and then closes, with a reset if they are "rst!!".
func serveThenDie(ln *listener.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			lc := c.(*listener.Conn)
			defer lc.Close()
			lc.SetDeadline(time.Now().Add(ioTimeout))
			if _, err := fmt.Fprintf(lc, "ok %s\n", lc.Client()); err != nil {
				return
			}
			buf := make([]byte, 5)
			if _, err := io.ReadFull(lc, buf); err != nil {
				return
			}
			if string(buf) == "rst!!" {
				lc.NetConn().(*net.TCPConn).SetLinger(0)
			}
		}()
	}
}

// TestFaultUDPOriginSilent lets a UDP origin answer once and then fall
// silent: the flow expires after -udp-idle (realip_edge_udp_flows_active
// back to 0), and the client's next datagram opens a fresh flow, with a
// fresh PROXY v2 header on a ppv2 rule.
func TestFaultUDPOriginSilent(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	tests := []struct {
		rule       string
		port       uint16
		originPort uint16
		front      netip.Addr
		ppv2       bool
	}{
		{"udp:7301", 7301, 7399, edgeFrontV4, true},
		{"udp:7302", 7302, 7398, edgeFrontV6, false},
	}
	var rulesText strings.Builder
	origins := make([]*udpOrigin, len(tests))
	answering := make([]*atomic.Bool, len(tests))
	for i, tc := range tests {
		mode, origin := "off", originV6
		if tc.ppv2 {
			mode, origin = "ppv2", originV4
		}
		fmt.Fprintf(&rulesText, "%s %s %d off %s silent origin\n", tc.rule, origin, tc.originPort, mode)
		on := new(atomic.Bool)
		on.Store(true)
		answering[i] = on
		origins[i] = startUDPOrigin(t, l.origin, tc.originPort, func([]byte) []byte {
			if on.Load() {
				return []byte("pong")
			}
			return nil
		})
	}
	e := startMetricsEdge(t, l.edge, rulesText.String(), "-udp-idle", "300ms")

	for i, tc := range tests {
		t.Run(tc.rule, func(t *testing.T) {
			t.Parallel()
			rule := fmt.Sprintf(`rule="%s"`, tc.rule)
			o := origins[i]
			c := dialUDP(t, l.client, netip.AddrPortFrom(tc.front, tc.port))
			local := udpLocal(c)
			if got := udpExchange(t, c, []byte("one")); string(got) != "pong" {
				t.Fatalf("reply %q, want pong", got)
			}
			checkDatagram(t, o.next(t), "one", tc.ppv2, local)

			answering[i].Store(false) // the origin falls silent
			if _, err := c.Write([]byte("two")); err != nil {
				t.Fatal(err)
			}
			o.next(t) // forwarded, on this flow or (if it already expired) a new one
			e.waitMetric(t, 0, "realip_edge_udp_flows_active", rule)
			opened := e.metricOf(t, "realip_edge_udp_flows_total", rule)
			if opened < 1 {
				t.Fatalf("udp_flows_total{%s} = %v", rule, opened)
			}

			// The expired flow is gone: the next datagram opens a new one,
			// whose first datagram carries the header again.
			if _, err := c.Write([]byte("three")); err != nil {
				t.Fatal(err)
			}
			checkDatagram(t, o.next(t), "three", tc.ppv2, local)
			if got := e.metricOf(t, "realip_edge_udp_flows_total", rule); got != opened+1 {
				t.Errorf("udp_flows_total{%s} = %v after the flow expired, want %v", rule, got, opened+1)
			}
			e.waitMetric(t, 0, "realip_edge_udp_flows_active", rule)
		})
	}
}

// checkDatagram checks what the origin received: payload, behind a PROXY v2
// header naming client when ppv2 is set.
func checkDatagram(t *testing.T, d datagram, payload string, ppv2 bool, client netip.AddrPort) {
	t.Helper()
	data := d.data
	if ppv2 {
		h, rest, err := wire.ParseProxyDatagram(data)
		if err != nil || h == nil || h.Version != 2 || h.Source != client {
			t.Fatalf("origin got % x: header %+v (%v), want a PROXY v2 header from %v", data, h, err, client)
		}
		data = rest
	}
	if string(data) != payload {
		t.Fatalf("origin got payload %q, want %q", data, payload)
	}
}

// TestFaultGroupFailover runs an origin group of two addresses of the
// origin host, a whoami on each, with persistence. A client keeps reaching
// the same one; once that whoami is killed, the client's next connection
// fails over to the other at once (the failed dial marks the dead origin
// down), realip_edge_origin_up shows it down, and no later connection
// tries it again.
func TestFaultGroupFailover(t *testing.T) {
	t.Parallel()
	testenv.RequireCommand(t, "ss")
	l := &lab{Lab: netns.NewLab(t)}
	l.client, l.edge, l.origin = l.Host("client"), l.Host("edge"), l.Host("origin")
	l.Link(l.client, l.edge,
		prefixes(clientV4, 24, clientV6, 64),
		prefixes(edgeFrontV4, 24, edgeFrontV6, 64))
	l.Link(l.edge, l.origin,
		prefixes(edgeBackV4, 24, edgeBackV6, 64),
		prefixes(originV4, 24, originV4b, 24, originV6, 64))
	const port = 7499
	whoamis := map[netip.Addr]*netns.Proc{}
	for _, a := range []netip.Addr{originV4, originV4b} {
		whoamis[a] = startWhoami(t, l.origin, "-tcp", netip.AddrPortFrom(a, port).String(), "-proto", "ppv1", "-trust", edgeTrust)
	}
	groups := filepath.Join(t.TempDir(), "groups.txt")
	if err := os.WriteFile(groups, []byte("web 198.51.100.10 198.51.100.11\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := startMetricsEdge(t, l.edge, "tcp:7401 og:web 7499 on ppv1 failover\n", "-origin-groups", groups)
	const rule = `rule="tcp:7401"`
	fronts := []netip.Addr{edgeFrontV4, edgeFrontV6}

	// ask opens a session from the client through front and returns the
	// origin address that served it.
	ask := func(front netip.Addr) netip.Addr {
		t.Helper()
		s := openSession(t, l.client, netip.AddrPortFrom(front, 7401))
		defer s.c.Close()
		if s.line.client != s.local || s.line.via != "ppv1" {
			t.Errorf("whoami saw %+v, want client=%v via=ppv1", s.line, s.local)
		}
		return servedBy(t, l.origin, s.line.proxy)
	}
	pinned := map[netip.Addr]netip.Addr{}
	for _, fr := range fronts {
		for range 3 {
			got := ask(fr)
			if p, ok := pinned[fr]; ok && got != p {
				t.Fatalf("client via %v reached %v, then %v: persistence is on", fr, p, got)
			}
			pinned[fr] = got
		}
	}
	dead := pinned[edgeFrontV4]
	alive := originV4
	if dead == originV4 {
		alive = originV4b
	}
	p := whoamis[dead]
	if err := unix.Kill(-p.Cmd.Process.Pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Done()

	if got := ask(edgeFrontV4); got != alive {
		t.Fatalf("after %v died the client reached %v, want %v", dead, got, alive)
	}
	// Marked down by that very connection's failed dial, before it reached
	// the other origin: no wait.
	if got := e.metricOf(t, "realip_edge_origin_up", rule, fmt.Sprintf(`addr="%s"`, dead)); got != 0 {
		t.Errorf("origin_up{addr=%v} = %v, want 0", dead, got)
	}
	if got := e.metricOf(t, "realip_edge_origin_up", rule, fmt.Sprintf(`addr="%s"`, alive)); got != 1 {
		t.Errorf("origin_up{addr=%v} = %v, want 1", alive, got)
	}
	for _, fr := range fronts {
		for range 3 {
			if got := ask(fr); got != alive {
				t.Fatalf("client via %v reached %v, want %v (%v is down)", fr, got, alive, dead)
			}
		}
	}
	if got := e.metricOf(t, "realip_edge_errors_total", rule, `reason="dial"`); got != 1 {
		t.Errorf(`errors_total{reason="dial"} = %v, want 1: only the first connection after the death tries the dead origin`, got)
	}
}

// servedBy returns the origin address of the established connection in h
// whose peer is edgeSide (the edge's end, as whoami reports it).
func servedBy(t *testing.T, h *netns.Host, edgeSide netip.AddrPort) netip.Addr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	out, err := h.Command(ctx, "ss", "-Htn", "state", "established").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line) // Recv-Q Send-Q Local Peer
		if len(f) < 4 {
			continue
		}
		peer, err1 := netip.ParseAddrPort(f[3])
		local, err2 := netip.ParseAddrPort(f[2])
		if err1 == nil && err2 == nil && peer.Addr().Unmap() == edgeSide.Addr() && peer.Port() == edgeSide.Port() {
			return local.Addr().Unmap()
		}
	}
	t.Fatalf("no connection from %v in %s:\n%s", edgeSide, h.Name, out)
	return netip.Addr{}
}

// TestFaultManyShortConnections relays thousands of short connections, a
// few at a time, and checks that the edge gives back every descriptor: its
// open files return to what they were before, and no connection stays
// active.
func TestFaultManyShortConnections(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	startWhoami(t, l.origin, "-tcp", ":7599", "-proto", "ppv2", "-trust", edgeTrust)
	e := startMetricsEdge(t, l.edge, "tcp:7501 198.51.100.10 7599 off ppv2 many\n")
	const rule = `rule="tcp:7501"`
	pid := e.pid()
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || !strings.Contains(filepath.Base(exe), "realip-edge") {
		t.Fatalf("pid %d is %q (%v), not realip-edge", pid, exe, err)
	}

	// Warm up every path (relay, metrics) before counting.
	for _, fr := range []netip.Addr{edgeFrontV4, edgeFrontV6} {
		if err := shortConnection(l.client, netip.AddrPortFrom(fr, 7501)); err != nil {
			t.Fatal(err)
		}
	}
	e.waitMetric(t, 0, "realip_edge_tcp_connections_active", rule)
	before := countFDs(t, pid)

	const total, parallel = 3000, 6
	var next atomic.Int64
	errs := make(chan error, parallel)
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			for {
				n := next.Add(1)
				if n > total {
					return
				}
				fr := edgeFrontV4
				if n%2 == 0 {
					fr = edgeFrontV6
				}
				if err := shortConnection(l.client, netip.AddrPortFrom(fr, 7501)); err != nil {
					errs <- fmt.Errorf("connection %d: %w", n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Every socket is closed again. The relay's io.Copy splices through
	// pipes that Go keeps in a pool until a garbage collection: their
	// number follows the connections relayed at once, never the total.
	const maxPipes = 4 * 2 * 2 * parallel // fds: 2 per pipe, 2 directions, slack 4x
	var now fdCount
	waitFor(t, 2*ioTimeout, func() bool {
		now = countFDs(t, pid)
		return now.sockets <= before.sockets && now.other <= before.other && now.pipes <= before.pipes+maxPipes
	}, func() string {
		return fmt.Sprintf("realip-edge has %+v open descriptors, %+v before %d connections (pipes may grow by %d)", now, before, total, maxPipes)
	})
	t.Logf("descriptors of realip-edge: %+v before %d connections, %+v after", before, total, now)
	e.waitMetric(t, 0, "realip_edge_tcp_connections_active", rule)
	if got := e.metricOf(t, "realip_edge_tcp_connections_total", rule); got != total+2 {
		t.Errorf("tcp_connections_total = %v, want %d", got, total+2)
	}
	if got := e.metricOf(t, "realip_edge_errors_total", rule); got != 0 {
		t.Errorf("errors_total = %v, want none", got)
	}
}

// fdCount is a process's open descriptors by kind.
type fdCount struct{ sockets, pipes, other int }

// countFDs counts the open descriptors of process pid by kind.
func countFDs(t *testing.T, pid int) fdCount {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("descriptors of pid %d: %v", pid, err)
	}
	var n fdCount
	for _, ent := range ents {
		target, err := os.Readlink(filepath.Join(dir, ent.Name()))
		switch {
		case err != nil:
			// closed meanwhile
		case strings.HasPrefix(target, "socket:"):
			n.sockets++
		case strings.HasPrefix(target, "pipe:"):
			n.pipes++
		default:
			n.other++
		}
	}
	return n
}

// shortConnection connects from h to addr, sends a line and reads whoami's
// line and the echo, then closes. It reports instead of failing, for use
// from worker goroutines.
func shortConnection(h *netns.Host, addr netip.AddrPort) error {
	c, err := dial(h, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c, "x\n"); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("whoami line: %q, %w", line, err)
	}
	w, err := parseWhoamiLine(line)
	if err != nil {
		return err
	}
	if local := addrPort(c.LocalAddr()); w.client != local {
		return fmt.Errorf("whoami saw client %v, want %v", w.client, local)
	}
	echo := make([]byte, 2)
	if _, err := io.ReadFull(br, echo); err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if string(echo) != "x\n" {
		return fmt.Errorf("echo %q, want %q", echo, "x\n")
	}
	return nil
}
