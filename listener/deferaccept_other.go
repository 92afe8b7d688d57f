//go:build !linux

package listener

import (
	"errors"
	"net"
)

func deferAccept(net.Listener) error { return errors.New("TCP_DEFER_ACCEPT is Linux only") }
