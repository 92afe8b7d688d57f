//go:build !linux

package edge

import "errors"

// evLoops: the epoll loops are Linux only (tcploop_linux.go); elsewhere
// every connection takes the goroutine relay.
type evLoops struct{}

func newEvLoops(*Server) *evLoops { return nil }

func (*evLoops) start() error           { return errors.New("edge: epoll loops are Linux only") }
func (*evLoops) addPort(*tcpPort) error { return errors.New("edge: epoll loops are Linux only") }
func (*evLoops) removePort(*tcpPort)    {}
func (*evLoops) cutAll()                {}
func (*evLoops) stop()                  {}
