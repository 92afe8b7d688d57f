//go:build linux

package integration

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/realip/realip/internal/netns"
	"github.com/realip/realip/internal/testenv"
)

// These tests run issue 14's transparent unwrap end to end: a client, the
// real realip-edge with ppv1, ppv2 and spp rules, and on the origin the
// real `realip-agent unwrap` in front of servers that know nothing of
// PROXY protocol or SPP and listen on loopback. Each server must see the
// client's own address, as its own log or answer shows, and the client
// must get the server's answer back intact.

// tcpUnwrapLab is a lab whose edge has, for each origin address, a ppv1
// and a ppv2 rule to the agent's TCP entry on that address (port 80),
// which relays to the server's port on 127.0.0.1 and [::1].
type tcpUnwrapLab struct {
	*lab
	agent *agentProc
	// goroutines and sockets are the agent's go_goroutines and socket
	// descriptors once it and the edge run.
	goroutines float64
	sockets    int
}

// tcpRule is one edge rule of a tcpUnwrapLab.
type tcpRule struct {
	mode   string
	origin netip.Addr
	port   uint16 // the edge's forwarding port
}

var tcpUnwrapRules = []tcpRule{
	{"ppv1", originV4, 1001}, {"ppv2", originV4, 1002},
	{"ppv1", originV6, 1011}, {"ppv2", originV6, 1012},
}

// startTCPUnwrap starts the agent (entries tcp-v4 and tcp-v6 to
// serverPort) and the edge in l; the servers must be running.
func startTCPUnwrap(t *testing.T, l *lab, serverPort uint16) *tcpUnwrapLab {
	t.Helper()
	var entries []unwrapEntry
	for _, o := range []netip.Addr{originV4, originV6} {
		entries = append(entries, unwrapEntry{name: "tcp-" + family(o), network: "tcp",
			listen: netip.AddrPortFrom(o, 80), accept: []string{"ppv1", "ppv2"}, port: serverPort})
	}
	a := startAgent(t, l.origin, unwrapYAML(entries...))
	var rules strings.Builder
	for _, r := range tcpUnwrapRules {
		fmt.Fprintf(&rules, "tcp:%d %s 80 off %s\n", r.port, r.origin, r.mode)
	}
	startEdge(t, l.edge, rules.String())
	goroutines := a.goroutines(t)
	a.settled()
	return &tcpUnwrapLab{lab: l, agent: a, goroutines: goroutines, sockets: countFDs(t, a.Cmd.Process.Pid).sockets}
}

// eachTCPPath runs fn as a parallel subtest for every rule and client
// family, with the edge's address to connect to; it returns once all are
// done.
func eachTCPPath(t *testing.T, fn func(t *testing.T, name string, r tcpRule, to netip.AddrPort)) {
	t.Run("paths", func(t *testing.T) {
		for _, r := range tcpUnwrapRules {
			for _, client := range []netip.Addr{clientV4, clientV6} {
				name := fmt.Sprintf("%s-%s-client-%s-origin", r.mode, family(client), family(r.origin))
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					fn(t, name, r, netip.AddrPortFrom(front(client), r.port))
				})
			}
		}
	})
}

// checkTCPMetrics checks the agent's counters after every path of
// eachTCPPath has been used once per client family, with bodies of at
// least minBody bytes, and that promtool accepts the exposition; then that
// once the connections are over the agent holds none of their sockets and
// runs no more goroutines than at start.
func (u *tcpUnwrapLab) checkTCPMetrics(t *testing.T, minBody int) {
	t.Helper()
	for _, o := range []netip.Addr{originV4, originV6} {
		e := entryLabel("tcp-" + family(o))
		for _, mode := range []string{"ppv1", "ppv2"} {
			// Two clients per mode; the edge's health checks come on top.
			u.agent.waitAtLeast(t, 2, "realip_unwrap_headers_total", e, `protocol="`+mode+`"`)
		}
		u.agent.waitAtLeast(t, 4, "realip_unwrap_relayed_total", e)
		u.agent.waitAtLeast(t, float64(4*minBody), "realip_unwrap_bytes_total", e, `direction="to_client"`)
		if v := u.agent.metric(t, "realip_unwrap_untrusted_total", e); v != 0 {
			t.Errorf("%s: realip_unwrap_untrusted_total = %v, want 0 (only the edge talked to it)", e, v)
		}
	}
	if v := u.agent.metric(t, "realip_unwrap_routing_up"); v != 1 {
		t.Errorf("realip_unwrap_routing_up = %v, want 1", v)
	}
	promtoolCheck(t, u.agent.metrics(t))

	// Every connection has ended: none is live, and the agent is back to
	// its listening sockets and to its goroutines at start.
	for _, o := range []netip.Addr{originV4, originV6} {
		u.agent.waitEqual(t, 0, "realip_unwrap_live", entryLabel("tcp-"+family(o)))
	}
	listens := []string{"198.51.100.10:80", "[2001:db8:2::10]:80", unwrapMetricsAddr}
	var left []string
	waitFor(t, ioTimeout, func() bool {
		left = u.agent.sockets(t, "tcp", listens...)
		return len(left) == 0
	}, func() string { return "the agent still holds TCP sockets:\n" + strings.Join(left, "\n") })
	var fds fdCount
	waitFor(t, ioTimeout, func() bool {
		u.agent.settled()
		fds = countFDs(t, u.agent.Cmd.Process.Pid)
		return fds.sockets <= u.sockets
	}, func() string {
		return fmt.Sprintf("the agent has %d socket descriptors, %d at start", fds.sockets, u.sockets)
	})
	var now float64
	waitFor(t, ioTimeout, func() bool {
		now = u.agent.goroutines(t)
		return now <= u.goroutines
	}, func() string { return fmt.Sprintf("go_goroutines %v, %v at start", now, u.goroutines) })
}

