//go:build linux

package main

import (
	"flag"
	"fmt"
	"net"
	"time"

	"github.com/realip/realip/bench/internal/loadkit"
)

// runOrigin serves the origin side of every relay: a TCP discard port (for
// throughput), a TCP echo port (for connections per second), a TCP echo
// port that first strips a PROXY v1 header, and a UDP echo port. It runs
// until SIGTERM or SIGINT.
func runOrigin(args []string) error {
	fs := flag.NewFlagSet("origin", flag.ExitOnError)
	discard := fs.String("discard", "", "TCP address that reads and drops everything")
	echo := fs.String("echo", "", "TCP address that echoes everything")
	echoV1 := fs.String("echo-ppv1", "", "TCP address that expects a PROXY v1 header, then echoes")
	udp := fs.String("udp", "", "UDP address that echoes every datagram")
	readers := fs.Int("udp-readers", 2, "goroutines reading the UDP socket")
	fs.Parse(args)
	for _, s := range []struct {
		addr   string
		handle func(*net.TCPConn)
	}{
		{*discard, loadkit.Discard},
		{*echo, loadkit.Echo{}.TCP},
		{*echoV1, loadkit.Echo{PPv1: true}.TCP},
	} {
		if s.addr == "" {
			continue
		}
		if _, err := loadkit.ServeTCP(s.addr, s.handle); err != nil {
			return err
		}
	}
	if *udp != "" {
		if _, err := loadkit.ServeUDP(*udp, *readers, loadkit.Echo{}.UDP); err != nil {
			return err
		}
	}
	loadkit.WaitForStop()
	return nil
}

// runWait returns once every TCP address accepts a connection and every
// UDP address echoes a datagram, or fails after -timeout.
func runWait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	tcp := fs.String("tcp", "", "comma-separated TCP addresses")
	udp := fs.String("udp", "", "comma-separated UDP addresses (must echo)")
	timeout := fs.Duration("timeout", 0, "give up after this long (default 10s)")
	fs.Parse(args)
	if *timeout <= 0 {
		*timeout = defaultWait
	}
	for _, a := range loadkit.SplitList(*tcp) {
		if err := waitTCP(a, *timeout); err != nil {
			return err
		}
	}
	for _, a := range loadkit.SplitList(*udp) {
		if err := waitUDP(a, *timeout); err != nil {
			return err
		}
	}
	return nil
}

func waitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("tcp %s: not listening after %v: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitUDP(addr string, timeout time.Duration) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 64)
	for {
		c.Write([]byte("ping"))
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "ping" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("udp %s: no echo after %v", addr, timeout)
		}
	}
}
