//go:build linux

package toarecv

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/cgroup2/cgrouptest"
)

// testPinPrefix starts the name of every pin folder the tests make.
const testPinPrefix = "realip-toarecv-test-"

// testPinDir returns a pin folder of its own under /sys/fs/bpf, removed
// (with whatever is pinned there) at cleanup. Folders of test binaries
// that died (a timeout skips cleanups) are removed first.
func testPinDir(t testing.TB) string {
	t.Helper()
	reapPinDirs(t)
	dir := filepath.Join(bpffsRoot, fmt.Sprintf("%s%d-%06x", testPinPrefix, os.Getpid(), rand.Uint32()&0xffffff))
	t.Cleanup(func() {
		Unpin(dir)
		os.RemoveAll(dir)
	})
	return dir
}

// openTest attaches a receiver to a throw-away cgroup, pinned in a
// throw-away folder.
func openTest(t testing.TB, cfg Config) (*Receiver, string) {
	t.Helper()
	cg, _ := cgrouptest.New(t, "realip-toarecv")
	r, err := Open(Options{Cgroup: cg, PinDir: testPinDir(t)}, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r, cg
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

// TestSetConfig: each configuration reads back as set, whatever came
// before it.
func TestSetConfig(t *testing.T) {
	r, _ := openTest(t, Config{})
	steps := []struct {
		name string
		cfg  Config
		want Config
	}{
		{"defaults", Config{}, Config{Kinds: DefaultKinds}},
		{"trust-list", Config{Trusted: prefixes("198.51.100.0/24", "2001:db8::/32"), Kinds: []uint8{200}},
			Config{Trusted: prefixes("198.51.100.0/24", "2001:db8::/32"), Kinds: []uint8{200}}},
		{"other-list", Config{Trusted: prefixes("203.0.113.9/32", "2001:db8::/32"), Kinds: []uint8{254, 253}},
			Config{Trusted: prefixes("203.0.113.9/32", "2001:db8::/32"), Kinds: []uint8{253, 254}}},
		{"back-to-trust-all", Config{Kinds: []uint8{200}}, Config{Kinds: []uint8{200}}},
	}
	for _, s := range steps {
		if err := r.SetConfig(s.cfg); err != nil {
			t.Fatalf("%s: SetConfig: %v", s.name, err)
		}
		got, err := r.Config()
		if err != nil {
			t.Fatalf("%s: Config: %v", s.name, err)
		}
		if !slices.Equal(got.Kinds, s.want.Kinds) || !slices.Equal(got.Trusted, s.want.Trusted) {
			t.Errorf("%s: Config() = %+v, want %+v", s.name, got, s.want)
		}
	}
	if err := r.SetConfig(Config{Kinds: []uint8{1}}); err == nil {
		t.Error("SetConfig with kind 1: no error")
	}
}

// TestAdoptAndUnpin: a second Open adopts the pinned receiver with its
// maps; Unpin detaches and removes every pin.
func TestAdoptAndUnpin(t *testing.T) {
	r, cg := openTest(t, Config{Trusted: prefixes("198.51.100.0/24")})
	dir := r.PinDir()
	r.Close()
	p, err := OpenPinned(dir)
	if err != nil {
		t.Fatalf("OpenPinned after Close: %v", err)
	}
	links, id := p.Attachment()
	p.Close()
	if want, _ := cgroupID(cg); len(links) != len(attachments) || id != want {
		t.Fatalf("Attachment() = %v, %d; want %d links on cgroup %d", links, id, len(attachments), want)
	}
	r2, err := Open(Options{Cgroup: cg, PinDir: dir}, Config{Trusted: prefixes("198.51.100.0/24", "203.0.113.0/24")})
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	if !r2.Adopted() {
		t.Error("second Open did not adopt the pinned receiver")
	}
	r2.Close()
	if err := Unpin(dir); err != nil {
		t.Fatalf("Unpin: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin folder still there after Unpin: %v", err)
	}
	if _, err := OpenPinned(dir); !errors.Is(err, ErrNotPinned) {
		t.Errorf("OpenPinned after Unpin = %v, want ErrNotPinned", err)
	}
	if err := Unpin(dir); !errors.Is(err, ErrNotPinned) {
		t.Errorf("second Unpin = %v, want ErrNotPinned", err)
	}
}

// TestMoveCgroup: Open with another cgroup moves the attachment there.
func TestMoveCgroup(t *testing.T) {
	r, _ := openTest(t, Config{})
	dir := r.PinDir()
	r.Close()
	cg2, _ := cgrouptest.New(t, "realip-toarecv")
	r2, err := Open(Options{Cgroup: cg2, PinDir: dir}, Config{})
	if err != nil {
		t.Fatalf("Open on a second cgroup: %v", err)
	}
	r2.Close()
	p, err := OpenPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	links, id := p.Attachment()
	if want, _ := cgroupID(cg2); len(links) != len(attachments) || id != want {
		t.Fatalf("Attachment() = %v, %d; want %d links on cgroup %d", links, id, len(attachments), want)
	}
}

// TestIncompatiblePin: a map of another shape pinned under a receiver
// map's name is refused with ErrIncompatible, and left alone.
func TestIncompatiblePin(t *testing.T) {
	cg, _ := cgrouptest.New(t, "realip-toarecv")
	dir := testPinDir(t)
	if err := ensurePinDir(dir); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "toa_stats", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(dir, "toa_stats")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Cgroup: cg, PinDir: dir}, Config{}); !errors.Is(err, ErrIncompatible) {
		t.Fatalf("Open over an incompatible pin = %v, want ErrIncompatible", err)
	}
	if got := existingPins(dir); len(got) != 1 || !got["toa_stats"] {
		t.Errorf("pins after the refused Open: %v, want toa_stats alone", got)
	}
}

