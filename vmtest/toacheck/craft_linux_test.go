//go:build linux

package main

// The crafter runs on the machine's own kernel (no module needed): the
// listener saves the SYN (TCP_SAVE_SYN), and the test finds the exact
// option bytes among its TCP options. The test process moves into a fresh
// cgroup for the duration, so the program sees its sockets only.

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

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
		got, err := toaOption(tc.kind, tc.length, netip.MustParseAddrPort(tc.client))
		if (err != nil) != (tc.want == nil) || !bytes.Equal(got, tc.want) {
			t.Errorf("toaOption(%d, %d, %s) = % x, %v; want % x", tc.kind, tc.length, tc.client, got, err, tc.want)
		}
	}
}

func TestCrafterPutsExactBytesOnTheSYN(t *testing.T) {
	cr := openTestCrafter(t)
	if err := cr.Control([]byte{200, 20, 0, 1, 1, 2, 3, 4, 0, 0, 0, 0})("tcp", "", nil); err == nil {
		t.Error("Control accepted a 12-byte option")
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
		opt, err := toaOption(tc.kind, tc.length, netip.MustParseAddrPort(tc.client))
		if err != nil {
			t.Fatal(err)
		}
		syn, written := dialSavingSYN(t, cr, tc.listen, opt)
		if got := findOption(t, syn, tc.kind); !bytes.Equal(got, opt) {
			t.Errorf("%s over %s: the SYN carried % x, want % x", tc.client, tc.listen, got, opt)
		}
		if !written[0] || !written[1] {
			t.Errorf("%s over %s: written on SYN %v, after it %v; want both", tc.client, tc.listen, written[0], written[1])
		}
	}
}

// openTestCrafter moves the test process into a fresh cgroup (back at
// cleanup) and attaches a crafter there.
func openTestCrafter(t *testing.T) *crafter {
	testenv.RequireRoot(t)
	mnt, orig, err := ownCgroup()
	if err != nil {
		testenv.SkipOrFail(t, "cgroup v2: %v", err)
	}
	cg := filepath.Join(mnt, fmt.Sprintf("realip-toacheck-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(cg); err != nil {
			t.Errorf("removing test cgroup: %v", err)
		}
	})
	if err := joinCgroup(cg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := joinCgroup(orig); err != nil {
			t.Error(err)
		}
	})
	cr, err := openCrafter(cg)
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

// ownCgroup returns the cgroup2 mount and this process's cgroup v2 folder.
func ownCgroup() (mnt, own string, err error) {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	for line := range strings.Lines(string(info)) {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE SUPER
		f := strings.Fields(line)
		if i := slices.Index(f, "-"); i > 4 && i+1 < len(f) && f[i+1] == "cgroup2" && f[3] == "/" {
			mnt = f[4]
			break
		}
	}
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", "", err
	}
	for line := range strings.Lines(string(cg)) {
		if rel, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok && mnt != "" {
			return mnt, filepath.Join(mnt, rel), nil
		}
	}
	return "", "", errors.New("no cgroup2 mount of the whole hierarchy, or no 0:: line in /proc/self/cgroup")
}

// joinCgroup moves this process (all its threads) into the cgroup folder.
func joinCgroup(path string) error {
	return os.WriteFile(filepath.Join(path, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0)
}

// dialSavingSYN dials a listener that saves SYNs with opt crafted on, and
// returns the saved SYN (network and TCP headers) and whether the option
// went out on the SYN and after it.
func dialSavingSYN(t *testing.T, cr *crafter, listen string, opt []byte) ([]byte, [2]bool) {
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
