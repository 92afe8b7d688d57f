//go:build linux

package toasend

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Available reports whether Open can work here with default options: cgroup
// v2 is mounted and this process is in a cgroup of it, the kernel has BPF
// TCP header options, and the process may load the program (it is loaded
// and unloaded again, never attached). It takes a few milliseconds. A
// non-nil error wraps ErrNoCgroup2, ErrUnsupported or ErrNotPermitted when
// that is the cause, and reads well as the reason to refuse toa rules.
func Available() error {
	if _, err := cgroupPath(""); err != nil {
		return err
	}
	objs, err := load(DefaultKindV4, DefaultKindV6)
	if err != nil {
		return err
	}
	return objs.Close()
}

// load probes the kernel, then loads the program and its maps with the
// given option kinds.
func load(kindV4, kindV6 uint8) (*toaObjects, error) {
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones
	// use memory cgroups and this does nothing. A failure here shows up as
	// EPERM when loading, reported as ErrNotPermitted.
	_ = rlimit.RemoveMemlock()
	if err := probe(); err != nil {
		return nil, err
	}
	spec, err := loadToa()
	if err != nil {
		return nil, fmt.Errorf("toasend: %w", err)
	}
	for name, kind := range map[string]uint8{toaVarKindV4: kindV4, toaVarKindV6: kindV6} {
		v, ok := spec.Variables[name]
		if !ok {
			return nil, fmt.Errorf("toasend: the eBPF object has no variable %s", name)
		}
		if err := v.Set(kind); err != nil {
			return nil, fmt.Errorf("toasend: setting %s: %w", name, err)
		}
	}
	objs := new(toaObjects)
	if err := spec.LoadAndAssign(objs, nil); err != nil {
		return nil, classify("loading the sockops program", err)
	}
	return objs, nil
}

// probe checks for the helpers the program needs, for a clear error on
// old kernels (the verifier's own message for a missing helper or context
// field is cryptic).
func probe() error {
	helpers := []asm.BuiltinFunc{
		asm.FnReserveHdrOpt, asm.FnStoreHdrOpt, // 5.10
		asm.FnSkStorageGet, asm.FnSockOpsCbFlagsSet,
	}
	for _, h := range helpers {
		if err := features.HaveProgramHelper(ebpf.SockOps, h); err != nil {
			return classify(fmt.Sprintf("probing for helper %v in sockops programs", h), err)
		}
	}
	if err := features.HaveMapType(ebpf.SkStorage); err != nil {
		return classify("probing for socket storage maps", err)
	}
	return nil
}

// classify wraps err, from doing what, with the sentinel error for its
// cause when it is known.
func classify(what string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("toasend: %w: %s: %v", ErrNotPermitted, what, err)
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("toasend: %w: %s: %v", ErrUnsupported, what, err)
	}
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) && errors.Is(err, unix.EINVAL) {
		// An unknown helper or context field: an old kernel.
		return fmt.Errorf("toasend: %w: %s: %v", ErrUnsupported, what, err)
	}
	return fmt.Errorf("toasend: %s: %w", what, err)
}

// Where the kernel says things about cgroups.
var (
	procSelfCgroup    = "/proc/self/cgroup"
	procSelfMountinfo = "/proc/self/mountinfo"
)

// cgroupPath returns path after checking that it is a cgroup v2 folder,
// or, for "", the cgroup v2 folder of this process.
func cgroupPath(path string) (string, error) {
	if path == "" {
		var err error
		if path, err = selfCgroup(); err != nil {
			return "", err
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "", fmt.Errorf("toasend: %w: %v", ErrNoCgroup2, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return "", fmt.Errorf("toasend: %w: %s is not a cgroup v2 folder", ErrNoCgroup2, path)
	}
	return path, nil
}

// selfCgroup finds this process's cgroup v2 folder: its path in the
// unified hierarchy (the "0::" line of /proc/self/cgroup) under the
// cgroup2 mount point.
func selfCgroup() (string, error) {
	rel, err := unifiedPath(procSelfCgroup)
	if err != nil {
		return "", err
	}
	mnt, root, err := cgroup2Mount(procSelfMountinfo)
	if err != nil {
		return "", err
	}
	// The mount shows the hierarchy from root on; rel must be below it.
	sub, err := filepath.Rel(root, rel)
	if err != nil || sub == ".." || strings.HasPrefix(sub, "../") {
		return "", fmt.Errorf("toasend: %w: this process's cgroup %s is outside the cgroup2 mount at %s (root %s)", ErrNoCgroup2, rel, mnt, root)
	}
	return filepath.Join(mnt, sub), nil
}

// unifiedPath returns the cgroup v2 path from a /proc/PID/cgroup file.
func unifiedPath(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("toasend: %w: %v", ErrNoCgroup2, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return strings.TrimSuffix(rest, " (deleted)"), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("toasend: reading %s: %w", file, err)
	}
	return "", fmt.Errorf("toasend: %w: %s has no cgroup v2 entry (0::)", ErrNoCgroup2, file)
}

// cgroup2Mount returns the mount point and root of the first cgroup2 mount
// in a /proc/PID/mountinfo file.
func cgroup2Mount(file string) (mnt, root string, err error) {
	f, err := os.Open(file)
	if err != nil {
		return "", "", fmt.Errorf("toasend: %w: %v", ErrNoCgroup2, err)
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
		return "", "", fmt.Errorf("toasend: reading %s: %w", file, err)
	}
	return "", "", fmt.Errorf("toasend: %w: no cgroup2 mount in %s", ErrNoCgroup2, file)
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
