//go:build linux

package vmnet

import (
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/realip/realip/internal/testenv"
)

// TestVethAcrossNamespaces builds two fresh namespaces joined by a veth pair
// (nothing touches the machine's own namespace) and talks TCP over IPv4 and
// IPv6 between them, checking the server sees the client's address.
func TestVethAcrossNamespaces(t *testing.T) {
	testenv.RequireRoot(t)
	a, err := NewNS()
	if err != nil {
		testenv.SkipOrFail(t, "cannot create a network namespace: %v", err)
	}
	defer a.Close()
	b, err := NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	if err := a.Do(func() error { return AddVeth("vmnet-a", "vmnet-b", b) }); err != nil {
		t.Fatal(err)
	}
	setup := func(ns *NS, dev string, addrs ...string) {
		t.Helper()
		err := ns.Do(func() error {
			for _, s := range addrs {
				if err := AddAddr(dev, netip.MustParsePrefix(s)); err != nil {
					return err
				}
			}
			if err := LinkUp("lo"); err != nil {
				return err
			}
			return LinkUp(dev)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	setup(a, "vmnet-a", "192.0.2.1/24", "2001:db8::1/64")
	setup(b, "vmnet-b", "192.0.2.2/24", "2001:db8::2/64")

	for _, tc := range []struct{ server, client string }{
		{"192.0.2.2:7000", "192.0.2.1"},
		{"[2001:db8::2]:7000", "2001:db8::1"},
	} {
		var ln net.Listener
		if err := b.Do(func() (err error) { ln, err = net.Listen("tcp", tc.server); return err }); err != nil {
			t.Fatal(err)
		}
		seen := make(chan string, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				seen <- err.Error()
				return
			}
			defer c.Close()
			seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			io.Copy(c, c)
		}()
		var c net.Conn
		if err := a.Do(func() (err error) { c, err = net.Dial("tcp", tc.server); return err }); err != nil {
			t.Fatalf("dial %s: %v", tc.server, err)
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo from %s: %q, %v", tc.server, buf, err)
		}
		if got := <-seen; got != tc.client {
			t.Errorf("server %s saw client %s, want %s", tc.server, got, tc.client)
		}
		c.Close()
		ln.Close()
	}

	// the machine's own namespace must not have the pair
	if _, err := net.InterfaceByName("vmnet-a"); err == nil {
		t.Error("vmnet-a appeared in the test's own namespace")
	}
	if err := a.Do(func() error { return DelLink("vmnet-a") }); err != nil {
		t.Error(err)
	}
}
