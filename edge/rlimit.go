package edge

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// fileMargin is room for origin sockets, logs and metrics beyond the
// listening ports and UDP flows.
const fileMargin = 4096

// raiseFileLimit makes room for n more descriptors than the margin: it
// raises the soft limit, and the hard one too when allowed (root), up to
// the kernel's fs.nr_open.
func raiseFileLimit(n int) error {
	need := uint64(n + fileMargin)
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur >= need {
		return nil
	}
	if need > lim.Max {
		ceiling := nrOpen()
		if need > ceiling {
			need = ceiling
		}
		lim.Max = max(lim.Max, need)
	}
	lim.Cur = min(need, lim.Max)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("setrlimit(%d): %w", need, err)
	}
	return nil
}

func nrOpen() uint64 {
	b, err := os.ReadFile("/proc/sys/fs/nr_open")
	if err != nil {
		return 1 << 20
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 1 << 20
	}
	return v
}