// TestUnwrapHTTPServer is the vendors' own check through the unwrap
// relay: python3's http.server, which knows nothing of PROXY protocol,
// listens on 127.0.0.1 and on [::1], and its access log must name the
// client (IPv4 and IPv6) that fetched a file through a ppv1 or ppv2 rule
// of realip-edge, to an IPv4 or an IPv6 origin; the file must arrive
// intact.
func TestUnwrapHTTPServer(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	dir := t.TempDir()
	blob := make([]byte, 256<<10)
	rand.Read(blob)
	if err := os.WriteFile(filepath.Join(dir, "blob"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	servers := map[bool]*netns.Proc{} // by IPv6
	for _, lo := range loopbacks {
		servers[lo.Is6()] = startHTTPServer(t, l.origin, netip.AddrPortFrom(lo, 8080), dir)
	}
	u := startTCPUnwrap(t, l, 8080)

	eachTCPPath(t, func(t *testing.T, name string, r tcpRule, to netip.AddrPort) {
		c := mustDial(t, l.client, to)
		client := addrPort(c.LocalAddr())
		path := "/blob?" + name
		resp, body := httpGet(t, c, path)
		if resp.StatusCode != 200 || body != string(blob) {
			t.Errorf("GET %s: %s, %d bytes; want 200 and the file's %d bytes intact", path, resp.Status, len(body), len(blob))
		}
		// The server of the client's family logs the request.
		srv := servers[client.Addr().Is6()]
		request := `"GET ` + path + ` HTTP/1.0" 200`
		waitLogLine(t, srv, request)
		for _, line := range strings.Split(srv.Output(), "\n") {
			if strings.Contains(line, request) && !strings.HasPrefix(line, client.Addr().String()+" - - [") {
				t.Errorf("http.server logged %q, want the client %v first", line, client.Addr())
			}
		}
	})
	u.checkTCPMetrics(t, len(blob))
}

// TestUnwrapNginx puts nginx without proxy_protocol (plain HTTP, on
// 127.0.0.1 and [::1]) behind the relay: its access log, which holds
// $remote_addr:$remote_port, must show the client's own address and port,
// and the client must get nginx's answer.
func TestUnwrapNginx(t *testing.T) {
	t.Parallel()
	testenv.RequireCommand(t, "nginx")
	l := newLab(t)
	accessLog := startPlainNginx(t, l.origin, 8081)
	u := startTCPUnwrap(t, l, 8081)

	eachTCPPath(t, func(t *testing.T, name string, r tcpRule, to netip.AddrPort) {
		c := mustDial(t, l.client, to)
		client := addrPort(c.LocalAddr())
		path := "/" + name
		resp, body := httpGet(t, c, path)
		if want := "hello from nginx " + path + "\n"; resp.StatusCode != 200 || body != want {
			t.Errorf("GET %s: %s %q, want 200 %q", path, resp.Status, body, want)
		}
		line := waitFileLine(t, accessLog, `"GET `+path+` HTTP/1.0"`)
		if want := "peer=" + hostPort(client) + " "; !strings.HasPrefix(line, want) {
			t.Errorf("nginx logged %q, want it to start with %q", line, want)
		}
	})
	u.checkTCPMetrics(t, 1)
}

// startPlainNginx runs nginx in h with one HTTP server on 127.0.0.1:port
// and [::1]:port, no PROXY protocol anywhere, answering "hello from nginx
// PATH", and returns the path of its access log, whose lines start with
// "peer=$remote_addr:$remote_port ".
func startPlainNginx(t *testing.T, h *netns.Host, port uint16) string {
	t.Helper()
	dir := t.TempDir()
	accessLog := filepath.Join(dir, "access.log")
	pidFile := filepath.Join(dir, "nginx.pid")
	var b strings.Builder
	fmt.Fprintf(&b, "user %s;\nworker_processes 1;\npid %s;\nerror_log stderr notice;\n", nginxUser(), pidFile)
	b.WriteString("events { worker_connections 256; }\nhttp {\n")
	for _, tmp := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "\t%s_temp_path %s;\n", tmp, filepath.Join(dir, tmp))
	}
	b.WriteString("\tlog_format peer 'peer=$remote_addr:$remote_port \"$request\" $status';\n")
	fmt.Fprintf(&b, "\taccess_log %s peer;\n", accessLog)
	fmt.Fprintf(&b, "\tserver {\n\t\tlisten 127.0.0.1:%d;\n\t\tlisten [::1]:%d;\n", port, port)
	b.WriteString("\t\tdefault_type text/plain;\n\t\tlocation / { return 200 \"hello from nginx $uri\\n\"; }\n\t}\n}\n")
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	p := h.Start(t, "nginx", "-c", conf, "-p", dir, "-g", "daemon off;")
	for _, lo := range loopbacks {
		waitAccepting(t, h, netip.AddrPortFrom(lo, port), p)
	}
	return accessLog
}

