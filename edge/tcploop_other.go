//go:build !linux

package edge

import "errors"

// tcpLoops: the epoll loops are Linux only (tcploop_linux.go); elsewhere
// every connection takes the goroutine relay.
type tcpLoops struct{}

func newTCPLoops(*Server) *tcpLoops { return nil }

func (*tcpLoops) start() error           { return errors.New("edge: epoll loops are Linux only") }
func (*tcpLoops) addPort(*tcpPort) error { return errors.New("edge: epoll loops are Linux only") }
func (*tcpLoops) removePort(*tcpPort)    {}
func (*tcpLoops) cutAll()                {}
func (*tcpLoops) stop()                  {}
