//go:build linux

package netns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// readyTimeout bounds the wait for a new link to become usable.
	readyTimeout = 10 * time.Second
	// readyPoll is how often the link is checked meanwhile.
	readyPoll = 2 * time.Millisecond
)

// waitReady waits until dev passes traffic: the kernel finishes bringing a
// veth up asynchronously, and until then it drops packets silently. Ready
// means operationally up (a queueing discipline is attached) and, unless
// IPv6 is off, holding a link-local address and no tentative address (the
// kernel sends no neighbour solicitation for forwarded packets without one).
func (h *Host) waitReady(dev string) error {
	start := time.Now()
	for {
		var ready bool
		err := h.Do(func() (err error) {
			ready, err = linkReady(dev)
			return err
		})
		if err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
		if ready {
			return nil
		}
		if time.Since(start) > readyTimeout {
			return fmt.Errorf("host %s: %s not ready after %v", h.Name, dev, readyTimeout)
		}
		time.Sleep(readyPoll)
	}
}

// linkReady checks dev in the current thread's namespace.
func linkReady(dev string) (bool, error) {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return false, fmt.Errorf("interface %s: %w", dev, err)
	}
	if ifi.Flags&net.FlagRunning == 0 {
		return false, nil
	}
	off, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + dev + "/disable_ipv6")
	if errors.Is(err, os.ErrNotExist) || string(off) == "1\n" {
		return true, nil // no IPv6 on this link
	}
	if err != nil {
		return false, fmt.Errorf("interface %s: %w", dev, err)
	}
	return ipv6Ready(ifi.Index)
}

// ipv6Ready reports whether interface index has an IPv6 link-local address
// and no tentative IPv6 address, asking the kernel over rtnetlink (the
// syscall package has the helpers; x/sys/unix only the constants).
func ipv6Ready(index int) (bool, error) {
	rib, err := syscall.NetlinkRIB(unix.RTM_GETADDR, unix.AF_INET6)
	if err != nil {
		return false, fmt.Errorf("list IPv6 addresses: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(rib)
	if err != nil {
		return false, fmt.Errorf("parse IPv6 addresses: %w", err)
	}
	linkLocal := false
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Type != unix.RTM_NEWADDR || len(m.Data) < unix.SizeofIfAddrmsg {
			continue
		}
		// struct ifaddrmsg: family, prefixlen, flags, scope (u8 each), index (u32).
		if int(binary.NativeEndian.Uint32(m.Data[4:8])) != index {
			continue
		}
		flags, err := addrFlags(m)
		if err != nil {
			return false, err
		}
		if flags&unix.IFA_F_TENTATIVE != 0 {
			return false, nil
		}
		linkLocal = linkLocal || m.Data[3] == unix.RT_SCOPE_LINK
	}
	return linkLocal, nil
}

// addrFlags returns an address's flags: the 32-bit IFA_FLAGS attribute if
// present, else the 8-bit field of struct ifaddrmsg.
func addrFlags(m *syscall.NetlinkMessage) (uint32, error) {
	attrs, err := syscall.ParseNetlinkRouteAttr(m)
	if err != nil {
		return 0, fmt.Errorf("parse address attributes: %w", err)
	}
	for _, a := range attrs {
		if a.Attr.Type == unix.IFA_FLAGS && len(a.Value) >= 4 {
			return binary.NativeEndian.Uint32(a.Value), nil
		}
	}
	return uint32(m.Data[2]), nil
}
