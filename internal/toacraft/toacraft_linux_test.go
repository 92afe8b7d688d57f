//go:build linux

package toacraft

// The crafter runs on the machine's own kernel: the listener saves the SYN
// (TCP_SAVE_SYN), and the test finds the exact option bytes among its TCP
// options. The test process moves into a fresh cgroup for the duration, so
// the program sees its sockets only.

import (
	"bytes"

	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/cgroup2"
	"github.com/realip/realip/internal/cgroup2/cgrouptest"
	"github.com/realip/realip/internal/testenv"
)

func TestToaOption(t *testing.T) {
	for _, tc := range []struct {
		kind, length uint8
		client       string
		want         []byte // nil: an error
	}{
		{200, 8, "192.0.2.1:258", []byte{200, 8, 1, 2, 192, 0, 2, 1}},
		{200, 8, "[::ffff:0.0.0.0]:0", []byte{200, 8, 0, 0, 0, 0, 0, 0}},
		{254, 20, "[::ffff:224.0.0.1]:80", []byte{254, 20, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 224, 0, 0, 1}},
		{253, 20, "[ff02::1]:1", []byte{253, 20, 0, 1, 0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
		{200, 8, "[2001:db8::1]:80", nil},
		{200, 12, "192.0.2.1:80", nil},
	} {
		got, err := Option(tc.kind, tc.length, netip.MustParseAddrPort(tc.client))
		if (err != nil) != (tc.want == nil) || !bytes.Equal(got, tc.want) {
			t.Errorf("Option(%d, %d, %s) = % x, %v; want % x", tc.kind, tc.length, tc.client, got, err, tc.want)
		}
	}
}

func TestCrafterPutsExactBytesOnTheSYN(t *testing.T) {
	cr := openTestCrafter(t)
	for _, bad := range [][]byte{
		{200, 20, 0, 1, 1, 2, 3, 4, 0, 0, 0, 0}, // second byte is not the length
		{200},                                   // too short
		{254, 2},                                // experimental kinds need 4 bytes
		{1, 2},                                  // a no-op is no option
		make([]byte, 41),                        // too long
	} {
		if err := cr.Control(bad)("tcp", "", nil); err == nil {
			t.Errorf("Control accepted % x", bad)
		}
	}
	for _, tc := range []struct {
		listen       string
		kind, length uint8
		client       string
	}{
		{"127.0.0.1:0", 200, 8, "0.0.0.0:0"},
		{"127.0.0.1:0", 254, 20, "[::ffff:0.0.0.0]:80"},
		{"[::1]:0", 200, 20, "[::]:1"},
		{"[::1]:0", 253, 8, "224.0.0.1:4242"},
	} {
		opt, err := Option(tc.kind, tc.length, netip.MustParseAddrPort(tc.client))
		if err != nil {
			t.Fatal(err)
		}
		checkOnSYN(t, cr, tc.listen, tc.kind, opt)
	}
	// Lengths that fit no address, and an unknown kind.
	for _, opt := range [][]byte{
		{200, 6, 0, 80, 10, 0},
		{200, 10, 0, 80, 10, 0, 0, 1, 0, 0},
		{99, 8, 0, 80, 192, 0, 2, 1},
		{254, 4, 0, 80},
	} {
		checkOnSYN(t, cr, "127.0.0.1:0", opt[0], opt)
	}
}

// checkOnSYN dials listen with opt crafted on and checks that the SYN
// carried it byte for byte, and a later segment too.
func checkOnSYN(t *testing.T, cr *Crafter, listen string, kind uint8, opt []byte) {
	t.Helper()
	syn, written := dialSavingSYN(t, cr, listen, opt)
	if got := findOption(t, syn, kind); !bytes.Equal(got, opt) {
		t.Errorf("% x over %s: the SYN carried % x", opt, listen, got)
	}
	if !written[0] || !written[1] {
		t.Errorf("% x over %s: written on SYN %v, after it %v; want both", opt, listen, written[0], written[1])
	}
}

// openTestCrafter moves the test process into a fresh cgroup (back at
// cleanup) and attaches a crafter there.
func openTestCrafter(t *testing.T) *Crafter {
	cg, _ := cgrouptest.New(t, "realip-toacraft")
	orig, err := cgroup2.Self(cgroup2.SelfCgroup, cgroup2.SelfMountinfo)
	if err != nil {
		t.Fatal(err)
	}
	if err := cgrouptest.Join(cg, os.Getpid()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cgrouptest.Join(orig, os.Getpid()); err != nil {
			t.Error(err)
		}
	})
	cr, err := Open(cg)
	if err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	t.Cleanup(func() {
		if err := cr.Close(); err != nil {
			t.Error(err)
		}
	})
	return cr
}

// dialSavingSYN dials a listener that saves SYNs with opt crafted on, and
// returns the saved SYN (network and TCP headers) and whether the option
// went out on the SYN and after it.
func dialSavingSYN(t *testing.T, cr *Crafter, listen string, opt []byte) ([]byte, [2]bool) {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_SAVE_SYN, 1) })
		return err
	}}
	ln, err := lc.Listen(t.Context(), "tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: cr.Control(opt)}
	out, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	in, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	syn, later, err := cr.Written(out.(*net.TCPConn))
	if err != nil {
		t.Fatal(err)
	}
	return savedSYN(t, in.(*net.TCPConn)), [2]bool{syn, later}
}

// savedSYN reads TCP_SAVED_SYN (raw bytes: x/sys's string getter stops
// at the first zero byte).
func savedSYN(t *testing.T, c *net.TCPConn) []byte {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	n := uint32(len(buf))
	var errno syscall.Errno
	rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.IPPROTO_TCP, unix.TCP_SAVED_SYN,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	})
	if errno != 0 {
		t.Fatalf("TCP_SAVED_SYN: %v", errno)
	}
	return buf[:n]
}

// findOption returns the TCP option of kind in a saved SYN, nil if none.
func findOption(t *testing.T, syn []byte, kind uint8) []byte {
	t.Helper()
	ipLen := 40 // IPv6, no extension headers on loopback
	if len(syn) > 0 && syn[0]>>4 == 4 {
		ipLen = int(syn[0]&0x0f) * 4
	}
	if len(syn) < ipLen+20 || len(syn) < ipLen+int(syn[ipLen+12]>>4)*4 {
		t.Fatalf("saved SYN too short: % x", syn)
	}
	opts := syn[ipLen+20 : ipLen+int(syn[ipLen+12]>>4)*4]
	for len(opts) > 0 && opts[0] != 0 {
		if opts[0] == 1 {
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || opts[1] < 2 || int(opts[1]) > len(opts) {
			t.Fatalf("cut option list in the SYN: % x", opts)
		}
		if opts[0] == kind {
			return opts[:opts[1]]
		}
		opts = opts[opts[1]:]
	}
	return nil
}

// TestSYNOnly: ControlSYN puts the option on the SYN and on nothing after.
func TestSYNOnly(t *testing.T) {
	cr := openTestCrafter(t)
	opt := []byte{200, 8, 0, 80, 192, 0, 2, 1}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_SAVE_SYN, 1) })
		return err
	}}
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: cr.ControlSYN(opt)}
	out, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := out.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	in, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	syn, later, err := cr.Written(out.(*net.TCPConn))
	if err != nil {
		t.Fatal(err)
	}
	if !syn || later {
		t.Errorf("written on SYN %v, after it %v; want the SYN only", syn, later)
	}
	if got := findOption(t, savedSYN(t, in.(*net.TCPConn)), 200); !bytes.Equal(got, opt) {
		t.Errorf("the SYN carried % x, want % x", got, opt)
	}
}
