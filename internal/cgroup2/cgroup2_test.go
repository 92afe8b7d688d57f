//go:build linux

package cgroup2

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fakeProc writes a /proc/PID/cgroup and mountinfo pair and returns their
// paths.
func fakeProc(t *testing.T, cgroup, mountinfo string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	cg, mi := filepath.Join(dir, "cgroup"), filepath.Join(dir, "mountinfo")
	for file, text := range map[string]string{cg: cgroup, mi: mountinfo} {
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return cg, mi
}

const (
	hybridMountinfo = `22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	unifiedMountinfo = `25 20 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	// A container that sees only its own part of the host's hierarchy
	// mounted, and a mount point with a space in it.
	boundMountinfo = `900 800 0:30 /kubepods/pod1 /mnt/my\040cgroups ro - cgroup2 cgroup2 rw
`
)

func TestSelf(t *testing.T) {
	tests := []struct {
		name, cgroup, mountinfo string
		want                    string
		wantErr                 error
	}{
		{"hybrid-root", "9:name=systemd:/\n1:cpu:/\n0::/\n", hybridMountinfo, "/sys/fs/cgroup/unified", nil},
		{"hybrid-child", "1:cpu:/x\n0::/system.slice/edge.service\n", hybridMountinfo, "/sys/fs/cgroup/unified/system.slice/edge.service", nil},
		{"unified", "0::/user.slice/user-0.slice/session-1.scope\n", unifiedMountinfo, "/sys/fs/cgroup/user.slice/user-0.slice/session-1.scope", nil},
		{"bound-subtree", "0::/kubepods/pod1/c1\n", boundMountinfo, "/mnt/my cgroups/c1", nil},
		{"outside-mount", "0::/other\n", boundMountinfo, "", ErrNoCgroup2},
		{"v1-only-process", "1:cpu:/\n", hybridMountinfo, "", ErrNoCgroup2},
		{"no-cgroup2-mount", "0::/\n", "31 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n", "", ErrNoCgroup2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cg, mi := fakeProc(t, tc.cgroup, tc.mountinfo)
			got, err := Self(cg, mi)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Self() = %q, %v; want error %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Self() = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestMount(t *testing.T) {
	_, mi := fakeProc(t, "", hybridMountinfo)
	mnt, root, err := Mount(mi)
	if err != nil || mnt != "/sys/fs/cgroup/unified" || root != "/" {
		t.Fatalf("Mount() = %q, %q, %v", mnt, root, err)
	}
}

func TestCheck(t *testing.T) {
	if err := Check(t.TempDir()); !errors.Is(err, ErrNoCgroup2) {
		t.Fatalf("Check(tmpdir) = %v, want ErrNoCgroup2", err)
	}
	if err := Check("/nonexistent/cgroup"); !errors.Is(err, ErrNoCgroup2) {
		t.Fatalf("Check(missing) = %v, want ErrNoCgroup2", err)
	}
	mnt, _, err := Mount(SelfMountinfo)
	if err != nil {
		t.Skipf("no cgroup2 mount here: %v", err)
	}
	if err := Check(mnt); err != nil {
		t.Fatalf("Check(%s) = %v", mnt, err)
	}
}
