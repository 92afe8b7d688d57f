//go:build linux

package tproute

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/netns"
)

// lostWait is how long a test waits for a reply the routing is meant to
// lose: long enough for a local reply, short enough to keep tests fast.
// The test only asserts that the reply never came, not how long anything
// took.
const lostWait = 1500 * time.Millisecond

// okWait bounds waits for what must work, generously for a busy machine.
const okWait = 20 * time.Second

// transparent returns a Control function that makes a socket transparent
// (it may bind an address the host does not own) and marks it with mark,
// as the unwrap relay does.
func transparent(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(network, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			level, opt := unix.SOL_IP, unix.IP_TRANSPARENT
			if network[len(network)-1] == '6' {
				level, opt = unix.SOL_IPV6, unix.IPV6_TRANSPARENT
			}
			serr = unix.SetsockoptInt(int(fd), level, opt, 1)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
			}
		})
		return errors.Join(err, serr)
	}
}

// family returns "4" or "6" for a, to make network names.
func family(a netip.Addr) string {
	if a.Is4() {
		return "4"
	}
	return "6"
}

// transparentCase is one connection from a foreign client address to a
// server on loopback.
type transparentCase struct {
	name           string
	server, client netip.AddrPort
	install        bool           // Install before connecting
	sources        []netip.Prefix // Config.Sources (nil: the defaults)
	fwmarkAccept   bool           // set net.ipv4.tcp_fwmark_accept=1
	works          bool           // whether the server's replies arrive
}

// The server's and the client's addresses, IPv4 and IPv6.
const (
	v4Server, v4Client = "127.0.0.1:0", "198.51.100.7:40001"
	v6Server, v6Client = "[::1]:0", "[2001:db8:77::7]:40001"
)

// tcase is a transparentCase with these addresses.
func tcase(name, server, client string) transparentCase {
	return transparentCase{name: name, server: netip.MustParseAddrPort(server), client: netip.MustParseAddrPort(client)}
}

// transparentCases are the cases of both transparent tests: the cases
// without the routing prove that the tests measure something.
func transparentCases() []transparentCase {
	v4, v6 := tcase("IPv4", v4Server, v4Client), tcase("IPv6", v6Server, v6Client)
	v4.install, v4.works, v6.install, v6.works = true, true, true, true
	return []transparentCase{v4, v6,
		tcase("IPv4 without routing", v4Server, v4Client), tcase("IPv6 without routing", v6Server, v6Client)}
}

// TestTransparentTCP connects from a foreign address (a transparent,
// marked socket bound to it) to a server on loopback: with the routing the
// server's accept sees that address and data flows both ways; without it
// the server's SYN-ACK is lost and the connect times out. The mark rule
// alone brings the replies back only when accepted sockets inherit the
// mark of the SYN (tcp_fwmark_accept).
func TestTransparentTCP(t *testing.T) {
	markOnly := tcase("IPv4 mark rule only", v4Server, v4Client)
	accept4 := tcase("IPv4 mark rule only, tcp_fwmark_accept", v4Server, v4Client)
	accept6 := tcase("IPv6 mark rule only, tcp_fwmark_accept", v6Server, v6Client)
	for _, tc := range []*transparentCase{&markOnly, &accept4, &accept6} {
		tc.install, tc.sources = true, []netip.Prefix{}
	}
	accept4.fwmarkAccept, accept4.works, accept6.fwmarkAccept, accept6.works = true, true, true, true
	cases := append(transparentCases(), markOnly, accept4, accept6)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := host(t)
			c := Config{Sources: tc.sources}.WithDefaults()
			if tc.install {
				mustInstall(t, h, c)
			}
			if tc.fwmarkAccept {
				h.Sysctl("net.ipv4.tcp_fwmark_accept", "1")
			}
			ln, conn, err := connect(t, h, tc, c.Mark)
			if !tc.works {
				if !isTimeout(err) {
					t.Fatalf("connect = %v, want a timeout (the SYN-ACK lost)", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("connect from %v: %v", tc.client, err)
			}
			defer conn.Close()
			checkTCP(t, ln, conn, tc.client)
		})
	}
}

