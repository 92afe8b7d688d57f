//go:build linux

package monitoring

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/realip/realip/internal/netns"
)

// round moves every counter the dashboard shows once more: toa_stats is
// rewritten with higher counts, and the client sends one of each kind of
// traffic through the edge, checking what came back.
func (s *stack) round(t *testing.T) {
	t.Helper()
	s.rounds++
	s.writeTOAStats(t)
	s.viaListenerTCP(t)
	s.viaListenerUDP(t)
	s.viaTOARule(t)
	s.toDownOrigin(t)
	s.malformedHeader(t)
}

// dialErr connects from h to addr; the connection's deadline is ioTimeout.
func dialErr(h *netns.Host, network string, addr netip.AddrPort) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() (err error) {
		c, err = net.DialTimeout(network, addr.String(), ioTimeout)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %v from %s: %w", network, addr, h.Name, err)
	}
	c.SetDeadline(time.Now().Add(ioTimeout))
	return c, nil
}

// dial is dialErr that fails the test on error.
func dial(t *testing.T, h *netns.Host, network string, addr netip.AddrPort) net.Conn {
	t.Helper()
	c, err := dialErr(h, network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantClient checks that the Go server behind the edge saw the client.
func wantClient(t *testing.T, rule, line string) {
	t.Helper()
	if !strings.HasPrefix(line, "client="+clientV4.String()+":") {
		t.Fatalf("rule %s: the origin answered %q, want client=%v:PORT", rule, line, clientV4)
	}
}

// viaListenerTCP: client -> edge (ppv1) -> the Go server's TCP listener.
func (s *stack) viaListenerTCP(t *testing.T) {
	t.Helper()
	c := dial(t, s.client, "tcp", netip.AddrPortFrom(edgeFront, 1001))
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("rule tcp:1001: %v", err)
	}
	wantClient(t, "tcp:1001", line)
}

// viaListenerUDP: a new UDP flow, client -> edge (ppv2) -> the Go server.
func (s *stack) viaListenerUDP(t *testing.T) {
	t.Helper()
	c := dial(t, s.client, "udp", netip.AddrPortFrom(edgeFront, 2002))
	defer c.Close()
	if _, err := c.Write([]byte("who am i")); err != nil {
		t.Fatalf("rule udp:2002: %v", err)
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("rule udp:2002: %v", err)
	}
	wantClient(t, "udp:2002", string(buf[:n]))
}

// viaTOARule: client -> edge (TOA option written by its eBPF sender) ->
// a plain echo server.
func (s *stack) viaTOARule(t *testing.T) {
	t.Helper()
	c := dial(t, s.client, "tcp", netip.AddrPortFrom(edgeFront, 1003))
	defer c.Close()
	const ping = "ping\n"
	if _, err := io.WriteString(c, ping); err != nil {
		t.Fatalf("rule tcp:1003: %v", err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != ping {
		t.Fatalf("rule tcp:1003: echo %q, %v; want %q", got, err, ping)
	}
}

// toDownOrigin: a rule whose origin is down; the edge resets the client,
// which may see it while connecting already.
func (s *stack) toDownOrigin(t *testing.T) {
	t.Helper()
	c, err := dialErr(s.client, "tcp", netip.AddrPortFrom(edgeFront, 1004))
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatalf("rule tcp:1004 (origin down): %v, want a connection the edge closes", err)
	}
	defer c.Close()
	if n, err := c.Read(make([]byte, 16)); err == nil || isTimeout(err) {
		t.Fatalf("rule tcp:1004 (origin down): read %d bytes, %v; want the edge to close", n, err)
	}
}

// malformedHeader: a malformed PROXY header from the edge's own address
// (trusted) straight to the Go server, which must reject it.
func (s *stack) malformedHeader(t *testing.T) {
	t.Helper()
	c := dial(t, s.edge, "tcp", netip.AddrPortFrom(originV4, portWeb))
	defer c.Close()
	if _, err := io.WriteString(c, "PROXY NONSENSE\r\n"); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 64)); err == nil || isTimeout(err) {
		t.Fatalf("malformed header: read %d bytes, %v; want the listener to close", n, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
