//go:build !linux

package toasend

import (
	"fmt"
	"net/netip"
	"runtime"
	"syscall"
)

// Sender is not available on this operating system.
type Sender struct{}

func unsupported() error {
	return fmt.Errorf("toasend: %w: %s has none", ErrUnsupported, runtime.GOOS)
}

// Available always fails: TOA sending needs Linux.
func Available() error { return unsupported() }

// Open always fails: TOA sending needs Linux.
func Open(Options) (*Sender, error) { return nil, unsupported() }

// Control returns a function that always fails.
func (*Sender) Control(netip.AddrPort) func(network, address string, c syscall.RawConn) error {
	return func(string, string, syscall.RawConn) error { return unsupported() }
}

// Carried always fails.
func (*Sender) Carried(syscall.Conn) (syn, ack bool, err error) { return false, false, unsupported() }

// Stats always fails.
func (*Sender) Stats() (Stats, error) { return Stats{}, unsupported() }

// Close does nothing.
func (*Sender) Close() error { return nil }
