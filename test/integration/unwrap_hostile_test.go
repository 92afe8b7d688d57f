//go:build linux

package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/realip/realip/internal/netns"
	"github.com/realip/realip/wire"
)

// Hostile input against `realip-agent unwrap` (issue 14): senders outside
// the trusted edges, malformed headers, a flood of UDP clients, a server
// that never answers, bad and good reloads, SIGKILL and SIGTERM. Nothing
// may be honoured that should not be, everything is counted, and the
// relays go on serving.

// The rogue host: a second network towards the origin, outside every
// trusted prefix, from which a sender reaches the agent directly.
var (
	rogueV4       = netip.MustParseAddr("203.0.113.50")
	rogueV6       = netip.MustParseAddr("2001:db8:3::50")
	rogueOriginV4 = netip.MustParseAddr("203.0.113.10")
	rogueOriginV6 = netip.MustParseAddr("2001:db8:3::10")
	// forgedClient is the address every forged header names.
	forgedClient = netip.MustParseAddrPort("203.0.113.99:4444")
)

// addRogue links a host "rogue" to l's origin, with routes to the origin's
// addresses on the edge link.
func addRogue(t *testing.T, l *lab) *netns.Host {
	t.Helper()
	r := l.Host("rogue")
	l.Link(r, l.origin, prefixes(rogueV4, 24, rogueV6, 64), prefixes(rogueOriginV4, 24, rogueOriginV6, 64))
	r.Route(netip.PrefixFrom(originV4, 24), rogueOriginV4)
	r.Route(netip.PrefixFrom(originV6, 64), rogueOriginV6)
	return r
}

// forgedPPv1 and forgedPPv2 are PROXY headers naming forgedClient as
// the client of a connection (or datagram) to dst.
func forgedPPv1(_ *testing.T, dst netip.AddrPort) []byte {
	return fmt.Appendf(nil, "PROXY TCP4 %s %s %d %d\r\n", forgedClient.Addr(), originV4, forgedClient.Port(), dst.Port())
}

