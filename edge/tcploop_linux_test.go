//go:build linux

package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/realip/realip/internal/rawsys"
)

// The relay tests of relay_test.go drive relayConn directly; these go
// through a Server, so through its epoll loops, and run the same checks on
// the goroutine relay (GoroutineRelay) for comparison.

var relayModes = []struct {
	name      string
	goroutine bool
}{{"epoll", false}, {"goroutine", true}}

// loopEdge is a Server with one rule "off" to origins the test controls.
type loopEdge struct {
	s    *Server
	reg  *prometheus.Registry
	addr string
}

// startLoopEdge starts a Server forwarding a free port to the origin on
// port of 127.0.0.1.
func startLoopEdge(t *testing.T, opts Options, port uint16) *loopEdge {
	t.Helper()
	return startLoopEdgeGroup(t, opts, port, "127.0.0.1")
}

// originListener accepts on a free port and hands the connections out.
func originListener(t *testing.T) (*net.TCPListener, uint16) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, uint16(ln.Addr().(*net.TCPAddr).Port)
}

// through dials the edge and returns the client's end and the origin's.
// The client sends one byte ('!') first, which the origin reads: it tells
// the relayed connection from the origin pool's health checks, which
// connect and close.
func (e *loopEdge) through(t *testing.T, origin *net.TCPListener) (client, originSide *net.TCPConn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", e.addr, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("!")); err != nil {
		t.Fatal(err)
	}
	origin.SetDeadline(time.Now().Add(waitTimeout))
	for {
		o, err := origin.AcceptTCP()
		if err != nil {
			t.Fatalf("origin accept: %v", err)
		}
		o.SetDeadline(time.Now().Add(waitTimeout))
		var b [1]byte
		if _, err := io.ReadFull(o, b[:]); err != nil || b[0] != '!' {
			o.Close() // a health check
			continue
		}
		t.Cleanup(func() { o.Close() })
		c.SetDeadline(time.Now().Add(waitTimeout))
		return c.(*net.TCPConn), o
	}
}

func (e *loopEdge) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue metrics
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// waitMetric waits until the metric reaches want.
func (e *loopEdge) waitMetric(t *testing.T, want float64, name string, labels map[string]string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		got := e.metric(t, name, labels)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v, want %v", name, labels, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestServerRelayBytes: every byte arrives in order both ways at once and
// is counted, for messages below, at and above the loop's buffer (where a
// connection moves to the goroutine relay) and across splice chunks, with
// half-closes passed on.
func TestServerRelayBytes(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		for _, size := range []int{1, 64, smallBuf - 1, smallBuf, smallBuf + 1, relayChunk + 12345} {
			t.Run(fmt.Sprintf("%s/%d", mode.name, size), func(t *testing.T) {
				t.Parallel()
				origin, oport := originListener(t)
				e := startLoopEdge(t, Options{GoroutineRelay: mode.goroutine}, oport)
				client, o := e.through(t, origin)
				var wg sync.WaitGroup
				stream := func(from, to *net.TCPConn, msg []byte) {
					wg.Add(2)
					go func() {
						defer wg.Done()
						if _, err := from.Write(msg); err != nil {
							t.Errorf("write: %v", err)
						}
						from.CloseWrite()
					}()
					go func() {
						defer wg.Done()
						got, err := io.ReadAll(to)
						if err != nil || !bytes.Equal(got, msg) {
							t.Errorf("received %d bytes (%v), want the %d sent", len(got), err, len(msg))
						}
					}()
				}
				stream(client, o, pattern(size, 1))
				stream(o, client, pattern(size, 7))
				wg.Wait()
				e.waitMetric(t, 0, "realip_edge_tcp_connections_active", nil)
				for dir, want := range map[string]int{"to_origin": size + 1, "to_client": size} { // +1: through's '!'
					if got := e.metric(t, "realip_edge_bytes_total", map[string]string{"direction": dir}); got != float64(want) {
						t.Errorf("bytes %s counted %v, want %d", dir, got, want)
					}
				}
			})
		}
	}
}

// TestServerRelayManyShort: request/response connections one after the
// other all complete, and leave nothing open.
func TestServerRelayManyShort(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			s, port := startEchoEdge(t, Options{GoroutineRelay: mode.goroutine})
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				defer cancel()
				s.Shutdown(ctx)
			})
			for i := range 300 {
				c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), waitTimeout)
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(waitTimeout))
				msg := fmt.Sprintf("request %d", i)
				send(t, c, c, msg)
				c.(*net.TCPConn).CloseWrite()
				readEOF(t, c, "the echo's close")
				c.Close()
			}
			deadline := time.Now().Add(waitTimeout)
			for s.conns.Load() != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%d connections still counted", s.conns.Load())
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

// TestServerRelayIdle: a connection idle both ways for IdleTimeout is
// reset, both ends.
func TestServerRelayIdle(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			origin, oport := originListener(t)
			e := startLoopEdge(t, Options{GoroutineRelay: mode.goroutine, IdleTimeout: 200 * time.Millisecond}, oport)
			client, o := e.through(t, origin)
			send(t, client, o, "ping")
			send(t, o, client, "pong")
			for name, c := range map[string]*net.TCPConn{"client": client, "origin": o} {
				if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("%s's connection still open %v after an idle timeout of 200ms", name, waitTimeout)
				}
			}
			e.waitMetric(t, 0, "realip_edge_tcp_connections_active", nil)
		})
	}
}

