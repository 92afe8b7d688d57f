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
	"strings"
	"syscall"
)

// who starts a request the echo servers answer with the peer they see.
var who = []byte("WHO?")

// runOrigin serves the origin: TCP discard (throughput), TCP echo
// (connections per second) and UDP echo, each on a list of addresses (the
// loopback address the unwrappers connect to, and the origin's own address
// for the direct path). It runs until SIGTERM or SIGINT.
func runOrigin(args []string) error {
	fs := flag.NewFlagSet("origin", flag.ExitOnError)
	discard := fs.String("discard", "", "comma-separated TCP addresses that read and drop everything")
	echo := fs.String("echo", "", "comma-separated TCP addresses that echo everything")
	udp := fs.String("udp", "", "comma-separated UDP addresses that echo every datagram")
	readers := fs.Int("udp-readers", 2, "goroutines reading each UDP socket")
	fs.Parse(args)
	for _, a := range splitList(*discard) {
		if err := serveTCP(a, discardConn); err != nil {
			return err
		}
	}
	for _, a := range splitList(*echo) {
		if err := serveTCP(a, echoConn); err != nil {
			return err
		}
	}
	for _, a := range splitList(*udp) {
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			return fmt.Errorf("udp echo: %w", err)
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

func serveTCP(addr string, handle func(*net.TCPConn)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("tcp server: %w", err)
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

func discardConn(c *net.TCPConn) {
	defer c.Close()
	buf := make([]byte, 256<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			return
		}
	}
}

// echoConn writes back what it reads until EOF, then closes; a connection
// whose first bytes are "WHO?" gets the peer's address instead.
func echoConn(c *net.TCPConn) {
	defer c.Close()
	buf := make([]byte, 4096)
	first := true
	for {
		n, err := c.Read(buf)
		if first && n > 0 {
			first = false
			if bytes.HasPrefix(buf[:n], who) {
				c.Write([]byte(c.RemoteAddr().String()))
				return
			}
		}
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
		if bytes.HasPrefix(buf[:n], who) {
			c.WriteToUDPAddrPort([]byte(from.String()), from)
			continue
		}
		c.WriteToUDPAddrPort(buf[:n], from)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