func forgedPPv2(t *testing.T, dst netip.AddrPort, datagram bool) []byte {
	t.Helper()
	b, err := wire.AppendProxyHeader(nil, &wire.ProxyHeader{Version: 2, Datagram: datagram,
		Source: forgedClient, Destination: netip.AddrPortFrom(originV4, dst.Port())}, wire.MarshalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func forgedStreamPPv2(t *testing.T, dst netip.AddrPort) []byte { return forgedPPv2(t, dst, false) }

func forgedDatagramPPv2(t *testing.T, dst netip.AddrPort) []byte { return forgedPPv2(t, dst, true) }

func forgedSPP(_ *testing.T, dst netip.AddrPort) []byte {
	return wire.AppendSPP(nil, wire.SPPHeader{Client: forgedClient, Proxy: dst})
}

// forgery is one forged header the rogue sends to an entry.
type forgery struct {
	name   string
	entry  string // without the family
	port   uint16
	header func(t *testing.T, dst netip.AddrPort) []byte
	served bool // the sender is served as itself (its payload reaches the server)
}

var forgeries = []forgery{
	{"tcp-ppv1-drop", "drop", 80, forgedPPv1, false},
	{"tcp-ppv2-drop", "drop", 80, forgedStreamPPv2, false},
	{"tcp-ppv1-ignore", "ignore", 81, forgedPPv1, true},
	{"tcp-ppv2-ignore", "ignore", 81, forgedStreamPPv2, true},
	{"tcp-no-header", "drop", 80, func(*testing.T, netip.AddrPort) []byte { return nil }, true},
	{"udp-spp", "spp", 5003, forgedSPP, false},
	{"udp-ppv2", "ppv2", 5002, forgedDatagramPPv2, false},
}

// untrustedEntries are the entries of TestUnwrapUntrusted on each origin
// address: drop-, ignore-, spp- and ppv2-FAMILY.
func untrustedEntries() []unwrapEntry {
	var entries []unwrapEntry
	for _, o := range []netip.Addr{originV4, originV6} {
		f := family(o)
		entries = append(entries,
			unwrapEntry{name: "drop-" + f, network: "tcp", listen: netip.AddrPortFrom(o, 80), accept: []string{"ppv1", "ppv2"}, port: 9000},
			unwrapEntry{name: "ignore-" + f, network: "tcp", listen: netip.AddrPortFrom(o, 81), accept: []string{"ppv1", "ppv2"}, untrusted: "ignore", port: 9000},
			unwrapEntry{name: "spp-" + f, network: "udp", listen: netip.AddrPortFrom(o, 5003), accept: []string{"spp"}, port: 9000},
			unwrapEntry{name: "ppv2-" + f, network: "udp", listen: netip.AddrPortFrom(o, 5002), accept: []string{"ppv2"}, framing: "every-datagram", port: 9000})
	}
	return entries
}

// TestUnwrapUntrusted has a host outside the trusted edges send the agent
// PROXY v1, PROXY v2 and SPP headers naming 203.0.113.99, over IPv4 and
// IPv6, straight to the entries' listening addresses. With untrusted:
// drop (the default) the connection is closed and the datagram dropped;
// with untrusted: ignore the header is stripped and the sender served as
// itself; a sender without a header is served as itself. The server never
// sees 203.0.113.99, the untrusted and rejected counters move, and the
// edge's clients are served as before.
func TestUnwrapUntrusted(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	rogue := addRogue(t, l)
	srv := startPeerServer(t, l.origin, "tcp+udp", 9000, false)
	a := startAgent(t, l.origin, unwrapYAML(untrustedEntries()...))
	startEdge(t, l.edge, fmt.Sprintf("tcp:1001 %s 80 off ppv1\nudp:2003 %s 5003 off spp\n", originV4, originV6))

	t.Run("forgeries", func(t *testing.T) {
		for _, fg := range forgeries {
			for _, o := range []netip.Addr{originV4, originV6} {
				t.Run(fg.name+"-"+family(o), func(t *testing.T) {
					sendForgery(t, a, rogue, fg, netip.AddrPortFrom(o, fg.port), entryLabel(fg.entry+"-"+family(o)))
				})
			}
		}
	})
	if srv.sawAddr(forgedClient.Addr()) {
		t.Errorf("the server saw the forged client %v: %v", forgedClient.Addr(), srv.seen())
	}
	for _, o := range []netip.Addr{originV4, originV6} {
		if v := a.metric(t, "realip_unwrap_rejected_total", entryLabel("ignore-"+family(o)), `reason="untrusted_header"`); v != 0 {
			t.Errorf("ignore-%s: %v rejected as untrusted, want 0 (untrusted: ignore strips the header)", family(o), v)
		}
	}
	// The edge's clients are still served, as themselves.
	openPeerSession(t, l.client, netip.AddrPortFrom(edgeFrontV4, 1001))
	udpPeerExchange(t, dialUDP(t, l.client, netip.AddrPortFrom(edgeFrontV6, 2003)), []byte("after the rogue"))
	promtoolCheck(t, a.metrics(t))
}

// sendForgery sends fg from rogue to dst, an address of the entry whose
// label is entry, and checks what became of it.
func sendForgery(t *testing.T, a *agentProc, rogue *netns.Host, fg forgery, dst netip.AddrPort, entry string) {
	t.Helper()
	const text = "from the rogue\n"
	untrusted := a.metric(t, "realip_unwrap_untrusted_total", entry)
	payload := append(fg.header(t, dst), text...)
	if strings.HasPrefix(fg.name, "udp") {
		c := dialUDP(t, rogue, dst)
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		a.waitAtLeast(t, untrusted+1, "realip_unwrap_untrusted_total", entry)
		a.waitAtLeast(t, 1, "realip_unwrap_rejected_total", entry, `reason="untrusted_header"`)
		return
	}
	c := mustDial(t, rogue, dst)
	local := addrPort(c.LocalAddr())
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	if fg.served {
		if got := peerLine(t, c); got != local {
			t.Errorf("the server saw %v, want the rogue as itself, %v", got, local)
		}
		got := make([]byte, len(text))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != text {
			t.Errorf("echo %q, %v; want the payload without the header", got, err)
		}
	} else {
		readClosed(t, c)
		a.waitAtLeast(t, 1, "realip_unwrap_rejected_total", entry, `reason="untrusted_header"`)
	}
	a.waitAtLeast(t, untrusted+1, "realip_unwrap_untrusted_total", entry)
}

// rejectedSum sums realip_unwrap_rejected_total of entry over every reason.
func rejectedSum(text, entry string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "realip_unwrap_rejected_total{") || !strings.Contains(line, entryLabel(entry)) {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			sum += v
		}
	}
	return sum
}

