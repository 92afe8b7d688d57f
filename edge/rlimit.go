package edge

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// fileMargin is room for health checks, DNS, logs and metrics beyond the
// listening ports, the UDP flows and the relayed TCP connections.
const fileMargin = 4096

// raiseFileLimit makes room for n more descriptors than the margin: it
// raises the soft limit, and the hard one too when allowed (root), up to
// the kernel's fs.nr_open. Without the right to raise the hard limit it
// raises the soft one as far as the hard one goes, and says so.
func raiseFileLimit(n int) error {
	need := min(uint64(n+fileMargin), nrOpen())
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur >= need {
		return nil
	}
	want := unix.Rlimit{Cur: need, Max: max(lim.Max, need)}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err == nil {
		return nil
	} else if lim.Cur >= lim.Max {
		return fmt.Errorf("setrlimit(%d): %w", need, err)
	}
	soft := unix.Rlimit{Cur: lim.Max, Max: lim.Max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &soft); err != nil {
		return fmt.Errorf("setrlimit(%d): %w", lim.Max, err)
	}
	return fmt.Errorf("open-file limit raised to the hard limit %d, short of the %d wanted (lower -max-tcp-conns / -max-udp-flows, or raise LimitNOFILE)", lim.Max, need)
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
