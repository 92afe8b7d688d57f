//go:build linux

package toarecv

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

// Available reports whether Open can work here with opts: a cgroup v2
// folder to attach to, and a kernel that loads the programs (they are
// loaded and unloaded again, never attached or pinned). A non-nil error
// wraps ErrNoCgroup2, ErrUnsupported or ErrNotPermitted when that is the
// cause, and reads well as the reason to choose the module instead.
func Available(opts Options) error {
	if _, err := opts.withDefaults(); err != nil {
		return err
	}
	_ = rlimit.RemoveMemlock()
	spec, err := loadRecv()
	if err != nil {
		return fmt.Errorf("toarecv: %w", err)
	}
	var objs recvObjects
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{}); err != nil {
		return classify("loading the receiver's programs", err)
	}
	return objs.Close()
}
