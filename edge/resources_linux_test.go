//go:build linux

package edge

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/edge/origin"
)

// These tests go through a Server in both relay modes: what the edge does
// with its own resource errors and with datagrams too big for their header
// (issue 18 part 4).

// TestServerUDPTooBigKeepsFlow: a client datagram that does not fit in a
// UDP datagram once the header is added is dropped and counted
// (datagram_too_big); the flow stays, so the origin sees the next datagram
// from the same proxy port, and the origin is not marked down.
func TestServerUDPTooBigKeepsFlow(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		for _, framing := range []struct {
			ipmode string
			every  bool // PPv2EveryDatagram
		}{{"spp", false}, {"ppv2", false}, {"ppv2", true}} {
			ipmode := framing.ipmode
			t.Run(fmt.Sprintf("%s/%s/every=%v", mode.name, ipmode, framing.every), func(t *testing.T) {
				t.Parallel()
				origin, oport := udpOrigin(t)
				opts := Options{ListenIP: loop1, GoroutineRelay: mode.goroutine, PPv2EveryDatagram: framing.every}
				e, port := startUDPEdge(t, opts, oport, ipmode)
				c := udpFrom(t, loop1, port)
				if ipmode == "ppv2" { // the header goes on the first datagram: make that the big one
					if _, err := c.Write(bytes.Repeat([]byte("x"), 65507)); err != nil {
						t.Fatal(err)
					}
					e.waitMetric(t, 1, "realip_edge_errors_total", map[string]string{"reason": "datagram_too_big"})
				}
				d, from := readFromAfter(t, c, origin, "small")
				payload := checkUDPHeader(t, ipmode, true, d, netip.MustParseAddrPort(c.LocalAddr().String()), netip.AddrPortFrom(loop1, port))
				if string(payload) != "small" {
					t.Fatalf("origin got %q, want %q", payload, "small")
				}
				if _, err := c.Write(bytes.Repeat([]byte("x"), 65507)); err != nil {
					t.Fatal(err)
				}
				d2, from2 := readFromAfter(t, c, origin, "after")
				if from2 != from {
					t.Errorf("the datagram after the big one came from %v, the flow's from %v: the flow ended", from2, from)
				}
				if ipmode == "spp" && !strings.HasSuffix(string(d2), "after") {
					t.Errorf("origin got %q, want the datagram after the big one", d2)
				}
				// With PROXY v2 on the first datagram only, the second big one
				// fits without a header and goes through (skipped above).
				want := 1.0
				if ipmode == "ppv2" && framing.every {
					want = 2
				}
				e.waitMetric(t, want, "realip_edge_errors_total", map[string]string{"reason": "datagram_too_big"})
				for _, r := range []string{"upstream_write", "dial"} {
					if n := e.metric(t, "realip_edge_errors_total", map[string]string{"reason": r}); n != 0 {
						t.Errorf("%s counted %v times, want 0", r, n)
					}
				}
				e.waitMetric(t, 1, "realip_edge_origin_up", nil)
			})
		}
	}
}

// readFromAfter sends msg on c and returns the next datagram the origin
// got that is not a big one.
func readFromAfter(t *testing.T, c, origin *net.UDPConn, msg string) ([]byte, netip.AddrPort) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		d, from := readFrom(t, origin)
		if len(d) < 1000 {
			return d, from
		}
	}
	t.Fatal("the origin got only big datagrams")
	return nil, netip.AddrPort{}
}

// fdChildEnv selects TestLocalResourceErrorsBlameNoOrigin's child mode.
const fdChildEnv = "REALIP_EDGE_FD_CHILD"

// TestLocalResourceErrorsBlameNoOrigin runs the edge in a child process
// whose descriptors are all taken, so that its own socket() for a TCP
// connection or a UDP flow fails with EMFILE: that is counted as
// local_resource, not as a dial error, and leaves the origin up.
func TestLocalResourceErrorsBlameNoOrigin(t *testing.T) {
	if mode := os.Getenv(fdChildEnv); mode != "" {
		fdChild(t, mode)
		return
	}
	t.Parallel()
	for _, mode := range relayModes {
		for _, proto := range []string{"tcp", "udp"} {
			t.Run(mode.name+"/"+proto, func(t *testing.T) {
				t.Parallel()
				cmd := exec.Command(os.Args[0], "-test.run=^TestLocalResourceErrorsBlameNoOrigin$", "-test.v", "-test.count=1")
				cmd.Env = append(os.Environ(), fdChildEnv+"="+mode.name+"/"+proto)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("child: %v\n%s", err, out)
				}
			})
		}
	}
}

