//go:build linux

package rawsys

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/testenv"
)

// tcpPair returns two connected non-blocking TCP sockets over loopback of
// family, made with this package's calls: the connecting one and the
// accepted one.
func tcpPair(t *testing.T, family int) (client, server int) {
	t.Helper()
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	if family == unix.AF_INET6 {
		lo = netip.MustParseAddrPort("[::1]:0")
	}
	ln, err := Socket(family, unix.SOCK_STREAM)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	defer Close(ln)
	if err := Bind(ln, family, lo); err != nil {
		testenv.SkipOrFail(t, "bind %s: %v (no loopback of this family here)", lo, err)
	}
	if err := unix.Listen(ln, 8); err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr, err := Getsockname(ln)
	if err != nil || addr.Port() == 0 || addr.Addr() != lo.Addr() {
		t.Fatalf("getsockname of the listener: %v, %v; want %s and a port", addr, err, lo.Addr())
	}
	client, err = Socket(family, unix.SOCK_STREAM)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { Close(client) })
	if err := Connect(client, addr); err != nil && err != unix.EINPROGRESS {
		t.Fatalf("connect %s: %v", addr, err)
	}
	var peer netip.AddrPort
	waitFor(t, "accept4", func() bool {
		server, peer, err = Accept4(ln)
		return err != unix.EAGAIN
	})
	if err != nil {
		t.Fatalf("accept4: %v", err)
	}
	t.Cleanup(func() { Close(server) })
	if own, err := Getsockname(client); err != nil || own != peer {
		t.Fatalf("accept4's peer %s, the client's own address %s (%v): want the same", peer, own, err)
	}
	return client, server
}

// waitFor polls cond until it holds, for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSocketCalls(t *testing.T) {
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		client, server := tcpPair(t, family)
		if err := SetsockoptInt(client, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			t.Fatalf("setsockopt: %v", err)
		}
		if v, err := GetsockoptInt(client, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v == 0 {
			t.Errorf("TCP_NODELAY reads %d, %v; want it set", v, err)
		}
		if n, err := Write(client, []byte("ping")); n != 4 || err != nil {
			t.Fatalf("write: %d, %v", n, err)
		}
		buf := make([]byte, 8)
		var n int
		var err error
		waitFor(t, "the bytes", func() bool { n, err = Read(server, buf); return err != unix.EAGAIN })
		if err != nil || string(buf[:n]) != "ping" {
			t.Errorf("read: %q, %v; want ping", buf[:n], err)
		}
		if err := ConnectError(client, unix.EPOLLOUT); err != nil {
			t.Errorf("ConnectError of a connected socket: %v", err)
		}
	}
}