// ppv2Fixed returns a PROXY v2 fixed header: signature, version and
// command byte vc, family byte fam, and a length of n.
func ppv2Fixed(vc, fam byte, n uint16) []byte {
	b := append([]byte("\r\n\r\n\x00\r\nQUIT\n"), vc, fam, 0, 0)
	binary.BigEndian.PutUint16(b[14:], n)
	return b
}

// malformed is one broken header sent from the edge to an entry, and the
// reason it must be rejected for.
type malformed struct {
	name, entry string
	port        uint16
	data        []byte
	closeWrite  bool // tcp: end the connection after data
	reason      string
}

func malformedCases() []malformed {
	zeroClient := wire.AppendSPP(nil, wire.SPPHeader{Client: netip.AddrPortFrom(netip.IPv4Unspecified(), 0), Proxy: netip.AddrPortFrom(originV4, 5003)})
	return []malformed{
		{"ppv1-bad-address", "tcp", 80, []byte("PROXY TCP4 203.0.113.99 not-an-address 4444 80\r\nGET / HTTP/1.0\r\n\r\n"), false, "malformed"},
		{"ppv1-truncated", "tcp", 80, []byte("PROXY TCP4 203.0.113.99"), true, "truncated"},
		{"ppv2-version-3", "tcp", 80, append(ppv2Fixed(0x31, 0x11, 12), make([]byte, 12)...), false, "malformed"},
		{"no-header", "tcp", 80, []byte("GET / HTTP/1.0\r\n\r\n"), false, "missing_header"},
		{"spp-truncated", "spp", 5003, zeroClient[:20], false, "truncated"},
		{"spp-zero-client", "spp", 5003, append(zeroClient, "payload"...), false, "malformed"},
		{"spp-no-header", "spp", 5003, []byte("payload"), false, "missing_header"},
		{"ppv2-claims-more", "ppv2", 5002, append(ppv2Fixed(0x21, 0x12, 0xffff), make([]byte, 12)...), false, "truncated"},
		{"ppv2-no-flow", "ppv2", 5002, []byte("payload"), false, "no_flow"},
	}
}

// TestUnwrapMalformedHeaders sends broken headers to the agent's entries
// from the edge itself (a trusted address): each connection is closed
// without reaching the server and each datagram dropped, counted under
// its reason, and the relays go on serving the edge's clients.
func TestUnwrapMalformedHeaders(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	srv := startPeerServer(t, l.origin, "tcp+udp", 9000, false)
	a := startAgent(t, l.origin, unwrapYAML(
		unwrapEntry{name: "tcp", network: "tcp", listen: netip.AddrPortFrom(originV4, 80), accept: []string{"ppv1", "ppv2"}, port: 9000},
		unwrapEntry{name: "spp", network: "udp", listen: netip.AddrPortFrom(originV4, 5003), accept: []string{"spp"}, port: 9000},
		unwrapEntry{name: "ppv2", network: "udp", listen: netip.AddrPortFrom(originV4, 5002), accept: []string{"ppv2"}, framing: "first-datagram", port: 9000},
	))
	startEdge(t, l.edge, fmt.Sprintf("tcp:1001 %s 80 off ppv1\nudp:2003 %s 5003 off spp\nudp:2002 %s 5002 off ppv2\n", originV4, originV4, originV4))

	var senders []netip.AddrPort // the malformed headers' own sockets
	for _, tc := range malformedCases() {
		t.Run(tc.name, func(t *testing.T) {
			before := a.metrics(t)
			reasonBefore, _ := metricValue(before, "realip_unwrap_rejected_total", entryLabel(tc.entry), `reason="`+tc.reason+`"`)
			senders = append(senders, sendMalformed(t, l.edge, tc))
			var after string
			waitFor(t, ioTimeout, func() bool {
				after = a.metrics(t)
				return rejectedSum(after, tc.entry) > rejectedSum(before, tc.entry)
			}, func() string { return fmt.Sprintf("%s: nothing rejected:\n%s", tc.entry, after) })
			if got, _ := metricValue(after, "realip_unwrap_rejected_total", entryLabel(tc.entry), `reason="`+tc.reason+`"`); got != reasonBefore+1 {
				t.Errorf("rejected_total{reason=%q} went %v -> %v, want one more; all rejections after:\n%s", tc.reason, reasonBefore, got, grepLines(after, "realip_unwrap_rejected_total{"+entryLabel(tc.entry)))
			}
		})
	}
	// Neither a client a header named nor the sender itself reached the
	// server (the edge's own health checks may, as themselves).
	for _, p := range srv.seen() {
		if p.Addr() == forgedClient.Addr() || p.Addr().IsUnspecified() || slices.Contains(senders, p) {
			t.Errorf("a malformed header reached the server: it saw %v", p)
		}
	}
	// The relays still serve the edge's clients.
	openPeerSession(t, l.client, netip.AddrPortFrom(edgeFrontV4, 1001))
	for _, port := range []uint16{2003, 2002} {
		c := dialUDP(t, l.client, netip.AddrPortFrom(edgeFrontV6, port))
		udpPeerExchange(t, c, []byte("after the broken headers"))
		udpPeerExchange(t, c, []byte("and again"))
	}
	promtoolCheck(t, a.metrics(t))
}

