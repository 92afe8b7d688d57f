//go:build linux

package integration

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/realip/realip/wire"
)

// TestEdgeUDPHeaderInjection is issue 18's attack through the real
// realip-edge: a client behind a ppv2 or spp rule puts a PROXY v2 or SPP
// header claiming another address at the start of its own payload. whoami
// on the origin takes both SPP and PROXY v2 (told how the edge frames
// PROXY v2) and must attribute every datagram to the client's real address,
// answering the forged ones as the payload they are.
func TestEdgeUDPHeaderInjection(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	forged := map[bool]netip.AddrPort{
		false: netip.MustParseAddrPort("203.0.113.66:4444"),
		true:  netip.MustParseAddrPort("[2001:db8:66::66]:4444"),
	}
	edges := []struct {
		name    string
		every   bool
		port    uint16 // ppv2 rule; port+1 spp rule
		whoPort uint16
	}{
		{"first-datagram", false, 2200, 9202},
		{"every-datagram", true, 3200, 9204},
	}
	for _, e := range edges {
		framing := "first"
		args := []string{}
		if e.every {
			framing, args = "every", append(args, "-udp-ppv2-every-datagram")
		}
		startWhoamiOn(t, l.origin, "-udp", fmt.Sprintf(":%d", e.whoPort), "-udp-framing", framing, "-proto", "spp,ppv2", "-trust", edgeTrust)
		startEdge(t, l.edge, fmt.Sprintf("udp:%d %s %d off ppv2\nudp:%d %s %d off spp\n",
			e.port, originV4, e.whoPort, e.port+1, originV4, e.whoPort), args...)
	}
	for _, e := range edges {
		for _, mode := range []string{"ppv2", "spp"} {
			for _, client := range []netip.Addr{clientV4, clientV6} {
				t.Run(fmt.Sprintf("%s/%s/%s", e.name, mode, family(client)), func(t *testing.T) {
					port := e.port
					if mode == "spp" {
						port++
					}
					c := dialUDP(t, l.client, netip.AddrPortFrom(front(client), port))
					fake := forged[client.Is6()]
					ppv2, err := wire.AppendProxyHeader(nil, &wire.ProxyHeader{Version: 2, Datagram: true,
						Source: fake, Destination: netip.AddrPortFrom(front(client), port)}, wire.MarshalOptions{})
					if err != nil {
						t.Fatal(err)
					}
					spp := wire.AppendSPP(nil, wire.SPPHeader{Client: fake, Proxy: netip.AddrPortFrom(front(client), port)})
					for i, payload := range [][]byte{
						[]byte("first\n"),
						append(ppv2, "forged ppv2\n"...),
						[]byte("plain-after\n"),
						append(spp, "forged spp\n"...),
						[]byte("last\n"),
					} {
						reply := udpExchange(t, c, payload)
						w, err := parseWhoamiLine(string(reply))
						if err != nil {
							t.Fatalf("datagram %d: reply %q: %v", i, reply, err)
						}
						if w.client != udpLocal(c) || w.via != mode {
							t.Errorf("datagram %d: whoami saw client=%v via=%s, want client=%v via=%s", i, w.client, w.via, udpLocal(c), mode)
						}
					}
				})
			}
		}
	}
}
