//go:build linux

// Command netcheck runs inside a vmtest guest (static: CGO_ENABLED=0). It
// creates a network namespace joined to the guest's own by a veth pair,
// pings across it both ways with busybox ping/ping6, and makes TCP
// connections both ways over IPv4 and IPv6, checking that each server sees
// the client's address. Exit status 0 means all of it worked.
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"time"

	"github.com/realip/realip/vmtest/vmnet"
)

const (
	hostDev = "vmt0" // in the guest's own namespace
	peerDev = "vmt1" // in the new namespace
)

var (
	host4 = netip.MustParsePrefix("192.0.2.1/24")
	peer4 = netip.MustParsePrefix("192.0.2.2/24")
	host6 = netip.MustParsePrefix("2001:db8::1/64")
	peer6 = netip.MustParsePrefix("2001:db8::2/64")
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "netcheck: FAIL: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("netcheck: all checks passed")
}

func run() error {
	peer, err := vmnet.NewNS()
	if err != nil {
		return err
	}
	defer peer.Close()
	if err := vmnet.AddVeth(hostDev, peerDev, peer); err != nil {
		return err
	}
	defer vmnet.DelLink(hostDev)
	if err := configure(nil, hostDev, host4, host6); err != nil {
		return err
	}
	if err := configure(peer, peerDev, peer4, peer6); err != nil {
		return err
	}
	fmt.Printf("netcheck: veth %s (%s, %s) <-> %s (%s, %s) in a new netns\n",
		hostDev, host4, host6, peerDev, peer4, peer6)

	for _, c := range []struct {
		from *vmnet.NS
		name string
		to   netip.Addr
	}{
		{nil, "guest", peer4.Addr()}, {nil, "guest", peer6.Addr()},
		{peer, "netns", host4.Addr()}, {peer, "netns", host6.Addr()},
	} {
		if err := ping(c.from, c.to); err != nil {
			return fmt.Errorf("ping from %s to %s: %w", c.name, c.to, err)
		}
		fmt.Printf("netcheck: ping %s -> %s ok\n", c.name, c.to)
	}

	for _, c := range []struct {
		client, server      *vmnet.NS
		clientAddr, srvAddr netip.Addr
		clientName, srvName string
	}{
		{nil, peer, host4.Addr(), peer4.Addr(), "guest", "netns"},
		{nil, peer, host6.Addr(), peer6.Addr(), "guest", "netns"},
		{peer, nil, peer4.Addr(), host4.Addr(), "netns", "guest"},
		{peer, nil, peer6.Addr(), host6.Addr(), "netns", "guest"},
	} {
		if err := tcpCheck(c.client, c.server, c.clientAddr, c.srvAddr); err != nil {
			return fmt.Errorf("tcp %s -> %s (%s): %w", c.clientName, c.srvName, c.srvAddr, err)
		}
		fmt.Printf("netcheck: tcp %s %s -> %s %s ok, server saw %s\n",
			c.clientName, c.clientAddr, c.srvName, c.srvAddr, c.clientAddr)
	}
	return nil
}

func configure(ns *vmnet.NS, dev string, addrs ...netip.Prefix) error {
	return ns.Do(func() error {
		for _, a := range addrs {
			if err := vmnet.AddAddr(dev, a); err != nil {
				return err
			}
		}
		if err := vmnet.LinkUp("lo"); err != nil {
			return err
		}
		return vmnet.LinkUp(dev)
	})
}

// ping runs busybox ping (ping6 for IPv6) from ns, a few tries while the
// link comes up.
func ping(ns *vmnet.NS, to netip.Addr) error {
	cmd := "ping"
	if to.Is6() {
		cmd = "ping6"
	}
	var out []byte
	var err error
	for try := 0; try < 5; try++ {
		err = ns.Do(func() error {
			// the child is forked from this thread, so it is in ns too
			out, err = exec.Command(cmd, "-c", "1", "-W", "2", to.String()).CombinedOutput()
			return err
		})
		if err == nil {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
}

// tcpCheck listens in server on srvAddr, connects from client, and checks
// the echo and the client address the server saw.
func tcpCheck(client, server *vmnet.NS, clientAddr, srvAddr netip.Addr) error {
	var ln net.Listener
	target := netip.AddrPortFrom(srvAddr, 7000).String()
	if err := server.Do(func() (err error) {
		ln, err = net.Listen("tcp", target)
		return err
	}); err != nil {
		return err
	}
	defer ln.Close()
	seen := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			seen <- err
			return
		}
		defer c.Close()
		got := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		if got != clientAddr {
			seen <- fmt.Errorf("server saw client %s, want %s", got, clientAddr)
			return
		}
		seen <- nil
		io.Copy(c, c)
	}()
	var c net.Conn
	if err := client.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", target, 5*time.Second)
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("realip vmtest")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("reading the echo: %w", err)
	}
	if !bytes.Equal(buf, msg) {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return <-seen
}
