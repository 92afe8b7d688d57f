//go:build linux

package tproute

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ClaimName is the abstract unix socket address that Install binds in its
// network namespace while the routing is its own (`ss -xap | grep
// realip/tproute` shows the process holding it).
//
// Install removes every rule and route of ours it finds, so that a killed
// agent's leftovers cannot break the next start; a second process running
// Install in the same namespace would thus remove a live agent's routing
// and cut its relays off. The claim prevents that: abstract unix socket
// addresses belong to a network namespace, and the kernel frees one when
// its holder exits, whatever the way (SIGKILL included), so leftovers are
// only ever a dead process's.
const ClaimName = "@realip/tproute"

// ErrClaimed is the error of Install when another process (or another
// Routes of this one) manages the routing of the network namespace.
var ErrClaimed = errors.New("tproute: another process manages realip's routing in this network namespace (a realip-agent with unwrap entries? `ss -xap | grep realip/tproute` names it)")

// claimNamespace binds ClaimName in the calling thread's network namespace
// and returns the socket, which holds the claim until it is closed.
func claimNamespace() (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("tproute: claim the namespace: socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: ClaimName}); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			return -1, ErrClaimed
		}
		return -1, fmt.Errorf("tproute: claim the namespace: bind %s: %w", ClaimName, err)
	}
	return fd, nil
}
