//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/realip/realip/edge/toasend"
)

// A service on the origin, reached through one edge rule.
type service struct {
	name   string
	port   uint16     // the edge's forwarding port
	origin netip.Addr // the origin address the rule points at
	oport  uint16
	kind   string // c4, c6, whoami, go
}

var services = []service{
	{"C IPv4 server", 2004, origin4.Addr(), 10004, "c4"},
	{"C IPv6 server over IPv6", 2006, origin6.Addr(), 10006, "c6"},
	{"C IPv6 server over IPv4", 2046, origin4.Addr(), 10006, "c6"},
	{"whoami -proto toa over IPv4", 2080, origin4.Addr(), 8080, "whoami"},
	{"whoami -proto toa over IPv6", 2086, origin6.Addr(), 8080, "whoami"},
	{"plain Go server over IPv4", 2090, origin4.Addr(), 9000, "go"},
	{"plain Go server over IPv6", 2096, origin6.Addr(), 9000, "go"},
}

// The load phase's rules: the same in-process server over both families.
const loadPort4, loadPort6, loadOriginPort = 2100, 2106, 9100

func rulesText() string {
	var b strings.Builder
	for _, s := range services {
		fmt.Fprintf(&b, "tcp:%d %s %d off toa %s\n", s.port, s.origin, s.oport, s.name)
	}
	fmt.Fprintf(&b, "tcp:%d %s %d off toa load over IPv4\n", loadPort4, origin4.Addr(), loadOriginPort)
	fmt.Fprintf(&b, "tcp:%d %s %d off toa load over IPv6\n", loadPort6, origin6.Addr(), loadOriginPort)
	return b.String()
}

// suiteRun is what the steps of suite share.
type suiteRun struct {
	c     *checker
	cfg   *config
	l     *lab
	edge  *proc   // realip-edge, once started
	procs []*proc // the origin's programs
	goLn  *net.TCPListener
}

func suite(c *checker, cfg *config) error {
	if err := raiseFiles(1 << 16); err != nil {
		return err
	}
	s := &suiteRun{c: c, cfg: cfg}
	defer s.close()
	if err := s.openLab(); err != nil {
		return err
	}
	if err := s.loadTOA(); err != nil {
		return err
	}
	if err := s.startEdge(); err != nil {
		return err
	}
	if err := s.startOrigin(); err != nil {
		return err
	}
	functional(c, s.l, "")
	n, err := s.syncookies()
	if err != nil {
		return err
	}
	if err := rogue(c, s.l); err != nil {
		return err
	}
	total, err := loadAndUnload(c, s.l, cfg)
	if err != nil {
		return err
	}
	checkEdgeMetrics(c, s.l, s.edge, total+2*n)
	return nil
}

// close stops what the steps started, in the reverse order.
func (s *suiteRun) close() {
	if s.goLn != nil {
		s.goLn.Close()
	}
	for _, p := range s.procs {
		p.stop(2 * time.Second)
	}
	if s.edge != nil {
		s.edge.stop(5 * time.Second)
	}
	if s.l != nil {
		s.l.Close()
	}
}

// openLab builds the hosts (topo.go).
func (s *suiteRun) openLab() error {
	l, err := newLab()
	if err != nil {
		return err
	}
	s.l = l
	s.c.check(true, "lab", "client %s %s, edge %s %s | %s %s, origin %s %s | %s %s, rogue %s %s",
		client4, client6, front4, front6, back4, back6, origin4, origin6, oside4, oside6, rogue4, rogue6)
	return nil
}

// loadTOA loads the origin's module, trusting the edge's origin-facing
// addresses only.
func (s *suiteRun) loadTOA() error {
	if err := loadModule(s.cfg.module, "trusted="+trusted()); err != nil {
		return err
	}
	b, _ := os.ReadFile("/sys/module/toa/parameters/trusted")
	s.c.check(strings.Contains(string(b), back4.Addr().String()) && strings.Contains(string(b), back6.Addr().String()),
		"module", "toa.ko loaded, trusted %s", strings.TrimSpace(string(b)))
	return nil
}