// sendMalformed sends tc from h to the origin's IPv4 address and returns
// the sending socket's address; a TCP connection must be closed on it
// without a byte.
func sendMalformed(t *testing.T, h *netns.Host, tc malformed) netip.AddrPort {
	t.Helper()
	dst := netip.AddrPortFrom(originV4, tc.port)
	if tc.entry != "tcp" {
		c := dialUDP(t, h, dst)
		if _, err := c.Write(tc.data); err != nil {
			t.Fatal(err)
		}
		return udpLocal(c)
	}
	c := mustDial(t, h, dst)
	if _, err := c.Write(tc.data); err != nil {
		t.Fatal(err)
	}
	if tc.closeWrite {
		c.(*net.TCPConn).CloseWrite()
	}
	readClosed(t, c)
	return addrPort(c.LocalAddr())
}

// grepLines returns the lines of text that start with prefix.
func grepLines(text, prefix string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestUnwrapUDPLimits floods an entry of max_flows 4 with twelve UDP
// clients through realip-edge: each new client is served, live flows
// never exceed the limit and the flows pushed out are counted. Clients of
// an entry whose server never answers have their flows expire after the
// idle timeout, counted, leaving none live. No flow pushed out or expired
// keeps its socket, and when a reload restarts both relays the agent is
// back to the goroutines it ran at start.
func TestUnwrapUDPLimits(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	startPeerServer(t, l.origin, "udp", 9003, false)
	silent := startPeerServer(t, l.origin, "udp", 9005, true)
	const maxFlows = 4
	a := startAgent(t, l.origin, limitsConfig(maxFlows, "1s"))
	startEdge(t, l.edge, fmt.Sprintf("udp:2003 %s 5003 off spp\nudp:2005 %s 5005 off spp\n", originV4, originV4))
	goroutines := a.goroutines(t)
	listens := []string{"198.51.100.10:5003", "198.51.100.10:5005"}

	floodFlows(t, l, a, maxFlows, 12)
	silentFlows(t, l, a, silent, 3)
	// The flows evicted or expired left no socket: the agent holds its two
	// listening sockets and one per live flow.
	if got := a.sockets(t, "udp", listens...); len(got) != maxFlows {
		t.Errorf("the agent holds %d flow sockets, want the %d live flows':\n%s", len(got), maxFlows, strings.Join(got, "\n"))
	}
	promtoolCheck(t, a.metrics(t))

	// Restarted by a reload, both relays start afresh: their flows' sockets
	// and goroutines are gone and the agent is back to its count at start.
	out := a.reload(t, limitsConfig(maxFlows+1, "2s"), true)
	for _, name := range []string{"flood", "silent"} {
		if !strings.Contains(out, "name="+name+` why="its settings changed"`) {
			t.Errorf("%s was not restarted:\n%s", name, out)
		}
	}
	if got := a.sockets(t, "udp", listens...); len(got) != 0 {
		t.Errorf("flow sockets left after the relays restarted:\n%s", strings.Join(got, "\n"))
	}
	var now float64
	waitFor(t, ioTimeout, func() bool {
		now = a.goroutines(t)
		return now <= goroutines
	}, func() string {
		return fmt.Sprintf("go_goroutines %v, %v at start with the same relays and no flow", now, goroutines)
	})
}

// limitsConfig is the configuration of TestUnwrapUDPLimits: the entry
// "flood" with maxFlows, and "silent", whose server never answers, with
// the idle timeout idle.
func limitsConfig(maxFlows int, idle string) string {
	return unwrapYAML(
		unwrapEntry{name: "flood", network: "udp", listen: netip.AddrPortFrom(originV4, 5003), accept: []string{"spp"}, maxFlows: maxFlows, port: 9003},
		unwrapEntry{name: "silent", network: "udp", listen: netip.AddrPortFrom(originV4, 5005), accept: []string{"spp"}, idle: idle, port: 9005})
}

// floodFlows sends one datagram from each of clients UDP clients through
// the edge to the entry "flood" (max_flows maxFlows): each is answered,
// live flows stay within the limit, the others are counted as evicted;
// a live flow is kept and an evicted one opened again.
func floodFlows(t *testing.T, l *lab, a *agentProc, maxFlows, clients int) {
	t.Helper()
	flood := entryLabel("flood")
	var conns []*net.UDPConn
	for i := range clients {
		client := []netip.Addr{clientV4, clientV6}[i%2]
		c := dialUDP(t, l.client, netip.AddrPortFrom(front(client), 2003))
		udpPeerExchange(t, c, fmt.Appendf(nil, "client %d", i))
		conns = append(conns, c)
		if live := a.metric(t, "realip_unwrap_live", flood); live > float64(maxFlows) {
			t.Fatalf("after %d clients: %v live flows, max_flows is %d", i+1, live, maxFlows)
		}
	}
	a.waitEqual(t, float64(clients), "realip_unwrap_relayed_total", flood)
	a.waitEqual(t, float64(clients-maxFlows), "realip_unwrap_flows_closed_total", flood, `cause="evicted"`)
	if live := a.metric(t, "realip_unwrap_live", flood); live != float64(maxFlows) {
		t.Errorf("%v live flows after the flood, want max_flows %d", live, maxFlows)
	}
	// The newest client keeps its flow; the first, pushed out, gets a new one.
	udpPeerExchange(t, conns[clients-1], []byte("newest again"))
	a.waitEqual(t, float64(clients), "realip_unwrap_relayed_total", flood)
	udpPeerExchange(t, conns[0], []byte("first again"))
	a.waitEqual(t, float64(clients+1), "realip_unwrap_relayed_total", flood)
}

// silentFlows sends one datagram from each of n clients through the edge
// to the entry "silent", whose server never answers: the server sees each
// client, and every flow expires, counted, with none left live.
func silentFlows(t *testing.T, l *lab, a *agentProc, srv *peerServer, n int) {
	t.Helper()
	quiet := entryLabel("silent")
	var clients []netip.AddrPort
	for i := range n {
		client := []netip.Addr{clientV4, clientV6}[i%2]
		c := dialUDP(t, l.client, netip.AddrPortFrom(front(client), 2005))
		if _, err := c.Write([]byte("anyone?")); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, udpLocal(c))
	}
	waitFor(t, ioTimeout, func() bool {
		seen := srv.seen()
		for _, c := range clients {
			if !slices.Contains(seen, c) {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("the silent server saw %v, want %v", srv.seen(), clients) })
	a.waitEqual(t, float64(n), "realip_unwrap_relayed_total", quiet)
	a.waitEqual(t, float64(n), "realip_unwrap_flows_closed_total", quiet, `cause="expired"`)
	a.waitEqual(t, 0, "realip_unwrap_live", quiet)
	if v := a.metric(t, "realip_unwrap_datagrams_total", quiet, `direction="to_client"`); v != 0 {
		t.Errorf("%v replies from a server that never answers", v)
	}
}

// reloadEntries is the configuration of TestUnwrapReload: a TCP entry
// "echo" on the origin's IPv4 address, a UDP entry "udp" whose max_flows
// varies, and, when withV6, a TCP entry "echo-v6" on the IPv6 address.
func reloadEntries(maxFlows int, withV6 bool) string {
	entries := []unwrapEntry{
		{name: "echo", network: "tcp", listen: netip.AddrPortFrom(originV4, 90), accept: []string{"ppv1"}, port: 9000},
		{name: "udp", network: "udp", listen: netip.AddrPortFrom(originV4, 5003), accept: []string{"spp"}, maxFlows: maxFlows, port: 9000},
	}
	if withV6 {
		entries = append(entries, unwrapEntry{name: "echo-v6", network: "tcp", listen: netip.AddrPortFrom(originV6, 90), accept: []string{"ppv1"}, port: 9000})
	}
	return unwrapYAML(entries...)
}

// TestUnwrapReload holds a TCP connection open through the relay while
// the agent gets SIGHUP with a bad file (refused, logged, the reload
// metric at 0, every relay serving as before) and then with a good file
// that changes another entry and adds one (applied, the metric back at 1):
// the connection survives both, and the new entry serves.
func TestUnwrapReload(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	startPeerServer(t, l.origin, "tcp+udp", 9000, false)
	a := startAgent(t, l.origin, reloadEntries(8, false))
	startEdge(t, l.edge, fmt.Sprintf("tcp:1001 %s 90 off ppv1\ntcp:1011 %s 90 off ppv1\nudp:2003 %s 5003 off spp\n", originV4, originV6, originV4))
	const reloadOK = "realip_agent_config_last_reload_successful"
	if v := a.metric(t, reloadOK); v != 1 {
		t.Fatalf("%s = %v at start, want 1", reloadOK, v)
	}
	held := openPeerSession(t, l.client, netip.AddrPortFrom(edgeFrontV6, 1001))
	a.waitEqual(t, 1, "realip_unwrap_live", entryLabel("echo"))

	bad := []struct{ name, text string }{
		{"not-yaml", "unwrap: [\n"},
		{"entry-without-to", strings.Replace(reloadEntries(8, true), "    to: [\"127.0.0.1:9000\", \"[::1]:9000\"]\n", "", 1)},
		{"non-loopback-to", strings.Replace(reloadEntries(8, true), "127.0.0.1:9000", "198.51.100.10:9000", 1)},
		{"no-entries", "metrics_listen: \"" + unwrapMetricsAddr + "\"\n"},
	}
	for _, b := range bad {
		t.Run("bad/"+b.name, func(t *testing.T) {
			out := a.reload(t, b.text, false)
			if !strings.Contains(out, "level=ERROR") {
				t.Errorf("the refusal is not logged as an error:\n%s", out)
			}
			a.waitEqual(t, 0, reloadOK)
			held.echo(t, "after a bad reload ("+b.name+")\n")
			openPeerSession(t, l.client, netip.AddrPortFrom(edgeFrontV4, 1001))
			udpPeerExchange(t, dialUDP(t, l.client, netip.AddrPortFrom(edgeFrontV4, 2003)), []byte("after "+b.name))
			if a.metric(t, "realip_unwrap_live", entryLabel("echo-v6")) != 0 || strings.Contains(a.metrics(t), entryLabel("echo-v6")) {
				t.Errorf("the refused file's new entry echo-v6 is running")
			}
		})
	}

	out := a.reload(t, reloadEntries(16, true), true)
	a.waitEqual(t, 1, reloadOK)
	if !strings.Contains(out, `name=udp why="its settings changed"`) {
		t.Errorf("the changed entry udp was not restarted:\n%s", out)
	}
	if strings.Contains(out, "name=echo ") {
		t.Errorf("the unchanged entry echo was touched:\n%s", out)
	}
	held.echo(t, "after a good reload\n")
	s := openPeerSession(t, l.client, netip.AddrPortFrom(edgeFrontV4, 1011))
	s.echo(t, "through the new entry\n")
	a.waitAtLeast(t, 1, "realip_unwrap_relayed_total", entryLabel("echo-v6"))
	udpPeerExchange(t, dialUDP(t, l.client, netip.AddrPortFrom(edgeFrontV6, 2003)), []byte("after the good reload"))
	promtoolCheck(t, a.metrics(t))
}

// TestUnwrapCrashAndCleanStop kills the agent with SIGKILL while it
// relays, starts it again on the same file (it must start and serve,
// with one set of routing rules, not two), then stops it with SIGTERM:
// it exits 0, and leaves no rule or route (both families, every table),
// no socket and no process behind.
func TestUnwrapCrashAndCleanStop(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	startPeerServer(t, l.origin, "tcp+udp", 9000, false)
	before := routingState(t, l.origin)
	text := unwrapYAML(
		unwrapEntry{name: "tcp", network: "tcp", listen: netip.AddrPortFrom(originV4, 80), accept: []string{"ppv1", "ppv2"}, port: 9000},
		unwrapEntry{name: "udp", network: "udp", listen: netip.AddrPortFrom(originV6, 5003), accept: []string{"spp"}, port: 9000},
	)
	a := startAgent(t, l.origin, text)
	startEdge(t, l.edge, fmt.Sprintf("tcp:1001 %s 80 off ppv2\nudp:2003 %s 5003 off spp\n", originV4, originV6))
	serve := func(t *testing.T) {
		t.Helper()
		for _, client := range []netip.Addr{clientV4, clientV6} {
			openPeerSession(t, l.client, netip.AddrPortFrom(front(client), 1001))
			udpPeerExchange(t, dialUDP(t, l.client, netip.AddrPortFrom(front(client), 2003)), []byte("hello"))
		}
	}
	serve(t)
	running := routingState(t, l.origin)
	for _, want := range []string{"# ip -4 rule show", "# ip -6 rule show"} {
		section := running[strings.Index(running, want):]
		section = section[:strings.Index(section[1:], "# ip")+1]
		if !strings.Contains(section, unwrapTable) {
			t.Errorf("no rule looking up the agent's table in %q:\n%s", want, running)
		}
	}

	secondAgentRefused(t, l.origin)
	if got := routingState(t, l.origin); got != running {
		t.Errorf("routing after a second agent was refused differs from the first's:\n%s\nfirst:\n%s", got, running)
	}
	serve(t)

	a.signal(t, syscall.SIGKILL)
	waitExit(t, a.Proc, ioTimeout)
	a = startAgentFile(t, l.origin, a.file)
	serve(t)
	if got := routingState(t, l.origin); got != running {
		t.Errorf("routing after a SIGKILL and a restart differs from the first run's:\n%s\nfirst run:\n%s", got, running)
	}
	if v := a.metric(t, "realip_unwrap_routing_up"); v != 1 {
		t.Errorf("realip_unwrap_routing_up = %v after the restart, want 1", v)
	}
	promtoolCheck(t, a.metrics(t))

	stopCleanly(t, l.origin, a, before, "198.51.100.10:80", "[2001:db8:2::10]:5003")
}

// secondAgentRefused starts a second agent in h, where one runs, with
// other addresses: it must exit with an error saying that another process
// manages the namespace's routing, not take it over (it would remove the
// first agent's routing as a crashed run's leftovers).
func secondAgentRefused(t *testing.T, h *netns.Host) {
	t.Helper()
	text := strings.Replace(unwrapYAML(unwrapEntry{name: "second", network: "tcp",
		listen: netip.AddrPortFrom(originV4, 81), accept: []string{"ppv1"}, port: 9000}),
		unwrapMetricsAddr, "127.0.0.1:9789", 1)
	path := filepath.Join(t.TempDir(), "second.yaml")
	writeFile(t, path, text)
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	out, err := h.Command(ctx, agentBinary(t), "unwrap", "-config", path).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("a second agent in the namespace: %v, want it to exit with an error:\n%s", err, out)
	}
	if !strings.Contains(string(out), "another process manages realip's routing in this network namespace") {
		t.Errorf("a second agent's error does not say another process manages the routing:\n%s", out)
	}
}

// stopCleanly sends SIGTERM to the agent in h and checks that it exits 0
// and leaves behind no rule or route (h's routing is before again), no
// socket of its own or on its listening addresses, and no process.
func stopCleanly(t *testing.T, h *netns.Host, a *agentProc, before string, listens ...string) {
	t.Helper()
	pid := a.Cmd.Process.Pid
	a.signal(t, syscall.SIGTERM)
	waitExit(t, a.Proc, ioTimeout)
	if err := a.Err(); err != nil {
		t.Errorf("realip-agent exited with %v on SIGTERM:\n%s", err, a.Output())
	}
	if got := routingState(t, h); got != before {
		t.Errorf("routing after SIGTERM differs from before the agent started:\n%s\nbefore:\n%s", got, before)
	}
	listens = append(listens, unwrapMetricsAddr)
	for _, line := range socketsOf(t, h) {
		f := strings.Fields(line)
		if strings.Contains(line, "realip-agent") || strings.Contains(line, fmt.Sprintf("pid=%d,", pid)) ||
			len(f) > 4 && slices.Contains(listens, f[4]) && (f[1] == "LISTEN" || f[1] == "UNCONN") {
			t.Errorf("socket left after SIGTERM: %s", line)
		}
	}
	for _, p := range processesIn(t, h) {
		if strings.HasSuffix(p, " realip-agent") {
			t.Errorf("process left after SIGTERM: %s", p)
		}
	}
}