// waitFileLine waits until the file at path has a line holding want and
// returns it.
func waitFileLine(t *testing.T, path, want string) string {
	t.Helper()
	var line string
	waitFor(t, ioTimeout, func() bool {
		b, _ := os.ReadFile(path)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, want) {
				line = l
				return true
			}
		}
		return false
	}, func() string {
		b, err := os.ReadFile(path)
		return fmt.Sprintf("no line with %q in %s (%v):\n%s", want, path, err, b)
	})
	return line
}

// udpUnwrapMode is one way the edge passes a UDP client's address, with
// the agent's entry that takes it.
type udpUnwrapMode struct {
	name    string // also the entry's name prefix
	accept  string
	framing string // of a ppv2 entry
	port    uint16 // the entry's port on each origin address; the edge's rule ports are port-3000 (IPv4 origin) and port-2990 (IPv6)
	every   bool   // the edge needs -udp-ppv2-every-datagram
}

var udpUnwrapModes = []udpUnwrapMode{
	{name: "spp", accept: "spp", port: 5003},
	{name: "ppv2-first", accept: "ppv2", framing: "first-datagram", port: 5002},
	{name: "ppv2-every", accept: "ppv2", framing: "every-datagram", port: 5004, every: true},
}

// TestUnwrapUDPEcho puts a plain UDP echo server (python3, on 127.0.0.1
// and [::1], answering with the peer address it sees) behind the relay,
// reached through realip-edge's spp rules and its ppv2 rules framed both
// ways (on the first datagram of a flow, realip-edge's default as
// EdgeOne's, and on every datagram), to an IPv4 and an IPv6 origin, from
// IPv4 and IPv6 clients: every answer names the client's own address and
// port and comes back to the client intact, datagram after datagram.
func TestUnwrapUDPEcho(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	echo := startUDPEcho(t, l.origin, 7000)
	var entries []unwrapEntry
	rules := map[bool]*strings.Builder{false: {}, true: {}} // by every
	for _, m := range udpUnwrapModes {
		for _, o := range []netip.Addr{originV4, originV6} {
			entries = append(entries, unwrapEntry{name: m.name + "-" + family(o), network: "udp",
				listen: netip.AddrPortFrom(o, m.port), accept: []string{m.accept}, framing: m.framing, port: 7000})
			fmt.Fprintf(rules[m.every], "udp:%d %s %d off %s\n", udpRulePort(m, o), o, m.port, m.accept)
		}
	}
	a := startAgent(t, l.origin, unwrapYAML(entries...))
	startEdge(t, l.edge, rules[false].String())
	startEdge(t, l.edge, rules[true].String(), "-udp-ppv2-every-datagram")

	const datagrams = 3
	t.Run("paths", func(t *testing.T) {
		for _, m := range udpUnwrapModes {
			for _, o := range []netip.Addr{originV4, originV6} {
				for _, client := range []netip.Addr{clientV4, clientV6} {
					t.Run(fmt.Sprintf("%s/%s-client-%s-origin", m.name, family(client), family(o)), func(t *testing.T) {
						t.Parallel()
						c := dialUDP(t, l.client, netip.AddrPortFrom(front(client), udpRulePort(m, o)))
						for i := range datagrams {
							payload := make([]byte, 1000)
							rand.Read(payload)
							udpPeerExchange(t, c, append([]byte(fmt.Sprintf("datagram %d: ", i)), payload...))
						}
						waitLogLine(t, echo, "peer="+udpLocal(c).String())
					})
				}
			}
		}
	})
	for _, m := range udpUnwrapModes {
		for _, o := range []netip.Addr{originV4, originV6} {
			e := entryLabel(m.name + "-" + family(o))
			a.waitAtLeast(t, 2*datagrams, "realip_unwrap_datagrams_total", e, `direction="to_server"`)
			a.waitAtLeast(t, 2*datagrams, "realip_unwrap_datagrams_total", e, `direction="to_client"`)
			a.waitAtLeast(t, 2, "realip_unwrap_relayed_total", e)
			a.waitAtLeast(t, 2, "realip_unwrap_live", e)
			if v := a.metric(t, "realip_unwrap_rejected_total", e, `reason="no_flow"`); v != 0 {
				t.Errorf("%s: %v datagrams rejected for want of a flow", e, v)
			}
		}
	}
	promtoolCheck(t, a.metrics(t))
}

// udpRulePort is the edge's forwarding port of mode m to origin o.
func udpRulePort(m udpUnwrapMode, o netip.Addr) uint16 {
	if o.Is6() {
		return m.port - 2990
	}
	return m.port - 3000
}
