package listener

import (
	"net"
	"syscall"
	"testing"

	"github.com/realip/realip/wire"
)

func deferAcceptOf(t *testing.T, ln net.Listener) int {
	t.Helper()
	rc, err := ln.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

func TestDeferAccept(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		toa  bool
		want bool
	}{
		{"proxy headers", Config{Trusted: loopback}, false, true},
		{"opted out", Config{Trusted: loopback, NoDeferAccept: true}, false, false},
		{"toa", Config{Trusted: loopback, Protocols: []wire.Proto{wire.TOA}}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l *Listener
			if tt.toa {
				l = newTOAListener(t, tt.cfg, moduleTOA{scriptedTOA{}})
			} else {
				l = newTestListener(t, tt.cfg)
			}
			// The kernel reports the option in seconds rounded to its
			// retransmission schedule: any non-zero value means set.
			if got := deferAcceptOf(t, l.inner) != 0; got != tt.want {
				t.Fatalf("TCP_DEFER_ACCEPT set: %v, want %v", got, tt.want)
			}
		})
	}
}