func TestConnectError(t *testing.T) {
	// A port nothing listens on: the connect fails with ECONNREFUSED,
	// which SO_ERROR reports once the socket shows EPOLLERR.
	probe, err := Socket(unix.AF_INET, unix.SOCK_STREAM)
	if err != nil {
		t.Fatal(err)
	}
	if err := Bind(probe, unix.AF_INET, netip.MustParseAddrPort("127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	closed, _ := Getsockname(probe)
	Close(probe) // bound, never listening: nothing will answer there
	fd, err := Socket(unix.AF_INET, unix.SOCK_STREAM)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fd)
	if err := Connect(fd, closed); err != nil && err != unix.EINPROGRESS {
		if errors.Is(err, unix.ECONNREFUSED) {
			return // refused at once: nothing left for ConnectError
		}
		t.Fatalf("connect: %v", err)
	}
	var cerr error
	waitFor(t, "the connect to fail", func() bool {
		cerr = ConnectError(fd, unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP)
		return cerr != nil
	})
	if !errors.Is(cerr, unix.ECONNREFUSED) {
		t.Errorf("ConnectError: %v, want ECONNREFUSED", cerr)
	}
}

func TestPump(t *testing.T) {
	tests := []struct {
		name    string
		send    int  // bytes the source's peer writes
		fin     bool // and then closes
		ev      uint32
		buf     int
		fillDst bool // the destination's peer reads nothing and its buffers are full
		want    Outcome
	}{
		{name: "nothing yet", ev: unix.EPOLLIN, buf: 64, want: Drained},
		{name: "short read", send: 10, ev: unix.EPOLLIN, buf: 64, want: Drained},
		{name: "short read then FIN, told", send: 10, fin: true, ev: unix.EPOLLIN | unix.EPOLLRDHUP, buf: 64, want: EOF},
		{name: "FIN alone", fin: true, ev: unix.EPOLLIN | unix.EPOLLRDHUP, buf: 64, want: EOF},
		{name: "a full buffer is a stream", send: 64, ev: unix.EPOLLIN, buf: 64, want: Stream},
		{name: "destination full", send: 1000, ev: unix.EPOLLIN, buf: 2048, fillDst: true, want: Slow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srcPeer, src := tcpPair(t, unix.AF_INET)
			dst, dstPeer := tcpPair(t, unix.AF_INET)
			if tt.fillDst {
				fill(t, dst)
			}
			payload := bytes.Repeat([]byte{'x'}, tt.send)
			if tt.send > 0 {
				if n, err := Write(srcPeer, payload); n != tt.send || err != nil {
					t.Fatalf("write: %d, %v", n, err)
				}
			}
			if tt.fin {
				Shutdown(srcPeer, unix.SHUT_WR)
			}
			if tt.send > 0 || tt.fin {
				waitReadable(t, src)
			}
			res := Pump(src, dst, make([]byte, tt.buf), tt.ev)
			if res.Outcome != tt.want {
				t.Fatalf("Pump: %+v, want outcome %d", res, tt.want)
			}
			if got := res.Moved + len(res.Rest); got != tt.send {
				t.Errorf("moved %d + rest %d, want the %d bytes sent", res.Moved, len(res.Rest), tt.send)
			}
			if !tt.fillDst && tt.send > 0 {
				got := make([]byte, tt.send)
				waitReadable(t, dstPeer)
				if n, err := Read(dstPeer, got); n != res.Moved || err != nil {
					t.Errorf("destination's peer read %d, %v; want %d", n, err, res.Moved)
				}
			}
		})
	}
}

func TestPumpFailed(t *testing.T) {
	srcPeer, src := tcpPair(t, unix.AF_INET)
	if n, err := Write(srcPeer, []byte("data")); n != 4 || err != nil {
		t.Fatal(err)
	}
	ResetClose(srcPeer) // the peer resets: the read fails with ECONNRESET
	waitReadable(t, src)
	dst, _ := tcpPair(t, unix.AF_INET)
	res := Pump(src, dst, make([]byte, 64), unix.EPOLLIN|unix.EPOLLERR)
	if res.Outcome != Failed || !errors.Is(res.Err, unix.ECONNRESET) {
		t.Errorf("Pump after a reset: %+v, want Failed with ECONNRESET", res)
	}
}

// waitReadable waits until fd has something to read (or an error).
func waitReadable(t *testing.T, fd int) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 5000); n != 1 || err != nil {
		t.Fatalf("poll: %d, %v", n, err)
	}
}

// fill writes to fd until its send buffer and its peer's receive buffer
// are full.
func fill(t *testing.T, fd int) {
	t.Helper()
	if err := SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for range 1 << 12 {
		if _, err := Write(fd, chunk); err == unix.EAGAIN {
			return
		}
	}
	t.Fatal("the socket never filled up")
}

func TestSockaddrRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		family int
		addr   string
		want   string
	}{
		{unix.AF_INET, "192.0.2.1:80", "192.0.2.1:80"},
		{unix.AF_INET6, "192.0.2.1:80", "192.0.2.1:80"}, // mapped, read back unmapped
		{unix.AF_INET6, "[2001:db8::1]:443", "[2001:db8::1]:443"},
		{unix.AF_INET6, "[fe80::1%7]:22", "[fe80::1%7]:22"},
	} {
		var sa unix.RawSockaddrAny
		PutSockaddr(&sa, tt.family, netip.MustParseAddrPort(tt.addr))
		if got := SockaddrAddrPort(&sa).String(); got != tt.want {
			t.Errorf("%s in family %d: read back %s, want %s", tt.addr, tt.family, got, tt.want)
		}
	}
	var unknown unix.RawSockaddrAny
	unknown.Addr.Family = unix.AF_UNIX
	if got := SockaddrAddrPort(&unknown); got.IsValid() {
		t.Errorf("AF_UNIX address: %s, want the zero AddrPort", got)
	}
}

func TestErr(t *testing.T) {
	if Err(0) != nil {
		t.Error("Err(0) is not nil")
	}
	if !errors.Is(Err(unix.EAGAIN), unix.EAGAIN) {
		t.Error("Err(EAGAIN) is not EAGAIN")
	}
}
