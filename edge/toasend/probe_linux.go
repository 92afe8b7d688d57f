//go:build linux

package toasend

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/realip/realip/internal/cgroup2"
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

// Where the kernel says things about this process's cgroups; tests point
// them elsewhere.
var (
	procSelfCgroup    = cgroup2.SelfCgroup
	procSelfMountinfo = cgroup2.SelfMountinfo
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
	if err := cgroup2.Check(path); err != nil {
		return "", noCgroup2(err)
	}
	return path, nil
}

// selfCgroup finds this process's cgroup v2 folder.
func selfCgroup() (string, error) {
	path, err := cgroup2.Self(procSelfCgroup, procSelfMountinfo)
	if err != nil {
		return "", noCgroup2(err)
	}
	return path, nil
}

// noCgroup2 wraps a cgroup2 error in ErrNoCgroup2 when that is its cause.
func noCgroup2(err error) error {
	if errors.Is(err, cgroup2.ErrNoCgroup2) {
		return fmt.Errorf("toasend: %w: %v", ErrNoCgroup2, err)
	}
	return fmt.Errorf("toasend: %w", err)
}
