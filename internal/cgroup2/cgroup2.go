//go:build linux

package cgroup2

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoCgroup2 is wrapped by every error that means "no usable cgroup v2".
var ErrNoCgroup2 = errors.New("no usable cgroup v2")

// Where the kernel tells a process about its cgroups.
const (
	SelfCgroup    = "/proc/self/cgroup"
	SelfMountinfo = "/proc/self/mountinfo"
)

// Check returns nil when path is a folder of a cgroup v2 file system.
func Check(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fmt.Errorf("%w: %v", ErrNoCgroup2, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("%w: %s is not a cgroup v2 folder", ErrNoCgroup2, path)
	}
	return nil
}

// Self finds a process's cgroup v2 folder from its /proc/PID/cgroup and
// /proc/PID/mountinfo files (SelfCgroup, SelfMountinfo for the caller): its
// path in the unified hierarchy (the "0::" line) under the cgroup2 mount.
func Self(cgroupFile, mountinfoFile string) (string, error) {
	rel, err := unifiedPath(cgroupFile)
	if err != nil {
		return "", err
	}
	mnt, root, err := Mount(mountinfoFile)
	if err != nil {
		return "", err
	}
	// The mount shows the hierarchy from root on; rel must be below it.
	sub, err := filepath.Rel(root, rel)
	if err != nil || sub == ".." || strings.HasPrefix(sub, "../") {
		return "", fmt.Errorf("%w: the cgroup %s is outside the cgroup2 mount at %s (root %s)", ErrNoCgroup2, rel, mnt, root)
	}
	return filepath.Join(mnt, sub), nil
}

// unifiedPath returns the cgroup v2 path from a /proc/PID/cgroup file.
func unifiedPath(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoCgroup2, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return strings.TrimSuffix(rest, " (deleted)"), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading %s: %w", file, err)
	}
	return "", fmt.Errorf("%w: %s has no cgroup v2 entry (0::)", ErrNoCgroup2, file)
}

// Mount returns the mount point and root of the first cgroup2 mount in a
// /proc/PID/mountinfo file (SelfMountinfo for the caller's).
func Mount(mountinfoFile string) (mnt, root string, err error) {
	f, err := os.Open(mountinfoFile)
	if err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrNoCgroup2, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+1 >= len(fields) || fields[sep+1] != "cgroup2" {
			continue
		}
		return unescapeMount(fields[4]), unescapeMount(fields[3]), nil
	}
	if err := sc.Err(); err != nil {
		return "", "", fmt.Errorf("reading %s: %w", mountinfoFile, err)
	}
	return "", "", fmt.Errorf("%w: no cgroup2 mount in %s", ErrNoCgroup2, mountinfoFile)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}
