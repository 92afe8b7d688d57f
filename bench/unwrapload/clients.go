//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/realip/realip/wire"
)

// clientAddrs are the made-up client addresses: 192.0.2.1-254 and
// 203.0.113.1-254 (documentation prefixes).
var clientAddrs = func() []netip.Addr {
	var out []netip.Addr
	for _, p := range []string{"192.0.2.0", "203.0.113.0"} {
		base := netip.MustParseAddr(p).As4()
		for h := 1; h <= 254; h++ {
			base[3] = byte(h)
			out = append(out, netip.AddrFrom4(base))
		}
	}
	return out
}()

const (
	firstPort = 1024
	numPorts  = 65536 - firstPort
	// numClients is how many identities there are before clientAt repeats.
	numClients = 508 * numPorts
)

// vip is the address the made-up clients "connected to" on the edge: the
// destination of every header.
var vip = netip.MustParseAddrPort("198.51.100.250:443")

// clientAt is client identity n: consecutive identities differ in the
// address, and the sequence repeats only after numClients identities.
func clientAt(n uint64) netip.AddrPort {
	n %= numClients
	a := clientAddrs[n%uint64(len(clientAddrs))]
	return netip.AddrPortFrom(a, uint16(firstPort+n/uint64(len(clientAddrs))))
}

// header is what the load writes in front of its payload.
type header int

const (
	hdrNone      header = iota // the direct path: no unwrapper
	hdrPPv2                    // PROXY v2 on the connection, or on every datagram
	hdrPPv2First               // UDP: PROXY v2 on the first datagram of a flow
	hdrSPP                     // UDP: SPP on every datagram and every reply
)

var headerNames = map[string]header{"none": hdrNone, "ppv2": hdrPPv2, "ppv2-first": hdrPPv2First, "spp": hdrSPP}

func parseHeader(s string, udp bool) (header, error) {
	h, ok := headerNames[s]
	if !ok || (!udp && h != hdrNone && h != hdrPPv2) {
		want := "none, ppv2"
		if udp {
			want += ", ppv2-first, spp"
		}
		return 0, fmt.Errorf("-header %q: want %s", s, want)
	}
	return h, nil
}

// ppv2Template is the PROXY v2 header of an IPv4 client to vip, with the
// client's address and port patched in by put: building the header costs
// the load generator nothing per connection.
type ppv2Template []byte

// Offsets in a PROXY v2 header with IPv4 addresses: 16-byte fixed part,
// then source address, destination address, source port, destination port.
const (
	v2SrcAddr = 16
	v2SrcPort = 24
	v2Len4    = 28
)

func newPPv2Template(datagram bool) (ppv2Template, error) {
	h := wire.ProxyHeader{Version: 2, Datagram: datagram, Source: clientAt(0), Destination: vip}
	b, err := wire.AppendProxyHeader(nil, &h, wire.MarshalOptions{})
	if err != nil {
		return nil, fmt.Errorf("PROXY v2 template: %w", err)
	}
	if len(b) != v2Len4 {
		return nil, fmt.Errorf("PROXY v2 template: %d bytes, want %d", len(b), v2Len4)
	}
	return b, nil
}

// put appends the header of client (an IPv4 address) to dst.
func (t ppv2Template) put(dst []byte, client netip.AddrPort) []byte {
	n := len(dst)
	dst = append(dst, t...)
	a := client.Addr().As4()
	copy(dst[n+v2SrcAddr:], a[:])
	binary.BigEndian.PutUint16(dst[n+v2SrcPort:], client.Port())
	return dst
}

// datagramPrefix is the header a flow of client puts in front of its
// datagrams (the first one only for hdrPPv2First; nil for hdrNone).
func datagramPrefix(h header, t ppv2Template, client netip.AddrPort) []byte {
	switch h {
	case hdrPPv2, hdrPPv2First:
		return t.put(nil, client)
	case hdrSPP:
		return wire.AppendSPP(nil, wire.SPPHeader{Client: client, Proxy: vip})
	}
	return nil
}
