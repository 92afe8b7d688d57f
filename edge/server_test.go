//go:build linux

package edge

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// freePort returns a port of network ("tcp" or "udp") that is free on
// 127.0.0.1 now and usable as a forwarding port (below 65000, not one of
// the reserved ports).
func freePort(t *testing.T, network string) uint16 {
	t.Helper()
	reserved := map[uint16]bool{3943: true, 3944: true, 6088: true, 36000: true, 56000: true, 4789: true, 4790: true, 6080: true, 61708: true}
	for range 100 {
		var port uint16
		if network == "tcp" {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			port = uint16(ln.Addr().(*net.TCPAddr).Port)
			ln.Close()
		} else {
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			port = uint16(c.LocalAddr().(*net.UDPAddr).Port)
			c.Close()
		}
		if port < 65000 && !reserved[port] {
			return port
		}
	}
	t.Fatal("no usable free port")
	return 0
}

// TestReloadUnderTraffic reloads a running Server many times with rules
// that differ only in their tags, while a UDP flow and TCP connections go
// through it. Tag changes keep every rule's state: the UDP flow keeps its
// upstream socket (the origin sees one source port) and every datagram and
// connection is relayed.
//
// Under -race it fails with the current server.go: ruleStates writes
// old.rule = r (server.go:153) for kept rules without synchronisation,
// while the forwarding goroutines read what the rule's mode means (now
// rs.pass: udp.go replyPayload, tcp.go handleTCP).
func TestReloadUnderTraffic(t *testing.T) {
	// Origins: a UDP echo that remembers who sent, and a TCP echo.
	origin, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer origin.Close()
	var mu sync.Mutex
	sources := map[netip.AddrPort]int{}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := origin.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			mu.Lock()
			sources[from]++
			mu.Unlock()
			origin.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	tcpOrigin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcpOrigin.Close()
	go func() {
		for {
			c, err := tcpOrigin.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()

	udpPort, tcpPort := freePort(t, "udp"), freePort(t, "tcp")
	path := filepath.Join(t.TempDir(), "rules.txt")
	write := func(tag int) {
		text := fmt.Sprintf("udp:%d 127.0.0.1 %d off off tag %d\ntcp:%d 127.0.0.1 %d off off tag %d\n",
			udpPort, origin.LocalAddr().(*net.UDPAddr).Port, tag,
			tcpPort, tcpOrigin.Addr().(*net.TCPAddr).Port, tag)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(0)
	s, err := New(Options{RulesPath: path, ListenIP: netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()

	client, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(udpPort)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	exchange := func(i int) {
		t.Helper()
		msg := fmt.Sprintf("datagram %d", i)
		if _, err := client.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		client.SetReadDeadline(time.Now().Add(waitTimeout))
		buf := make([]byte, 2048)
		n, err := client.Read(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("udp reply %q, %v; want %q", buf[:n], err, msg)
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", tcpPort), waitTimeout)
		if err != nil {
			t.Fatalf("tcp dial during reloads: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(waitTimeout))
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
			t.Fatalf("tcp echo %q, %v; want %q", got, err, msg)
		}
	}
	exchange(0)

	const reloads = 20
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= reloads; i++ {
			write(i)
			if err := s.Reload(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 1; ; i++ {
		exchange(i)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("reload: %v", err)
			}
			exchange(i + 1)
			mu.Lock()
			defer mu.Unlock()
			if len(sources) != 1 {
				t.Errorf("the origin saw the flow from %d source ports %v, want one: tag-only reloads must keep the flow", len(sources), sources)
			}
			return
		default:
		}
	}
}

// TestMaxTCPConns holds MaxTCPConns connections open through a Server and
// checks that one more is closed at once and counted as conn_limit, and
// that a slot freed by a closed connection serves the next client.
func TestMaxTCPConns(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, port := startEchoEdge(t, Options{MaxTCPConns: 2, Registerer: reg})
	// A cleanup, not a defer: it runs after the clients' cleanups close
	// their connections, which a drain waits for.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	echo := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(waitTimeout))
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 1))
		return err
	}
	dial := func() net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, waitTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	held := []net.Conn{dial(), dial()}
	for i, c := range held {
		if err := echo(c); err != nil {
			t.Fatalf("connection %d within the bound: %v", i, err)
		}
	}
	// One connection more: the edge accepts and resets it, which the client
	// sees at its first write or read, or already at connect.
	try := func() error {
		c, err := net.DialTimeout("tcp", addr, waitTimeout)
		if err != nil {
			return err
		}
		defer c.Close()
		return echo(c)
	}
	if err := try(); err == nil {
		t.Fatal("a third connection was relayed with MaxTCPConns 2")
	}
	if got := gatheredErrors(t, reg, "conn_limit"); got != 1 {
		t.Fatalf("conn_limit counted %v times, want 1", got)
	}
	held[0].Close()
	deadline := time.Now().Add(waitTimeout)
	for {
		err := try()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot freed after a held connection closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gatheredErrors returns realip_edge_errors_total{reason=reason} summed over rules.
func gatheredErrors(t *testing.T, g prometheus.Gatherer, reason string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "realip_edge_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// startEchoEdge starts a Server on 127.0.0.1 with one TCP rule ("off"
// mode) to a TCP echo origin, with opts for everything but the files and
// the address; it returns the server and its forwarding port. The caller
// shuts the server down; the origin closes with the test.
func startEchoEdge(t *testing.T, opts Options) (*Server, uint16) {
	t.Helper()
	origin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { origin.Close() })
	go func() {
		for {
			c, err := origin.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	port := freePort(t, "tcp")
	opts.ListenIP = netip.MustParseAddr("127.0.0.1")
	s := startRules(t, opts, fmt.Sprintf("tcp:%d 127.0.0.1 %d off off\n", port, origin.Addr().(*net.TCPAddr).Port))
	return s, port
}

// startRules starts a Server on the rules text (written to a temporary
// RulesPath); the caller shuts it down.
func startRules(t *testing.T, opts Options, rules string) *Server {
	t.Helper()
	opts.RulesPath = filepath.Join(t.TempDir(), "rules.txt")
	if err := os.WriteFile(opts.RulesPath, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return s
}
