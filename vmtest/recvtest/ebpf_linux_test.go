//go:build linux

package recvtest

import (
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	"github.com/realip/realip/internal/cgroup2/cgrouptest"
	"github.com/realip/realip/internal/testenv"
	"github.com/realip/realip/toarecv"
)

// TestEBPFLifecycle starts the eBPF receiver on a throw-away cgroup of
// this machine, reads and changes its trust list, reads its counters,
// stops it and checks that Gone and Freed see nothing left: what the
// suites rely on, on the kernel at hand.
func TestEBPFLifecycle(t *testing.T) {
	testenv.RequireRoot(t)
	if err := toarecv.Available(toarecv.Options{}); err != nil {
		testenv.SkipOrFail(t, "the eBPF receiver cannot run here: %v", err)
	}
	cg, _ := cgrouptest.New(t, "realip-recvtest")
	pinDir := filepath.Join("/sys/fs/bpf", filepath.Base(cg))
	trusted := []netip.Prefix{netip.MustParsePrefix("198.51.100.1/32"), netip.MustParsePrefix("2001:db8:2::/64")}
	r, err := Start(KindEBPF, Options{Cgroup: cg, PinDir: pinDir, Trusted: trusted})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			r.Stop()
		}
	})
	if got, err := r.Trusted(); err != nil || len(got) != 2 {
		t.Fatalf("Trusted() = %v, %v; want %v", got, err, trusted)
	}
	if err := r.SetTrusted(trusted[:1]); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Trusted(); err != nil || !slices.Equal(got, trusted[:1]) {
		t.Fatalf("after SetTrusted: Trusted() = %v, %v; want %v", got, err, trusted[:1])
	}
	names, cpus, err := r.Layout()
	if err != nil || !slices.Equal(names, toarecv.CounterNames) || cpus < 1 {
		t.Fatalf("Layout() = %v, %d CPUs, %v", names, cpus, err)
	}
	if _, err := r.Gone(); err == nil {
		t.Fatal("Gone() = nil while the receiver is attached")
	}
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if r.CountersAtStop() == nil {
		t.Error("CountersAtStop() = nil after Stop")
	}
	if what, err := r.Gone(); err != nil {
		t.Errorf("Gone() after Stop: %s: %v", what, err)
	}
	if detail, _, err := r.Freed(); err != nil {
		t.Errorf("Freed() after Stop: %s: %v", detail, err)
	}
	if err := toarecv.Unpin(pinDir); !errors.Is(err, toarecv.ErrNotPinned) {
		t.Errorf("Unpin after Stop = %v, want ErrNotPinned", err)
	}
}

// TestStartRefuses: a module file that is not there, and a receiver
// already pinned where the eBPF one would go, are refused with errors
// that say so.
func TestStartRefuses(t *testing.T) {
	if _, err := Start(KindKmod, Options{Module: filepath.Join(t.TempDir(), "toa.ko")}); err == nil {
		t.Error("Start(kmod) with no module file: no error")
	}
	if _, err := Start("dpvs", Options{}); err == nil {
		t.Error("Start of an unknown receiver: no error")
	}
}
