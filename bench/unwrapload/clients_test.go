//go:build linux

package main

import (
	"bufio"
	"bytes"
	"net/netip"
	"testing"

	"github.com/realip/realip/wire"
)

func TestClientAt(t *testing.T) {
	seen := map[netip.AddrPort]uint64{}
	for _, start := range []uint64{0, numClients - 1000, 5 * numClients} {
		for n := start; n < start+3000; n++ {
			c := clientAt(n)
			in := netip.MustParsePrefix("192.0.2.0/24").Contains(c.Addr()) || netip.MustParsePrefix("203.0.113.0/24").Contains(c.Addr())
			if !in || c.Port() < firstPort || c.Addr().As4()[3] == 0 || c.Addr().As4()[3] == 255 {
				t.Fatalf("clientAt(%d) = %v: outside the documentation prefixes' hosts or below port %d", n, c, firstPort)
			}
			if m, dup := seen[c]; dup && m%numClients != n%numClients {
				t.Fatalf("clientAt(%d) = clientAt(%d) = %v", n, m, c)
			}
			seen[c] = n
		}
	}
	if clientAt(0) == clientAt(1) || clientAt(0).Addr() == clientAt(1).Addr() {
		t.Errorf("consecutive identities share an address: %v %v", clientAt(0), clientAt(1))
	}
}

func TestPPv2Template(t *testing.T) {
	for _, tc := range []struct {
		name     string
		datagram bool
		client   netip.AddrPort
	}{
		{"stream", false, netip.MustParseAddrPort("192.0.2.7:40001")},
		{"datagram", true, netip.MustParseAddrPort("203.0.113.254:65535")},
		{"low port", false, netip.MustParseAddrPort("192.0.2.1:1024")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tpl, err := newPPv2Template(tc.datagram)
			if err != nil {
				t.Fatal(err)
			}
			b := tpl.put([]byte("x"), tc.client)
			var h *wire.ProxyHeader
			if tc.datagram {
				var payload []byte
				h, payload, err = wire.ParseProxyDatagram(append(b[1:], "data"...))
				if err == nil && string(payload) != "data" {
					t.Errorf("payload %q", payload)
				}
			} else {
				h, err = wire.ReadProxyHeader(bufio.NewReaderSize(bytes.NewReader(b[1:]), 8192))
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Source != tc.client || h.Destination != vip || h.Datagram != tc.datagram || h.Local {
				t.Errorf("parsed %+v, want source %v destination %v datagram %v", h, tc.client, vip, tc.datagram)
			}
		})
	}
}

func TestDatagramPrefix(t *testing.T) {
	tpl, err := newPPv2Template(true)
	if err != nil {
		t.Fatal(err)
	}
	c := netip.MustParseAddrPort("192.0.2.9:5000")
	for _, tc := range []struct {
		h    header
		want int
	}{{hdrNone, 0}, {hdrPPv2, v2Len4}, {hdrPPv2First, v2Len4}, {hdrSPP, wire.SPPHeaderLen}} {
		p := datagramPrefix(tc.h, tpl, c)
		if len(p) != tc.want {
			t.Errorf("header %d: %d bytes, want %d", tc.h, len(p), tc.want)
		}
		if tc.h == hdrSPP {
			s, err := wire.ParseSPP(p)
			if err != nil || s.Client != c || s.Proxy != vip {
				t.Errorf("SPP prefix parses to %+v, %v", s, err)
			}
		}
	}
}

func TestParseHeader(t *testing.T) {
	for _, tc := range []struct {
		s   string
		udp bool
		ok  bool
	}{{"none", false, true}, {"ppv2", false, true}, {"spp", false, false}, {"ppv2-first", false, false},
		{"spp", true, true}, {"ppv2-first", true, true}, {"ppv1", true, false}, {"", false, false}} {
		if _, err := parseHeader(tc.s, tc.udp); (err == nil) != tc.ok {
			t.Errorf("parseHeader(%q, udp=%v): %v, want ok=%v", tc.s, tc.udp, err, tc.ok)
		}
	}
}
