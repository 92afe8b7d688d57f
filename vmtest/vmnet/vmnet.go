//go:build linux

// Package vmnet creates network namespaces, veth pairs and addresses with
// rtnetlink directly, for tests that run where iproute2 is missing: the
// vmtest initramfs has only busybox, whose ip has no netns subcommand and
// cannot name a veth peer. It works the same on the host (as root) and in
// the QEMU guests of vmtest/run.sh.
package vmnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// vethInfoPeer is VETH_INFO_PEER from linux/veth.h (not in x/sys/unix).
const vethInfoPeer = 1

// NS is a network namespace, held open by a file descriptor.
type NS struct {
	f *os.File
}

// NewNS creates a network namespace. The calling goroutine's thread is not
// moved into it; use Do to run code there.
func NewNS() (*NS, error) {
	var ns *NS
	err := onLockedThread(func() error {
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			return err
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
		}
		f, openErr := os.Open("/proc/thread-self/ns/net")
		// Go back to the original namespace before anything else; if that
		// fails the thread must not be reused (onLockedThread sees errStuck).
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			if f != nil {
				f.Close()
			}
			return fmt.Errorf("%w: setns back: %v", errStuck, err)
		}
		if openErr != nil {
			return openErr
		}
		ns = &NS{f: f}
		return nil
	})
	return ns, err
}

// Close releases the namespace; it disappears once nothing else (a socket,
// a process, a bind mount) holds it.
func (ns *NS) Close() error { return ns.f.Close() }

// Fd is the namespace's file descriptor, e.g. for IFLA_NET_NS_FD.
func (ns *NS) Fd() int { return int(ns.f.Fd()) }

// Do runs fn on an OS thread that is inside ns; sockets fn creates (with
// net.Listen, net.Dial, ...) stay in ns afterwards. A nil ns runs fn in
// the caller's namespace.
func (ns *NS) Do(fn func() error) error {
	if ns == nil {
		return fn()
	}
	return onLockedThread(func() error {
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			return err
		}
		defer orig.Close()
		if err := unix.Setns(ns.Fd(), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("setns: %w", err)
		}
		fnErr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("%w: setns back: %v", errStuck, err)
		}
		return fnErr
	})
}

var errStuck = errors.New("thread left in another network namespace")

// onLockedThread runs fn on a locked OS thread of a new goroutine. When fn
// reports errStuck the thread stays locked, so the runtime ends it instead
// of reusing a thread in the wrong namespace.
func onLockedThread(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := fn()
		if !errors.Is(err, errStuck) {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// AddVeth creates the veth pair name/peer in the calling thread's
// namespace (use ns.Do to pick one) and puts peer into peerNS (nil: same).
func AddVeth(name, peer string, peerNS *NS) error {
	peerAttrs := attr(unix.IFLA_IFNAME, cstr(peer))
	if peerNS != nil {
		peerAttrs = append(peerAttrs, attr(unix.IFLA_NET_NS_FD, u32(uint32(peerNS.Fd())))...)
	}
	info := append(attr(unix.IFLA_INFO_KIND, cstr("veth")),
		attr(unix.IFLA_INFO_DATA, attr(vethInfoPeer, append(ifinfo(0, 0, 0), peerAttrs...)))...)
	body := append(ifinfo(0, 0, 0), attr(unix.IFLA_IFNAME, cstr(name))...)
	body = append(body, attr(unix.IFLA_LINKINFO, info)...)
	if err := request(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL, body); err != nil {
		return fmt.Errorf("add veth %s/%s: %w", name, peer, err)
	}
	return nil
}

// DelLink deletes the interface name (for a veth, both ends).
func DelLink(name string) error {
	body := append(ifinfo(0, 0, 0), attr(unix.IFLA_IFNAME, cstr(name))...)
	if err := request(unix.RTM_DELLINK, 0, body); err != nil {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// LinkUp sets the interface name up.
func LinkUp(name string) error {
	body := append(ifinfo(0, unix.IFF_UP, unix.IFF_UP), attr(unix.IFLA_IFNAME, cstr(name))...)
	if err := request(unix.RTM_NEWLINK, 0, body); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// AddAddr adds the address p (e.g. 192.0.2.1/24) to the interface name.
// IPv6 addresses skip duplicate address detection, so they work at once.
func AddAddr(name string, p netip.Prefix) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("add address %s: %w", p, err)
	}
	family, flags := uint8(unix.AF_INET), uint8(0)
	if p.Addr().Is6() {
		family, flags = unix.AF_INET6, unix.IFA_F_NODAD
	}
	a := p.Addr().AsSlice()
	body := make([]byte, unix.SizeofIfAddrmsg)
	body[0], body[1], body[2] = family, uint8(p.Bits()), flags
	binary.NativeEndian.PutUint32(body[4:], uint32(ifi.Index))
	body = append(body, attr(unix.IFA_LOCAL, a)...)
	body = append(body, attr(unix.IFA_ADDRESS, a)...)
	if err := request(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, body); err != nil {
		return fmt.Errorf("add address %s to %s: %w", p, name, err)
	}
	return nil
}

var seq atomic.Uint32

// request sends one rtnetlink request from the calling thread's namespace
// and waits for its acknowledgement.
func request(typ uint16, flags uint16, body []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}
	s := seq.Add(1)
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], s)
	msg = append(msg, body...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("netlink parse: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != s || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("netlink: short error message")
			}
			if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
				return unix.Errno(-e)
			}
			return nil
		}
	}
}

// ifinfo is a struct ifinfomsg for AF_UNSPEC with the given flags/change.
func ifinfo(index int32, flags, change uint32) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(b[4:], uint32(index))
	binary.NativeEndian.PutUint32(b[8:], flags)
	binary.NativeEndian.PutUint32(b[12:], change)
	return b
}

// attr is one rtattr, padded to 4 bytes.
func attr(typ uint16, data []byte) []byte {
	n := unix.SizeofRtAttr + len(data)
	b := make([]byte, (n+3)&^3)
	binary.NativeEndian.PutUint16(b[0:], uint16(n))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[unix.SizeofRtAttr:], data)
	return b
}

func cstr(s string) []byte { return append([]byte(s), 0) }

func u32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}