// startEdge runs the edge, in its own cgroup with its TOA sender attached
// there.
func (s *suiteRun) startEdge() error {
	edgeCG, err := cgroup("realip-edge")
	if err != nil {
		return err
	}
	rulesPath := "/tmp/edge-rules.txt"
	if err := os.WriteFile(rulesPath, []byte(rulesText()), 0o644); err != nil {
		return err
	}
	edge, err := start(s.l.edge, "realip-edge", edgeCG, s.cfg.edge, "-rules", rulesPath,
		"-toa-cgroup", edgeCG, "-metrics", "127.0.0.1:9300", "-drain-timeout", "1s",
		// One health check per origin, at start, before anything is
		// counted: periodic ones would reach the origins without the
		// option and blur the exact counter checks below.
		"-check-every", "1h")
	if err != nil {
		return err
	}
	s.edge = edge
	if err := edge.waitFor(`msg="edge: rules applied"`, 60*time.Second); err != nil {
		return err
	}
	s.c.check(true, "edge", "realip-edge running with %d toa rules, sender in %s", len(services)+2, edgeCG)
	return nil
}

// startOrigin starts the origin's programs.
func (s *suiteRun) startOrigin() error {
	for _, prog := range []struct {
		name, ready string
		argv        []string
	}{
		{"toa_server4", "listening", []string{s.cfg.c4, "10004"}},
		{"toa_server6", "listening", []string{s.cfg.c6, "10006"}},
		{"whoami", "whoami: tcp", []string{s.cfg.whoami, "-tcp", ":8080", "-proto", "toa", "-trust", trusted()}},
	} {
		p, err := start(s.l.origin, prog.name, "", prog.argv...)
		if err != nil {
			return err
		}
		s.procs = append(s.procs, p)
		if err := p.waitFor(prog.ready, 20*time.Second); err != nil {
			return err
		}
	}
	goLn, err := listen(s.l.origin, "[::]:9000")
	if err != nil {
		return err
	}
	s.goLn = goLn
	go serveRemoteAddr(goLn)
	return nil
}

// syncookies is the functional round again with SYN cookies on the origin;
// it returns how many connections the round made.
func (s *suiteRun) syncookies() (int, error) {
	// SYN cookies on the origin for every connection: no SYN is kept, the
	// handshake ACK is the only segment the module can read the option from.
	if err := sysctl(s.l.origin, "net.ipv4.tcp_syncookies", "2"); err != nil {
		return 0, err
	}
	before, err := netstat(s.l.origin)
	if err != nil {
		return 0, err
	}
	n, served := functional(s.c, s.l, " (syncookies=2)")
	after, _ := netstat(s.l.origin)
	// What the test controls: its n connections, each answered with the
	// right client (checked one by one above), each SYN answered with a
	// cookie and each handshake completed by one (Sent and Recv grow by at
	// least n). SyncookiesFailed is the origin's, not the test's: with
	// tcp_syncookies=2 any stray segment that reaches the listener without
	// a socket (a late ACK or FIN of an earlier connection) is checked as
	// a cookie and fails; it is shown, not judged. Broken cookies still
	// fail here: a handshake the cookie did not complete leaves Recv short
	// of n and the connection unanswered.
	sent, recv := after["SyncookiesSent"]-before["SyncookiesSent"], after["SyncookiesRecv"]-before["SyncookiesRecv"]
	s.c.check(served == n && sent >= uint64(n) && recv >= uint64(n),
		"syncookies", "origin sent %d and accepted %d SYN cookies for %d connections, %d answered with the client (want all, and at least %d each; stray cookies failed: %d)",
		sent, recv, n, served, n, after["SyncookiesFailed"]-before["SyncookiesFailed"])
	if err := sysctl(s.l.origin, "net.ipv4.tcp_syncookies", "1"); err != nil {
		return 0, err
	}
	return n, nil
}

// serveRemoteAddr is the plain Go server: it answers each connection with
// the peer address accept() gave it.
func serveRemoteAddr(ln *net.TCPListener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(conn, "%s\n", conn.RemoteAddr())
		conn.Close()
	}
}

