//go:build linux

package netns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// netnsDir is where ip(8) keeps named network namespaces.
const netnsDir = "/run/netns"

// Host is one network namespace of a Lab.
type Host struct {
	// Name is the short name given to Lab.Host.
	Name string
	// Namespace is the full namespace name, for `ip netns exec`, `ip -n`,
	// or configuration that names a namespace (HAProxy's "namespace").
	Namespace string

	lab  *Lab
	devs atomic.Int32 // interfaces made so far, for eth0, eth1, ...
}

// nextDev returns the name for the host's next interface.
func (h *Host) nextDev() string {
	return fmt.Sprintf("eth%d", h.devs.Add(1)-1)
}

// setUp adds addrs to dev and brings dev up.
func (h *Host) setUp(dev string, addrs []netip.Prefix) error {
	for _, p := range addrs {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return fmt.Errorf("%s: bad address %v", h.Name, p)
		}
		args := []string{"-n", h.Namespace, "addr", "add", p.String(), "dev", dev}
		if p.Addr().Is6() {
			args = append(args, "nodad")
		}
		if _, err := runIP(args...); err != nil {
			return err
		}
	}
	_, err := runIP("-n", h.Namespace, "link", "set", dev, "up")
	return err
}

// Route adds a route to dst via the gateway via (IPv4 or IPv6, matching dst).
// Use 0.0.0.0/0 or ::/0 for a default route.
func (h *Host) Route(dst netip.Prefix, via netip.Addr) {
	h.lab.t.Helper()
	_, err := runIP("-n", h.Namespace, "route", "add", dst.Masked().String(), "via", via.String())
	if err != nil {
		h.lab.t.Fatalf("netns: host %s: route: %v", h.Name, err)
	}
}

// init brings lo up and turns off duplicate address detection for the
// interfaces to come: in a lab every address is unique by construction, and
// a tentative IPv6 link-local address stops a forwarding host from
// soliciting neighbours, losing the first packets it forwards.
func (h *Host) init() error {
	if _, err := runIP("-n", h.Namespace, "link", "set", "lo", "up"); err != nil {
		return err
	}
	for _, key := range []string{"net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"} {
		if err := h.sysctl(key, "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err // ErrNotExist: a kernel without IPv6
		}
	}
	return nil
}

// Sysctl sets a sysctl inside the host's namespace, e.g.
// Sysctl("net.ipv4.ip_forward", "1"). A key containing '/' is taken as a
// path under /proc/sys (for interface names that contain dots).
func (h *Host) Sysctl(key, value string) {
	h.lab.t.Helper()
	if err := h.sysctl(key, value); err != nil {
		h.lab.t.Fatalf("netns: host %s: %v", h.Name, err)
	}
}

func (h *Host) sysctl(key, value string) error {
	path := key
	if !strings.Contains(key, "/") {
		path = strings.ReplaceAll(key, ".", "/")
	}
	path = filepath.Join("/proc/sys", path)
	// /proc/sys/net shows the namespace of the thread that opens it.
	err := h.Do(func() error { return os.WriteFile(path, []byte(value), 0) })
	if err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// EnableForwarding makes the host route IPv4 and IPv6 packets between its
// interfaces, like an edge or router between client and origin subnets.
func (h *Host) EnableForwarding() {
	h.lab.t.Helper()
	h.Sysctl("net.ipv4.ip_forward", "1")
	h.Sysctl("net.ipv6.conf.all.forwarding", "1")
}

// Do runs fn on the calling goroutine with its OS thread switched into the
// host's namespace, and switches back afterwards. Sockets fn creates
// (net.Listen, net.Dial, ...) stay in the namespace for their whole life.
// Goroutines that fn starts do not run in the namespace. Do returns fn's
// error, or an error if the namespace could not be entered or left; if the
// thread cannot be switched back it stays locked, so Go discards it when the
// goroutine ends instead of reusing a thread in the wrong namespace.
func (h *Host) Do(fn func() error) (err error) {
	runtime.LockOSThread()
	back, err := h.enter()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: host %s: %w", h.Name, err)
	}
	defer func() {
		if leaveErr := h.leave(back); leaveErr != nil {
			err = errors.Join(err, leaveErr) // keep the thread locked
			return
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}

// enter switches the current (locked) thread into the host's namespace and
// returns a descriptor of the namespace it was in before.
func (h *Host) enter() (back int, err error) {
	self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
	back, err = unix.Open(self, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", self, err)
	}
	target := filepath.Join(netnsDir, h.Namespace)
	fd, err := unix.Open(target, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		_ = unix.Close(back)
		return -1, fmt.Errorf("open %s: %w", target, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		_ = unix.Close(back)
		return -1, fmt.Errorf("setns %s: %w", target, err)
	}
	return back, nil
}

// leave switches the current thread back to the namespace back refers to,
// and closes back.
func (h *Host) leave(back int) error {
	defer unix.Close(back)
	if err := unix.Setns(back, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("netns: host %s: cannot return the thread to its namespace, discarding it: %w", h.Name, err)
	}
	return nil
}

// Command returns a command that runs name with args inside the host's
// namespace (through `ip netns exec`, which also mounts a matching /sys).
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Namespace, name}, args...)...)
}

// dump returns the host's addresses and routes for failure messages.
func (h *Host) dump() string {
	var b strings.Builder
	for _, args := range [][]string{{"-br", "addr"}, {"-4", "route"}, {"-6", "route"}} {
		out, err := runIP(append([]string{"-n", h.Namespace}, args...)...)
		if err != nil {
			out = err.Error() + "\n"
		}
		b.WriteString(out)
	}
	return b.String()
}
