//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/realip/realip/bench/internal/loadkit"
	"github.com/realip/realip/wire"
)

// runCheck asks the origin's echo server, through the unwrapper at -addr,
// which peer it sees, and fails unless that is the client of the header
// (or, with -header none, this end of the connection). It retries until
// -timeout, so it also waits for the unwrapper and the server to start.
func runCheck(args []string) error {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	network := fs.String("net", "tcp", "tcp or udp")
	addr := fs.String("addr", "", "unwrapper (or, with -header none, server) address, required")
	hdrName := fs.String("header", "ppv2", "none, ppv2; udp also ppv2-first, spp")
	seq := fs.Uint64("seq", 0, "client identity of the first attempt (one more per retry)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	withPort := fs.Bool("port", true, "the server must see the client's port too (HAProxy's usesrc clientip keeps only the address)")
	fs.Parse(args)
	udp := *network == "udp"
	if !udp && *network != "tcp" {
		return fmt.Errorf("-net %q: want tcp or udp", *network)
	}
	h, err := parseHeader(*hdrName, udp)
	if err != nil {
		return err
	}
	raddr, err := netip.ParseAddrPort(*addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	tpl, err := newPPv2Template(udp)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(*timeout)
	for n := *seq; ; n++ {
		client := clientAt(n)
		var saw, want string
		if udp {
			saw, want, err = checkUDP(raddr, h, tpl, client)
		} else {
			saw, want, err = checkTCP(raddr, h, tpl, client)
		}
		if err == nil && !*withPort {
			saw, want = hostOf(saw), hostOf(want)
		}
		if err == nil && saw == want {
			fmt.Printf("check %s %s header %s: the server saw %s\n", *network, raddr, *hdrName, saw)
			return nil
		}
		if err == nil {
			err = fmt.Errorf("the server saw %q, not %s", saw, want)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s %s with header %s: %w", *network, raddr, *hdrName, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkTCP connects, sends the header and "WHO?", and returns what the
// server answered and what it should have.
func checkTCP(raddr netip.AddrPort, h header, tpl ppv2Template, client netip.AddrPort) (saw, want string, err error) {
	c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(raddr))
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	var req []byte
	want = c.LocalAddr().String()
	if h == hdrPPv2 {
		req, want = tpl.put(nil, client), client.String()
	}
	if _, err := c.Write(append(req, loadkit.WhoRequest...)); err != nil {
		return "", "", err
	}
	b, err := io.ReadAll(c)
	return string(b), want, err
}

// checkUDP is checkTCP over UDP, from a fresh socket (a new flow).
func checkUDP(raddr netip.AddrPort, h header, tpl ppv2Template, client netip.AddrPort) (saw, want string, err error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(raddr))
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	want = c.LocalAddr().String()
	if h != hdrNone {
		want = client.String()
	}
	if _, err := c.Write(append(datagramPrefix(h, tpl, client), loadkit.WhoRequest...)); err != nil {
		return "", "", err
	}
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return "", "", err
	}
	b := buf[:n]
	if h == hdrSPP {
		s, err := wire.ParseSPP(b)
		if err != nil {
			return "", "", fmt.Errorf("reply without SPP header: %w", err)
		}
		if s.Client != client {
			return "", "", errors.New("reply's SPP header names " + s.Client.String() + ", not " + client.String())
		}
		b = b[wire.SPPHeaderLen:]
	}
	return string(b), want, nil
}

// hostOf is the address of "address:port", or s when it is not that.
func hostOf(s string) string {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().String()
	}
	return s
}