// functional asks every service once from an IPv4 and once from an IPv6
// client and returns how many connections it made and how many of them
// were answered with the client's own address.
func functional(c *checker, l *lab, suffix string) (n, served int) {
	before, opensBefore, err := handshakeCounts(l)
	if err != nil {
		c.check(false, "counters"+suffix, "%v", err)
	}
	t0 := time.Now()
	wantOK := 0
	for _, s := range services {
		for _, front := range []netip.Addr{front4.Addr(), front6.Addr()} {
			n++
			wantOK += rewrites(s, front.Is4())
			name := fmt.Sprintf("%s, IPv%d client%s", s.name, ipv(front), suffix)
			conn, err := dial(l.client, netip.AddrPortFrom(front, s.port), nil)
			if err != nil {
				c.check(false, name, "dial the edge: %v", err)
				continue
			}
			client := addrPort(conn.LocalAddr())
			line, err := firstLine(conn, 10*time.Second)
			conn.Close()
			if err != nil {
				c.check(false, name, "no answer (%v) %q", err, line)
				continue
			}
			ok, why := judge(s, client, line)
			if c.check(ok, name, "client %s, origin said %q%s", client, line, why) {
				served++
			}
		}
	}
	after, opensAfter, err := handshakeCounts(l)
	if err != nil {
		c.check(false, "counters"+suffix, "%v", err)
	}
	d := delta(after, before)
	opens := int64(opensAfter - opensBefore)
	// The module is global: the edge's own handshakes with the client pass
	// its hooks too, without the option (syn_recv_sock_no_toa), and so do
	// the edge's accept() and getpeername() (getname_toa_empty). So may
	// handshakes the test does not make (the edge's health checks of the
	// origin): what the test controls is that each of its n connections
	// to the origin carried the option and that every handshake of the
	// round went through the hook, one way or the other (Tcp PassiveOpens
	// over every namespace). Exactly one getpeername() in the round cannot
	// be answered: the IPv4 C server's sockaddr_in-sized call for the IPv6
	// (NAT64) client.
	toa, noTOA := d["syn_recv_sock_toa"], d["syn_recv_sock_no_toa"]
	c.check(toa == int64(n) && noTOA >= int64(n) && toa+noTOA == opens && d["syn_recv_sock_untrusted"] == 0 &&
		d["syn_recv_sock_bad_option"] == 0 && d["syn_recv_sock_from_syn"] == 0 && d["getname_toa_mismatch"] == 1 &&
		d["getname_toa_ok"] == int64(wantOK) && d["probe_missed"] == 0 && d["alloc_failed"] == 0,
		"counters"+suffix, "for %d connections (%d handshakes in all) in %v: %s (want syn_recv_sock_toa+%d, syn_recv_sock_no_toa at least +%d and the two adding up to the handshakes, getname_toa_ok+%d getname_toa_mismatch+1)",
		n, opens, time.Since(t0).Round(time.Millisecond), fmtDelta(d), n, n, wantOK)
	return n, served
}

// rewrites is how many accept()/getpeername() calls the origin program
// of s makes per connection that toa.ko answers (getname_toa_ok): the C
// servers call accept() and getpeername() (the IPv4 one a second
// getpeername() with a sockaddr_in, which only an IPv4 client fits); the
// Go programs only accept().
func rewrites(s service, client4 bool) int {
	switch {
	case s.kind == "c4" && client4:
		return 3
	case s.kind == "c4", s.kind == "c6":
		return 2
	}
	return 1
}

func ipv(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

// judge compares what an origin program answered with the client's own
// address; why explains a mismatch.
func judge(s service, client netip.AddrPort, line string) (bool, string) {
	fam := func(a netip.AddrPort) string {
		if a.Addr().Is4() {
			return "inet/" + a.String()
		}
		return "inet6/" + a.String()
	}
	mapped := client
	if client.Addr().Is4() {
		mapped = netip.AddrPortFrom(netip.AddrFrom16(client.Addr().As16()), client.Port())
	}
	back := back6.Addr()
	if s.origin.Is4() {
		back = back4.Addr()
	}
	f := map[string]string{}
	for _, kv := range strings.Fields(line) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			f[k] = v
		}
	}
	switch s.kind {
	case "c4":
		// The buffer holds a sockaddr_in6: IPv4 clients come as AF_INET,
		// the NAT64 client as AF_INET6; the sockaddr_in-sized call gets
		// the edge for the NAT64 client.
		want4 := fam(client)
		if !client.Addr().Is4() {
			want4 = "inet/" + back.String() + ":" // the edge, any port
		}
		ok := f["accept"] == fam(client) && f["peer"] == fam(client) && strings.HasPrefix(f["peer4"], want4)
		return ok, fmt.Sprintf(" (want accept=peer=%s peer4=%s)", fam(client), want4)
	case "c6":
		wantV4 := "-"
		if client.Addr().Is4() {
			wantV4 = fam(client)
		}
		ok := f["accept"] == "inet6/"+mapped.String() && f["peer"] == "inet6/"+mapped.String() && f["v4"] == wantV4
		return ok, fmt.Sprintf(" (want accept=peer=inet6/%s v4=%s)", mapped, wantV4)
	case "whoami":
		// The edge's address, any port: "198.51.100.1:" or "[2001:db8:2::1]:".
		edgeHost := strings.TrimSuffix(netip.AddrPortFrom(back, 0).String(), "0")
		prefix := fmt.Sprintf("client=%s proxy=%s", client, edgeHost)
		ok := strings.HasPrefix(line, prefix) && strings.HasSuffix(line, " via=toa")
		return ok, fmt.Sprintf(" (want %s... via=toa)", prefix)
	case "go":
		got, err := netip.ParseAddrPort(line)
		ok := err == nil && got.Addr().Unmap() == client.Addr() && got.Port() == client.Port()
		return ok, fmt.Sprintf(" (want %s)", client)
	}
	return false, " (unknown service kind)"
}

