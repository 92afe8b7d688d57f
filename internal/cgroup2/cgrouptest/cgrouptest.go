//go:build linux

// Package cgrouptest makes throw-away cgroup v2 folders for tests that
// attach eBPF programs or move processes, and removes the ones left behind
// by test binaries that died.
package cgrouptest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/cgroup2"
	"github.com/realip/realip/internal/testenv"
)

// New makes a fresh cgroup v2 folder named prefix-PID-RANDOM under the
// cgroup2 mount, removed at cleanup, and returns its path and an open
// descriptor for it (exec.Cmd's SysProcAttr.CgroupFD takes it). It skips
// the test (fails it under REALIP_STRICT=1) without root or cgroup v2.
func New(t testing.TB, prefix string) (string, *os.File) {
	t.Helper()
	testenv.RequireRoot(t)
	mnt, _, err := cgroup2.Mount(cgroup2.SelfMountinfo)
	if err != nil {
		testenv.SkipOrFail(t, "cgroup v2 is not mounted: %v", err)
	}
	reap(t, mnt, prefix)
	path := filepath.Join(mnt, fmt.Sprintf("%s-%d-%06x", prefix, os.Getpid(), rand.Uint32()&0xffffff))
	if err := os.Mkdir(path, 0o755); err != nil {
		testenv.SkipOrFail(t, "cannot make a cgroup: %v", err)
	}
	f, err := os.Open(path)
	if err != nil {
		os.Remove(path)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		if err := Remove(path); err != nil {
			t.Errorf("removing test cgroup: %v", err)
		}
	})
	return path, f
}

// Remove removes a cgroup whose processes have exited (a dead process may
// take a moment to leave it).
func Remove(path string) error {
	var err error
	for range 100 {
		if err = os.Remove(path); err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// reap removes cgroups left by test binaries that died (a test timeout
// skips cleanups).
func reap(t testing.TB, mnt, prefix string) {
	entries, err := os.ReadDir(mnt)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix+"-")
		if !ok || !e.IsDir() {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() || !errors.Is(unix.Kill(pid, 0), unix.ESRCH) {
			continue
		}
		if err := Remove(filepath.Join(mnt, e.Name())); err != nil {
			t.Logf("removing stale cgroup %s: %v", e.Name(), err)
		}
	}
}

// Join moves the process pid into the cgroup at path.
func Join(path string, pid int) error {
	err := os.WriteFile(filepath.Join(path, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
	if err != nil {
		return fmt.Errorf("moving pid %d into cgroup %s: %w", pid, path, err)
	}
	return nil
}