// TestConcurrentSetConfig: two writers at once (an agent's SIGHUP and a
// `realip-agent load`, say) take turns: the trie ends with one list or the
// other, never both.
func TestConcurrentSetConfig(t *testing.T) {
	r, _ := openTest(t, Config{})
	a, b := Config{Trusted: prefixes("198.51.100.0/24")}, Config{Trusted: prefixes("203.0.113.0/24")}
	for round := range 100 {
		p1, err := OpenPinned(r.PinDir())
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Go(func() { p1.SetConfig(a) })
		wg.Go(func() { r.SetConfig(b) })
		wg.Wait()
		p1.Close()
		got, err := r.Config()
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Trusted) != 1 {
			t.Fatalf("round %d: trusted %v after two writers, want one of their lists", round, got.Trusted)
		}
	}
}

func TestAvailable(t *testing.T) {
	cg, _ := cgrouptest.New(t, "realip-toarecv")
	if err := Available(Options{Cgroup: cg}); err != nil {
		t.Fatalf("Available: %v", err)
	}
	if err := Available(Options{Cgroup: t.TempDir()}); !errors.Is(err, ErrNoCgroup2) {
		t.Fatalf("Available on a plain folder = %v, want ErrNoCgroup2", err)
	}
	if _, err := Open(Options{Cgroup: t.TempDir(), PinDir: testPinDir(t)}, Config{}); !errors.Is(err, ErrNoCgroup2) {
		t.Fatalf("Open on a plain folder = %v, want ErrNoCgroup2", err)
	}
}

// reapPinDirs unpins the folders of test processes that are gone.
func reapPinDirs(t testing.TB) {
	entries, err := os.ReadDir(bpffsRoot)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), testPinPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() || !errors.Is(unix.Kill(pid, 0), unix.ESRCH) {
			continue
		}
		dir := filepath.Join(bpffsRoot, e.Name())
		if err := Unpin(dir); err != nil && !errors.Is(err, ErrNotPinned) {
			t.Logf("removing stale pins %s: %v", dir, err)
		}
		os.RemoveAll(dir)
	}
}
