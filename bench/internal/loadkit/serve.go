package loadkit

import (
	"errors"
	"net"
	"os"
	"os/signal"
	"syscall"
)

// ServeTCP listens on addr and hands every accepted connection to handle
// in a goroutine of its own, until the listener it returns is closed (the
// servers of an origin live as long as its process). An accept error other
// than the close (EMFILE and the like) is passed over.
func ServeTCP(addr string, handle func(*net.TCPConn)) (*net.TCPListener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	ln := l.(*net.TCPListener)
	go func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // EMFILE and the like: keep serving
			}
			go handle(c)
		}
	}()
	return ln, nil
}

// ServeUDP listens on addr and runs handle on the socket it returns in
// readers goroutines (at least one).
func ServeUDP(addr string, readers int, handle func(*net.UDPConn)) (*net.UDPConn, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	c := pc.(*net.UDPConn)
	for range max(readers, 1) {
		go handle(c)
	}
	return c, nil
}

// WaitForStop returns when the process gets SIGTERM or SIGINT, which then
// no longer end it.
func WaitForStop() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