// connect listens on tc.server inside h and connects to it from tc.client
// with a transparent socket marked with mark. It waits only briefly when
// the connection is expected to fail.
func connect(t *testing.T, h *netns.Host, tc transparentCase, mark uint32) (net.Listener, net.Conn, error) {
	t.Helper()
	network := "tcp" + family(tc.server.Addr())
	var ln net.Listener
	if err := h.Do(func() (err error) {
		ln, err = net.Listen(network, tc.server.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	wait := okWait
	if !tc.works {
		wait = lostWait
	}
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(tc.client), Timeout: wait, Control: transparent(mark)}
	var conn net.Conn
	err := h.Do(func() (err error) {
		conn, err = d.Dial(network, ln.Addr().String())
		return err
	})
	return ln, conn, err
}

// isTimeout reports whether err is a timeout: a dial's context deadline
// and a socket deadline give different errors.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// checkTCP accepts conn's connection on ln, checks the address the server
// sees and sends data both ways.
func checkTCP(t *testing.T, ln net.Listener, conn net.Conn, client netip.AddrPort) {
	t.Helper()
	if err := ln.(*net.TCPListener).SetDeadline(time.Now().Add(okWait)); err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer srv.Close()
	if got := srv.RemoteAddr().(*net.TCPAddr).AddrPort(); got != client {
		t.Errorf("server's accept sees %v, want %v", got, client)
	}
	up, down := bytes.Repeat([]byte("up"), 50000), bytes.Repeat([]byte("down"), 50000)
	exchange(t, conn, srv, up)
	exchange(t, srv, conn, down)
}

// exchange writes msg on from and reads it on to.
func exchange(t *testing.T, from, to net.Conn, msg []byte) {
	t.Helper()
	deadline := time.Now().Add(okWait)
	if err := errors.Join(from.SetDeadline(deadline), to.SetDeadline(deadline)); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := from.Write(msg)
		errc <- err
	}()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(to, got); err != nil {
		t.Fatalf("read %v -> %v: %v", from.LocalAddr(), to.LocalAddr(), err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write %v -> %v: %v", from.LocalAddr(), to.LocalAddr(), err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("%v -> %v: data changed on the way", from.LocalAddr(), to.LocalAddr())
	}
}

// TestTransparentUDP sends a datagram from a foreign address to a server
// on loopback, which answers the address it sees: with the routing the
// answer reaches the transparent socket; without it the answer is lost.
func TestTransparentUDP(t *testing.T) {
	for _, tc := range transparentCases() {
		t.Run(tc.name, func(t *testing.T) {
			h := host(t)
			c := Config{}.WithDefaults()
			if tc.install {
				mustInstall(t, h, c)
			}
			network := "udp" + family(tc.server.Addr())
			server, client := udpPair(t, h, network, tc.server, tc.client, c.Mark)
			seen := make(chan netip.AddrPort, 1)
			go echo(server, seen)
			if _, err := client.WriteTo([]byte("ping"), server.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			wait := okWait
			if !tc.works {
				wait = lostWait
			}
			if err := client.SetReadDeadline(time.Now().Add(wait)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			n, from, err := client.ReadFrom(buf)
			if got := <-seen; got != tc.client {
				t.Errorf("server saw %v, want %v", got, tc.client)
			}
			if !tc.works {
				if !isTimeout(err) {
					t.Fatalf("read without the routing = %q, %v, want a timeout (the answer lost)", buf[:n], err)
				}
				return
			}
			if err != nil || string(buf[:n]) != "ping" || from.String() != server.LocalAddr().String() {
				t.Fatalf("answer %q from %v, %v; want %q from %v", buf[:n], from, err, "ping", server.LocalAddr())
			}
		})
	}
}

// udpPair opens, inside h, a server socket on server and a transparent,
// marked client socket bound to client.
func udpPair(t *testing.T, h *netns.Host, network string, server, client netip.AddrPort, mark uint32) (s, c net.PacketConn) {
	t.Helper()
	lc := net.ListenConfig{Control: transparent(mark)}
	err := h.Do(func() (err error) {
		if s, err = net.ListenPacket(network, server.String()); err != nil {
			return err
		}
		c, err = lc.ListenPacket(context.Background(), network, client.String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); c.Close() })
	return s, c
}

// echo answers one datagram on pc to the address it came from, and reports
// that address on seen. The answer's send error, if any, is ignored: the
// test looks at what arrives.
func echo(pc net.PacketConn, seen chan<- netip.AddrPort) {
	buf := make([]byte, 64)
	_ = pc.SetReadDeadline(time.Now().Add(okWait))
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		seen <- netip.AddrPort{}
		return
	}
	seen <- from.(*net.UDPAddr).AddrPort()
	_, _ = pc.WriteTo(buf[:n], from)
}