// TestServerRelayDialFailover: with the first origin refusing, clients are
// relayed to the second one and the refusal is counted.
func TestServerRelayDialFailover(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			// Two origins on one port: 127.0.0.2 refuses (nothing listens
			// there), 127.0.0.1 answers.
			origin, oport := originListener(t)
			e := startLoopEdgeGroup(t, Options{GoroutineRelay: mode.goroutine}, oport, "127.0.0.2", "127.0.0.1")
			for range 4 {
				client, o := e.through(t, origin)
				send(t, client, o, "hello")
			}
			if got := e.metric(t, "realip_edge_errors_total", map[string]string{"reason": "dial"}); got < 1 {
				t.Errorf("dial errors counted %v, want at least 1", got)
			}
		})
	}
}

// TestServerRelayDialTimeout: an origin that never answers the SYN is
// given up after DialTimeout; the client is reset and the failure counted.
func TestServerRelayDialTimeout(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			port := blackhole(t)
			e := startLoopEdge(t, Options{GoroutineRelay: mode.goroutine, DialTimeout: 300 * time.Millisecond}, port)
			c, err := net.DialTimeout("tcp", e.addr, waitTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(waitTimeout))
			start := time.Now()
			if _, err := io.ReadAll(c); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("client read %v after %v, want a reset", err, time.Since(start))
			}
			e.waitMetric(t, 1, "realip_edge_errors_total", map[string]string{"reason": "dial"})
		})
	}
}

// blackhole returns a port of 127.0.0.1 whose listener never accepts and
// whose queue is full, so that the kernel drops further SYNs.
func blackhole(t *testing.T) uint16 {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	// Fill the accept queue (a backlog of 0 holds one connection).
	for range 2 {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	return uint16(port)
}

// startLoopEdgeGroup starts a Server forwarding a free port to an origin
// group of hosts, all on port.
func startLoopEdgeGroup(t *testing.T, opts Options, port uint16, hosts ...string) *loopEdge {
	t.Helper()
	dir := t.TempDir()
	group := "origins"
	for _, h := range hosts {
		group += " " + h
	}
	fport := freePort(t, "tcp")
	opts.RulesPath = filepath.Join(dir, "rules.txt")
	opts.GroupsPath = filepath.Join(dir, "groups.txt")
	opts.ListenIP = netip.MustParseAddr("127.0.0.1")
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	if err := os.WriteFile(opts.RulesPath, []byte(fmt.Sprintf("tcp:%d og:origins %d off off\n", fport, port)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(opts.GroupsPath, []byte(group+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		s.Shutdown(ctx)
	})
	return &loopEdge{s: s, reg: reg, addr: fmt.Sprintf("127.0.0.1:%d", fport)}
}

// TestServerRelayStalledReader: an origin that stops reading while the
// client keeps writing holds the connection up (it leaves the loop for
// the goroutines with the bytes not yet written); the idle timeout still
// resets it, and the other direction keeps working meanwhile.
func TestServerRelayStalledReader(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			origin, oport := originListener(t)
			e := startLoopEdge(t, Options{GoroutineRelay: mode.goroutine, IdleTimeout: 500 * time.Millisecond}, oport)
			client, o := e.through(t, origin)
			// Fill every buffer between the client and the origin.
			chunk := make([]byte, 4096)
			client.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
			for {
				if _, err := client.Write(chunk); err != nil {
					break
				}
			}
			// The other way still works while the origin does not read.
			send(t, o, client, "still talking")
			client.SetDeadline(time.Now().Add(waitTimeout))
			if _, err := io.ReadAll(client); errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("a connection whose origin stopped reading was not reset by the idle timeout")
			}
			e.waitMetric(t, 0, "realip_edge_tcp_connections_active", nil)
		})
	}
}

// TestServerRelayUrgentData: bytes behind TCP urgent data arrive without
// waiting for more (a read stops at the urgent mark).
func TestServerRelayUrgentData(t *testing.T) {
	t.Parallel()
	for _, mode := range relayModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			origin, oport := originListener(t)
			e := startLoopEdge(t, Options{GoroutineRelay: mode.goroutine}, oport)
			for i := range 5 {
				client, o := e.through(t, origin)
				rc, err := client.SyscallConn()
				if err != nil {
					t.Fatal(err)
				}
				var serr error
				rc.Write(func(fd uintptr) bool {
					for _, part := range []struct {
						b     string
						flags int
					}{{"hello", 0}, {"X", syscall.MSG_OOB}, {"world", 0}} {
						if serr = syscall.Sendto(int(fd), []byte(part.b), part.flags, nil); serr != nil {
							return true
						}
					}
					return true
				})
				if serr != nil {
					t.Fatal(serr)
				}
				// The urgent byte is out of band: the stream is the rest.
				got := make([]byte, len("helloworld"))
				if _, err := io.ReadFull(o, got); err != nil || string(got) != "helloworld" {
					t.Fatalf("connection %d: origin read %q, %v; want %q", i, got, err, "helloworld")
				}
			}
		})
	}
}

// TestAcceptInheritsNoDelay: the loops set TCP_NODELAY once on a listening
// socket and rely on Linux copying it to every socket accepted from it.
func TestAcceptInheritsNoDelay(t *testing.T) {
	t.Parallel()
	ln, port := originListener(t)
	rc, err := ln.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1) })
	if serr != nil {
		t.Fatal(serr)
	}
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var (
		nfd  int
		aerr error
	)
	deadline := time.Now().Add(waitTimeout)
	for {
		rc.Control(func(fd uintptr) { nfd, _, aerr = rawsys.Accept4(int(fd)) })
		if aerr == nil || aerr != syscall.EAGAIN || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if aerr != nil {
		t.Fatalf("accept4: %v", aerr)
	}
	defer rawsys.Close(nfd)
	if v, err := rawsys.GetsockoptInt(nfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY); err != nil || v == 0 {
		t.Fatalf("TCP_NODELAY on the accepted socket = %d, %v; want it inherited", v, err)
	}
}
