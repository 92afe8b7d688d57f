//go:build linux

package unwrap

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/realip/realip/internal/netns"
)

// Addresses of the relay lab of the TCP and UDP tests (documentation
// prefixes only): an edge host and an origin host on one link.
var (
	labEdge4   = netip.MustParseAddr("192.0.2.1")
	labOrigin4 = netip.MustParseAddr("192.0.2.2")
	labEdge6   = netip.MustParseAddr("2001:db8:1::1")
	labOrigin6 = netip.MustParseAddr("2001:db8:1::2")
)

// relayLab is an edge namespace linked to an origin namespace whose
// loopback routes the replies of local servers to transparent sockets.
type relayLab struct {
	edge, origin *netns.Host
}

// newRelayLab builds the lab; edgeExtra are further addresses of the edge
// on the link.
func newRelayLab(t *testing.T, edgeExtra ...netip.Prefix) relayLab {
	t.Helper()
	lab := netns.NewLab(t)
	l := relayLab{edge: lab.Host("edge"), origin: lab.Host("origin")}
	edgeAddrs := append([]netip.Prefix{netip.PrefixFrom(labEdge4, 24)}, edgeExtra...)
	lab.Link(l.edge, l.origin,
		append(edgeAddrs, netip.PrefixFrom(labEdge6, 64)),
		[]netip.Prefix{netip.PrefixFrom(labOrigin4, 24), netip.PrefixFrom(labOrigin6, 64)})
	routeLocal(t, l.origin)
	return l
}

// routeLocal installs the policy routing transparent sockets need, by
// hand with ip(8) (the agent's internal/tproute is tested on its own):
// what h's loopback servers send to any address goes to a table that makes
// every address local, so their replies reach the transparent sockets
// bound to client addresses.
func routeLocal(t *testing.T, h *netns.Host) {
	t.Helper()
	for _, args := range [][]string{
		{"rule", "add", "from", "127.0.0.0/8", "iif", "lo", "lookup", "100"},
		{"route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"},
		{"-6", "rule", "add", "from", "::1/128", "iif", "lo", "lookup", "100"},
		{"-6", "route", "add", "local", "::/0", "dev", "lo", "table", "100"},
	} {
		out, err := h.Command(context.Background(), "ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: ip %s: %v\n%s", h.Name, strings.Join(args, " "), err, out)
		}
	}
}

// dialIn is the dialer of a relay under test whose goroutines run outside
// h: it makes the transparent sockets on network in h (a relay's
// goroutines are not in the namespace of the thread that started it).
func dialIn(h *netns.Host, network string, mark uint32) dialFunc {
	return func(ctx context.Context, client, server netip.AddrPort) (c net.Conn, err error) {
		err = h.Do(func() (err error) {
			c, err = dialTransparent(ctx, network, client, server, mark, DefaultDialTimeout)
			return err
		})
		return c, err
	}
}

// socketIn is the loops' socket opener of a relay under test whose
// goroutines run outside h: it opens the transparent sockets in h.
func socketIn(h *netns.Host) socketFunc {
	return func(family int) (fd int, err error) {
		err = h.Do(func() (err error) {
			fd, err = rawStreamSocket(family)
			return err
		})
		return fd, err
	}
}
