//go:build linux

package toasend

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// fakeProc points the cgroup lookup at files with the given contents.
func fakeProc(t *testing.T, cgroup, mountinfo string) {
	t.Helper()
	dir := t.TempDir()
	cg, mi := filepath.Join(dir, "cgroup"), filepath.Join(dir, "mountinfo")
	for file, text := range map[string]string{cg: cgroup, mi: mountinfo} {
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	oldCg, oldMi := procSelfCgroup, procSelfMountinfo
	procSelfCgroup, procSelfMountinfo = cg, mi
	t.Cleanup(func() { procSelfCgroup, procSelfMountinfo = oldCg, oldMi })
}

// hybridMountinfo is a systemd hybrid setup: cgroup v1 controllers, the
// unified hierarchy at /sys/fs/cgroup/unified.
const hybridMountinfo = `22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

// TestAvailableNoCgroup2: with no cgroup2 mount, Available says so before
// touching eBPF.
func TestAvailableNoCgroup2(t *testing.T) {
	fakeProc(t, "1:cpu:/\n", hybridMountinfo)
	if err := Available(); !errors.Is(err, ErrNoCgroup2) {
		t.Fatalf("Available() = %v, want ErrNoCgroup2", err)
	}
	if _, err := Open(Options{}); !errors.Is(err, ErrNoCgroup2) {
		t.Fatalf("Open() = %v, want ErrNoCgroup2", err)
	}
}

func TestKinds(t *testing.T) {
	tests := []struct {
		in             Options
		wantV4, wantV6 uint8
		wantErr        bool
	}{
		{Options{}, 200, 253, false},
		{Options{KindV4: 254, KindV6: 254}, 254, 254, false},
		{Options{KindV4: 201}, 201, 253, false},
		{Options{KindV6: 1}, 0, 0, true},
		{Options{KindV4: 8}, 0, 0, true},
		{Options{KindV4: 2}, 0, 0, true},
		{Options{KindV6: 34}, 0, 0, true},
	}
	for _, tc := range tests {
		v4, v6, err := tc.in.kinds()
		if (err != nil) != tc.wantErr || v4 != tc.wantV4 || v6 != tc.wantV6 {
			t.Errorf("%+v.kinds() = %d, %d, %v; want %d, %d, error %v", tc.in, v4, v6, err, tc.wantV4, tc.wantV6, tc.wantErr)
		}
	}
	if _, err := Open(Options{KindV4: 1}); err == nil || !strings.Contains(err.Error(), "kind 1") {
		t.Errorf("Open with kind 1: %v", err)
	}
}

func TestClientValue(t *testing.T) {
	tests := []struct {
		in     string
		family uint8
		port   [2]uint8
		addr   string // hex of the 16 address bytes
	}{
		{"203.0.113.7:4242", 4, [2]uint8{0x10, 0x92}, "cb007107000000000000000000000000"},
		{"[::ffff:203.0.113.7]:1", 4, [2]uint8{0, 1}, "cb007107000000000000000000000000"},
		{"[2001:db8::1]:65535", 6, [2]uint8{0xff, 0xff}, "20010db8000000000000000000000001"},
		{"[fe80::1%eth0]:80", 6, [2]uint8{0, 80}, "fe800000000000000000000000000001"},
	}
	for _, tc := range tests {
		v, err := clientValue(netip.MustParseAddrPort(tc.in))
		if err != nil || v.Family != tc.family || v.Port != tc.port || fmt.Sprintf("%x", v.Addr) != tc.addr || v.Flags != 0 {
			t.Errorf("clientValue(%s) = %+v, %v", tc.in, v, err)
		}
	}
	if _, err := clientValue(netip.AddrPort{}); err == nil {
		t.Error("clientValue accepted the zero AddrPort")
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want error
	}{
		{fmt.Errorf("load program: %w", unix.EPERM), ErrNotPermitted},
		{fmt.Errorf("probe: %w", ebpf.ErrNotSupported), ErrUnsupported},
		{errors.New("something else"), nil},
	}
	for _, tc := range tests {
		err := classify("doing it", tc.err)
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("classify(%v) = %v, want %v", tc.err, err, tc.want)
		}
		if !strings.Contains(err.Error(), "doing it") || !strings.Contains(err.Error(), tc.err.Error()) {
			t.Errorf("classify(%v) = %v: lost what or why", tc.err, err)
		}
	}
	if !strings.Contains(ErrUnsupported.Error(), "TOA sending needs a kernel with BPF TCP header options (5.10+)") {
		t.Errorf("ErrUnsupported reads %q", ErrUnsupported)
	}
}