// fdChild is the child of TestLocalResourceErrorsBlameNoOrigin.
func fdChild(t *testing.T, mode string) {
	// A low soft limit, which the edge raises to what it asks for: few
	// descriptors to take.
	lim := unix.Rlimit{Cur: 1024}
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &cur); err != nil {
		t.Fatal(err)
	}
	lim.Max = cur.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	goroutine := strings.HasPrefix(mode, "goroutine/")
	opts := Options{GoroutineRelay: goroutine, MaxTCPConns: 10, MaxUDPFlows: 10, Origin: origin.Options{CheckEvery: time.Hour}}
	var e *loopEdge
	var client *net.UDPConn
	if strings.HasSuffix(mode, "/udp") {
		opts.ListenIP = loop1
		_, oport := udpOrigin(t)
		var port uint16
		e, port = startUDPEdge(t, opts, oport, "off")
		client = udpFrom(t, loop1, port)
	} else {
		ln, oport := originListener(t)
		e = startLoopEdge(t, opts, oport)
		ln.SetDeadline(time.Now().Add(waitTimeout))
		if c, err := ln.Accept(); err == nil { // the first health check
			c.Close()
		}
	}
	e.waitMetric(t, 1, "realip_edge_origin_up", nil)
	fds := takeAllFDs(t)
	if client != nil {
		client.Write([]byte("no descriptor for the flow"))
	} else {
		unix.Close(fds[len(fds)-1]) // one for the client, one for the edge's accept
		unix.Close(fds[len(fds)-2])
		fds = fds[:len(fds)-2]
		d := net.Dialer{Timeout: waitTimeout}
		if c, err := d.Dial("tcp", e.addr); err == nil {
			c.SetDeadline(time.Now().Add(waitTimeout))
			c.Read(make([]byte, 1)) // reset by the edge
			c.Close()
		}
	}
	counted := func(reason string) float64 {
		return e.metric(t, "realip_edge_errors_total", map[string]string{"reason": reason})
	}
	for deadline := time.Now().Add(waitTimeout); counted("local_resource")+counted("dial") == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	if n := counted("local_resource"); n == 0 {
		t.Errorf("local_resource not counted")
	}
	if n := counted("dial"); n != 0 {
		t.Errorf("dial counted %v times for the edge's own EMFILE", n)
	}
	if up := e.metric(t, "realip_edge_origin_up", nil); up != 1 {
		t.Errorf("origin_up = %v after the edge ran out of descriptors, want 1", up)
	}
}

// takeAllFDs duplicates descriptors until the process has none left.
func takeAllFDs(t *testing.T) []int {
	var fds []int
	for range 1 << 16 {
		fd, err := unix.Dup(0)
		if err == unix.EMFILE {
			return fds
		}
		if err != nil {
			t.Fatalf("dup: %v", err)
		}
		fds = append(fds, fd)
	}
	t.Fatal("no EMFILE after 65536 descriptors")
	return nil
}

// TestServerLogRateLimited: clients refused one after another for the
// same reason (an origin that refuses) make one log line, not one each.
func TestServerLogRateLimited(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			var logs lockedBuffer
			ln, oport := originListener(t)
			ln.Close() // refuses
			opts := Options{GoroutineRelay: mode.goroutine, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Origin: origin.Options{CheckEvery: time.Hour}}
			e := startLoopEdge(t, opts, oport)
			const clients = 20
			for range clients {
				c, err := net.DialTimeout("tcp", e.addr, waitTimeout)
				if err != nil {
					continue // reset before the connect returned
				}
				c.SetDeadline(time.Now().Add(waitTimeout))
				c.Read(make([]byte, 1)) // until the edge resets it
				c.Close()
			}
			e.waitMetric(t, clients, "realip_edge_tcp_connections_total", nil)
			if n := logs.count("edge: no origin"); n != 1 {
				t.Errorf("%d clients without an origin logged %d lines, want 1", clients, n)
			}
		})
	}
}
