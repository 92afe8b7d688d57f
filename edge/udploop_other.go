//go:build !linux

package edge

import (
	"errors"
	"net/netip"
)

// Without the epoll loops (Linux only) every UDP port is served by
// serveUDP; these are never reached.

type evLoop struct{}

func (*evLoop) addFlow(*udpFlow) error { return errLoopsLinuxOnly }

func (f *udpFlow) closeInLoop() {}

var errLoopsLinuxOnly = errors.New("edge: epoll loops are Linux only")

func (*evLoops) openUDP(*udpPort) error                   { return errLoopsLinuxOnly }
func (*evLoops) addUDPPort(*udpPort) error                { return errLoopsLinuxOnly }
func (*evLoops) removeUDPPort(*udpPort)                   {}
func (*evLoops) closeFlow(*udpFlow)                       {}
func (*evLoops) closeFlows(*udpPort, func(*udpFlow) bool) {}

func openRawUpstream(netip.AddrPort) (upstream, error) { return upstream{fd: -1}, errLoopsLinuxOnly }
func rawWriteFD(int, []byte) (int, error)              { return 0, errLoopsLinuxOnly }
func closeFD(int)                                      {}

func (*evLoop) post(func()) {}
