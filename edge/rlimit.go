//go:build linux

package edge

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// isLocalResource reports whether err is the edge's own shortage (of
// descriptors, of the system's files, of socket buffers or memory) rather
// than anything an origin did: socket() or connect() failing with EMFILE,
// ENFILE, ENOBUFS or ENOMEM.
func isLocalResource(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// blameDial counts a failed connect of rule rs to addr and marks addr down,
// unless the failure is the edge's own (counted as local_resource: no
// origin is blamed for it, and trying the next one would fail the same
// way). It reports whether it was local.
func blameDial(rs *ruleState, addr netip.Addr, err error) (local bool) {
	if isLocalResource(err) {
		rs.metrics.fail("local_resource")
		return true
	}
	rs.metrics.fail("dial")
	rs.pool.MarkDown(addr, err)
	return false
}

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

// openFileLimit raises the open-file limit for n more descriptors than
// the margin (raiseFileLimit) and returns the soft limit the process has
// then, with raiseFileLimit's error.
func openFileLimit(n int) (uint64, error) {
	err := raiseFileLimit(n)
	var lim unix.Rlimit
	if gerr := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); gerr != nil {
		return 0, errors.Join(err, fmt.Errorf("getrlimit: %w", gerr))
	}
	return lim.Cur, err
}

// fileCaps returns the TCP connections and UDP flows an open-file limit
// holds: sockets are the listening and UDP port sockets, each connection
// takes two descriptors and each flow one, and an eighth of the limit
// (32 to fileMargin) stays free for health checks, DNS, splice pipes,
// logs and metrics. When the wanted bounds do not fit both are lowered in
// proportion, to 1 at least; a bound of a protocol without ports is left
// as wanted. limit 0 (unknown) changes nothing.
func fileCaps(limit uint64, sockets, wantConns, wantFlows int, tcp, udp bool) (conns, flows int) {
	if limit == 0 {
		return wantConns, wantFlows
	}
	headroom := min(max(limit/8, 32), fileMargin)
	spare := int64(limit) - int64(sockets) - int64(headroom)
	var demand int64
	if tcp {
		demand += 2 * int64(wantConns)
	}
	if udp {
		demand += int64(wantFlows)
	}
	if demand <= spare {
		return wantConns, wantFlows
	}
	spare = max(spare, 0)
	conns, flows = wantConns, wantFlows
	if tcp {
		conns = int(max(int64(wantConns)*spare/demand, 1))
	}
	if udp {
		flows = int(max(int64(wantFlows)*spare/demand, 1))
	}
	return conns, flows
}
