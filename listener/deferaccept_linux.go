package listener

import (
	"errors"
	"net"
	"syscall"
)

// deferAccept asks the kernel to hand over ln's connections only once
// their first bytes arrived, or a second after the handshake for peers
// that stay silent (TCP_DEFER_ACCEPT counts in seconds and turns them into
// SYN-ACK retransmissions).
func deferAccept(ln net.Listener) error {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return &net.OpError{Op: "setsockopt TCP_DEFER_ACCEPT", Net: ln.Addr().Network(), Addr: ln.Addr(), Err: serr}
	}
	return nil
}
