//go:build linux

package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
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

	serve := func(addr string, handle func(*net.TCPConn)) error {
		if addr == "" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := ln.(*net.TCPListener).AcceptTCP()
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue // EMFILE and the like: keep serving
				}
				go handle(c)
			}
		}()
		return nil
	}
	if err := serve(*discard, discardConn); err != nil {
		return err
	}
	if err := serve(*echo, func(c *net.TCPConn) { echoConn(c, false) }); err != nil {
		return err
	}
	if err := serve(*echoV1, func(c *net.TCPConn) { echoConn(c, true) }); err != nil {
		return err
	}
	if *udp != "" {
		pc, err := net.ListenPacket("udp", *udp)
		if err != nil {
			return err
		}
		for range max(*readers, 1) {
			go echoUDP(pc.(*net.UDPConn))
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return nil
}

func discardConn(c *net.TCPConn) {
	defer c.Close()
	buf := make([]byte, 256<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// echoConn writes back what it reads until EOF, then closes. With ppv1 it
// first drops a PROXY v1 header line (and closes if there is none).
func echoConn(c *net.TCPConn, ppv1 bool) {
	defer c.Close()
	buf := make([]byte, 4096)
	have := 0
	if ppv1 {
		for {
			n, err := c.Read(buf[have:])
			have += n
			if i := bytes.Index(buf[:have], []byte("\r\n")); i >= 0 {
				if !bytes.HasPrefix(buf[:have], []byte("PROXY ")) {
					return
				}
				have = copy(buf, buf[i+2:have])
				break
			}
			if err != nil || have > 107 {
				return
			}
		}
		if have > 0 {
			if _, err := c.Write(buf[:have]); err != nil {
				return
			}
		}
	}
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func echoUDP(c *net.UDPConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		c.WriteToUDPAddrPort(buf[:n], from)
	}
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
	for _, a := range splitList(*tcp) {
		if err := waitTCP(a, *timeout); err != nil {
			return err
		}
	}
	for _, a := range splitList(*udp) {
		if err := waitUDP(a, *timeout); err != nil {
			return err
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range bytes.Split([]byte(s), []byte(",")) {
		if len(f) > 0 {
			out = append(out, string(f))
		}
	}
	return out
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
