//go:build linux

// Package sockopt holds socket options shared by the edge's packages, as
// net.Dialer / net.ListenConfig Control functions. Linux only, as the edge.
package sockopt

import "syscall"

// ReuseAddr sets SO_REUSEADDR. On the edge's outgoing sockets (origin
// connections, UDP flows, health checks) it keeps the ephemeral port they
// take from blocking a forwarding listener, which binds with SO_REUSEADDR,
// on the same port later, while connected or in TIME_WAIT.
func ReuseAddr(network, address string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	return serr
}