// netstatDelta lists the TcpExt counters that moved, for the log.
func netstatDelta(after, before map[string]uint64) string {
	var parts []string
	for k, v := range after {
		if v != before[k] {
			parts = append(parts, fmt.Sprintf("%s+%d", k, v-before[k]))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func fmtDelta(d map[string]int64) string {
	var parts []string
	for _, k := range []string{"syn_recv_sock_toa", "syn_recv_sock_no_toa", "getname_toa_ok", "getname_toa_mismatch",
		"getname_toa_empty", "syn_recv_sock_untrusted", "syn_recv_sock_bad_option", "syn_recv_sock_from_syn",
		"alloc_failed", "probe_missed"} {
		if d[k] != 0 {
			parts = append(parts, fmt.Sprintf("%s+%d", k, d[k]))
		}
	}
	return strings.Join(parts, " ")
}

// rogue sends TOA from a host outside the trusted prefixes, straight to
// the origin's C servers, with this program's own eBPF sender: the option
// goes out (the sender says so) and the origin must ignore and count it.
func rogue(c *checker, l *lab) error {
	cg, err := cgroup("multihost")
	if err != nil {
		return err
	}
	if err := joinCgroup(cg); err != nil {
		return err
	}
	sender, err := toasend.Open(toasend.Options{CgroupPath: cg})
	if err != nil {
		return fmt.Errorf("this program's TOA sender: %w", err)
	}
	defer sender.Close()
	before := toaStats()
	for _, tc := range []struct {
		to     netip.AddrPort
		forged netip.AddrPort
	}{
		{netip.AddrPortFrom(oside4.Addr(), 10004), netip.MustParseAddrPort("192.0.2.99:999")},
		{netip.AddrPortFrom(oside6.Addr(), 10006), netip.MustParseAddrPort("[2001:db8:1::99]:999")},
	} {
		name := fmt.Sprintf("forged option from %s", tc.to.Addr())
		conn, err := dial(l.rogue, tc.to, sender.Control(tc.forged))
		if err != nil {
			c.check(false, name, "dial: %v", err)
			continue
		}
		syn, ack, _ := sender.Carried(conn)
		self := addrPort(conn.LocalAddr())
		line, err := firstLine(conn, 10*time.Second)
		conn.Close()
		c.check(err == nil && syn && ack && strings.Contains(line, "accept=inet") && strings.Contains(line, self.Addr().String()) &&
			!strings.Contains(line, tc.forged.Addr().String()),
			name, "claiming %s (sent on SYN %v, ACK %v): the origin saw %q, want the rogue %s", tc.forged, syn, ack, line, self)
	}
	d := delta(toaStats(), before)
	c.check(d["syn_recv_sock_untrusted"] == 2 && d["syn_recv_sock_toa"] == 0, "untrusted counted",
		"syn_recv_sock_untrusted +%d (want +2), syn_recv_sock_toa +%d (want 0)", d["syn_recv_sock_untrusted"], d["syn_recv_sock_toa"])
	return nil
}

// checkEdgeMetrics reads realip-edge's metrics from inside the edge host:
// no connection went to the origin without the option.
func checkEdgeMetrics(c *checker, l *lab, edge *proc, atLeast int) {
	hc := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := l.edge.Do(func() error {
				var err error
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	resp, err := hc.Get("http://127.0.0.1:9300/metrics")
	if err != nil {
		state := "running"
		select {
		case <-edge.done:
			state = fmt.Sprintf("exited (%v)", edge.err)
		default:
		}
		c.check(false, "edge metrics", "%v; realip-edge %s, its output:\n%s", err, state, edge.Output())
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var total, notSent float64
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, _ := strings.Cut(line, "{")
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			continue
		}
		switch {
		case name == "realip_edge_tcp_connections_total":
			total += v
		case name == "realip_edge_errors_total" && strings.Contains(rest, `reason="toa_not_sent"`):
			notSent += v
		}
		if strings.HasPrefix(line, "realip_edge_toa_") {
			fmt.Printf("info edge metrics: %s\n", line)
		}
	}
	c.check(total >= float64(atLeast) && notSent == 0, "edge metrics",
		"realip_edge_tcp_connections_total %.0f (at least %d), toa_not_sent %.0f", total, atLeast, notSent)
}
