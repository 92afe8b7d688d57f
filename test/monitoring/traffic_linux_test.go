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
	s.viaTCP(t, 1001)
	s.viaUDP(t, 2002)
	s.viaTOARule(t)
	s.wantClosed(t, 1004, "origin down")
	s.malformedTo(t, portWeb)
	s.viaUnwrap(t)
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

// viaTCP: client -> edge rule tcp:RULE -> a server that answers with
// the client address it sees: the Go server's TCP listener (ppv1), or the
// plain server behind the unwrap agent.
func (s *stack) viaTCP(t *testing.T, rule uint16) {
	t.Helper()
	name := fmt.Sprintf("tcp:%d", rule)
	c := dial(t, s.client, "tcp", netip.AddrPortFrom(edgeFront, rule))
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("rule %s: %v", name, err)
	}
	wantClient(t, name, line)
}

// viaUDP: a new UDP flow, client -> edge rule udp:RULE -> a server that
// answers with the client address it sees: the Go server (ppv2), or the
// plain server behind the unwrap agent (spp).
func (s *stack) viaUDP(t *testing.T, rule uint16) {
	t.Helper()
	name := fmt.Sprintf("udp:%d", rule)
	c := dial(t, s.client, "udp", netip.AddrPortFrom(edgeFront, rule))
	defer c.Close()
	if _, err := c.Write([]byte("who am i")); err != nil {
		t.Fatalf("rule %s: %v", name, err)
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("rule %s: %v", name, err)
	}
	wantClient(t, name, string(buf[:n]))
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

// wantClosed: a rule whose clients cannot be served (what says why: the
// origin is down, or the server behind the unwrap agent is); the edge
// resets the client, which may see it while connecting already.
func (s *stack) wantClosed(t *testing.T, rule uint16, what string) {
	t.Helper()
	c, err := dialErr(s.client, "tcp", netip.AddrPortFrom(edgeFront, rule))
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatalf("rule tcp:%d (%s): %v, want a connection the edge closes", rule, what, err)
	}
	defer c.Close()
	if n, err := c.Read(make([]byte, 16)); err == nil || isTimeout(err) {
		t.Fatalf("rule tcp:%d (%s): read %d bytes, %v; want the edge to close", rule, what, n, err)
	}
}

// malformedTo: a malformed PROXY header from the edge's own address
// (trusted) straight to the origin's port (the Go server, or the unwrap
// agent), which must reject it.
func (s *stack) malformedTo(t *testing.T, port uint16) {
	t.Helper()
	c := dial(t, s.edge, "tcp", netip.AddrPortFrom(originV4, port))
	defer c.Close()
	if _, err := io.WriteString(c, "PROXY NONSENSE\r\n"); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 64)); err == nil || isTimeout(err) {
		t.Fatalf("malformed header to port %d: read %d bytes, %v; want it closed", port, n, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
