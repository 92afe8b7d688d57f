//go:build linux

package testenv

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BPFFS is where a host mounts bpffs, and where realip pins.
const BPFFS = "/sys/fs/bpf"

// MountBPFFS mounts bpffs at BPFFS when nothing is mounted there, as
// systemd does at boot (and realip-agent does when it needs it): on a
// machine booted without systemd, or a fresh one where no earlier test
// mounted it, a test that pins must not depend on the order in which
// packages ran. It is left mounted, as on a booted host: tests of other
// packages, running at the same time, may be pinning there. It skips the
// test (fails under REALIP_STRICT=1) when the mount fails; it needs root.
func MountBPFFS(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	var st unix.Statfs_t
	if unix.Statfs(BPFFS, &st) == nil && st.Type == unix.BPF_FS_MAGIC {
		return
	}
	if err := unix.Mount("bpf", BPFFS, "bpf", 0, "mode=0700"); err != nil {
		SkipOrFail(t, "no bpffs at %s, and mounting one failed: %v", BPFFS, err)
	}
}
