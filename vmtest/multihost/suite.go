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
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/realip/realip/edge/toasend"
	"github.com/realip/realip/vmtest/recvtest"
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
	c       *checker
	cfg     *config
	l       *lab
	cg      *suiteCgroups
	r       recvtest.Receiver
	stopped bool    // the receiver was stopped (loadAndUnload)
	tmp     string  // rules file
	edge    *proc   // realip-edge, once started
	procs   []*proc // the origin's programs
	goLn    *net.TCPListener
}

func suite(c *checker, cfg *config) error {
	// Both ends of every load connection, and the churn's.
	if err := raiseFiles(1<<16, uint64(2*cfg.conns+1024)); err != nil {
		return err
	}
	t0 := time.Now()
	s := &suiteRun{c: c, cfg: cfg}
	err := s.run()
	s.close()
	if err == nil && s.r != nil {
		// After the origin's programs exited: whoami's listener held the
		// eBPF receiver's maps.
		detail, alloc, ferr := s.r.Freed()
		c.check(ferr == nil && alloc >= uint64(cfg.conns), "freed", "%s (%v)", detail, orNothing(ferr))
	}
	fmt.Printf("info suite: receiver %s: %d checks failed, %v\n", cfg.recv.kind, c.failed, time.Since(t0).Round(time.Millisecond))
	return err
}

// run is the suite's steps, in order.
func (s *suiteRun) run() error {
	if err := s.openLab(); err != nil {
		return err
	}
	if err := s.startReceiver(); err != nil {
		return err
	}
	if err := s.startEdge(); err != nil {
		return err
	}
	if err := s.startOrigin(); err != nil {
		return err
	}
	s.functional("")
	n, err := s.syncookies()
	if err != nil {
		return err
	}
	if err := s.rogue(); err != nil {
		return err
	}
	s.freedBeforeLoad()
	total, err := loadAndUnload(s)
	if err != nil {
		return err
	}
	checkEdgeMetrics(s.c, s.l, s.edge, total+2*n)
	return nil
}

func orNothing(err error) any {
	if err == nil {
		return "nothing left"
	}
	return err
}

// close stops what the steps started, in the reverse order, and removes
// the cgroups.
func (s *suiteRun) close() {
	if s.r != nil && !s.stopped {
		// The suite failed before the stop under load: leave nothing
		// attached (on the host, the pins would outlive the suite).
		err := s.r.Stop()
		s.c.check(err == nil, "cleanup", "%s stopped after a failure (%v)", s.r.Kind(), err)
	}
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
	if s.tmp != "" {
		os.RemoveAll(s.tmp)
	}
	if s.cg != nil {
		err := s.cg.remove()
		s.c.check(err == nil, "cleanup", "the suite's cgroups under %s removed (%v)", s.cg.parent, err)
	}
}

// openLab builds the hosts (topo.go) and the cgroups (suiterecv.go).
func (s *suiteRun) openLab() error {
	l, err := newLab()
	if err != nil {
		return err
	}
	s.l = l
	if s.cg, err = makeSuiteCgroups(s.cfg.recv.cgroup); err != nil {
		return err
	}
	s.c.check(true, "lab", "client %s %s, edge %s %s | %s %s, origin %s %s | %s %s, rogue %s %s; cgroups under %s",
		client4, client6, front4, front6, back4, back6, origin4, origin6, oside4, oside6, rogue4, rogue6, s.cg.parent)
	return nil
}

// startEdge runs the edge, in its own cgroup with its TOA sender attached
// there.
func (s *suiteRun) startEdge() error {
	tmp, err := os.MkdirTemp("", "realip-multihost-")
	if err != nil {
		return err
	}
	s.tmp = tmp
	rulesPath := filepath.Join(tmp, "edge-rules.txt")
	if err := os.WriteFile(rulesPath, []byte(rulesText()), 0o644); err != nil {
		return err
	}
	edge, err := start(s.l.edge, "realip-edge", s.cg.edge, s.cfg.edge, "-rules", rulesPath,
		"-toa-cgroup", s.cg.edge, "-metrics", "127.0.0.1:9300", "-drain-timeout", "1s",
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
	s.c.check(true, "edge", "realip-edge running with %d toa rules, sender in %s", len(services)+2, s.cg.edge)
	return nil
}

// startOrigin starts the origin's programs in the origin's cgroup, and
// opens the plain Go server's listener there.
func (s *suiteRun) startOrigin() error {
	whoami := []string{s.cfg.whoami, "-tcp", ":8080", "-proto", "toa", "-trust", trusted()}
	if s.r.Kind() == recvtest.KindEBPF {
		whoami = append(whoami, "-toa-pin-dir", s.cfg.recv.pinDir)
	}
	for _, prog := range []struct {
		name, ready string
		argv        []string
	}{
		{"toa_server4", "listening", []string{s.cfg.c4, "10004"}},
		{"toa_server6", "listening", []string{s.cfg.c6, "10006"}},
		{"whoami", "whoami: tcp", whoami},
	} {
		p, err := start(s.l.origin, prog.name, s.cg.origin, prog.argv...)
		if err != nil {
			return err
		}
		s.procs = append(s.procs, p)
		if err := p.waitFor(prog.ready, 20*time.Second); err != nil {
			return err
		}
	}
	err := joinCgroupSockets(s.cg.origin, s.cg.self, func() (err error) {
		s.goLn, err = listen(s.l.origin, "[::]:9000")
		return err
	})
	if err != nil {
		return err
	}
	go serveRemoteAddr(s.goLn)
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
	n, served := s.functional(" (syncookies=2)")
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
// were answered with the client's own address (or, where the receiver
// cannot answer it, with the edge's: see judge).
func (s *suiteRun) functional(suffix string) (n, served int) {
	c, kind := s.c, s.r.Kind()
	before, opensBefore, err := handshakeCounts(s.l, s.r)
	if err != nil {
		c.check(false, "counters"+suffix, "%v", err)
	}
	t0 := time.Now()
	wantOK, wantMis := 0, 0
	for _, svc := range services {
		for _, front := range []netip.Addr{front4.Addr(), front6.Addr()} {
			n++
			ok, mis := rewrites(svc, front.Is4(), kind)
			wantOK, wantMis = wantOK+ok, wantMis+mis
			if s.ask(svc, front, suffix) {
				served++
			}
		}
	}
	after, opensAfter, err := handshakeCounts(s.l, s.r)
	if err != nil {
		c.check(false, "counters"+suffix, "%v", err)
	}
	d := delta(after, before)
	opens := int64(opensAfter - opensBefore)
	// What the test controls: each of its n connections to the origin
	// carried the option, and every handshake the receiver serves went
	// through it, one way or the other (handshakes the test does not make,
	// such as the edge's health checks of the origin, may add to both
	// sides). toa.ko is global: the edge's own handshakes with the client
	// count too, without the option (syn_recv_sock_no_toa), and its
	// handshakes are every namespace's Tcp PassiveOpens. The eBPF receiver
	// serves the origin's cgroup: the origin's PassiveOpens (row counters).
	toa, noTOA := d["syn_recv_sock_toa"], d["syn_recv_sock_no_toa"]
	minNoTOA := int64(0)
	if kind == recvtest.KindKmod {
		minNoTOA = int64(n)
	}
	c.check(toa == int64(n) && noTOA >= minNoTOA && toa+noTOA == opens && d["syn_recv_sock_untrusted"] == 0 &&
		d["syn_recv_sock_bad_option"] == 0 && d["syn_recv_sock_from_syn"] == 0 && d["getname_toa_mismatch"] == int64(wantMis) &&
		d["getname_toa_ok"] == int64(wantOK) && d["probe_missed"] == 0 && d["alloc_failed"] == 0,
		"counters"+suffix, "for %d connections (%d handshakes the receiver serves) in %v: %s (want syn_recv_sock_toa+%d, syn_recv_sock_no_toa at least +%d and the two adding up to the handshakes, getname_toa_ok+%d getname_toa_mismatch+%d)",
		n, opens, time.Since(t0).Round(time.Millisecond), fmtDelta(d), n, minNoTOA, wantOK, wantMis)
	return n, served
}

// ask makes one connection from the client through the edge to svc and
// judges what the origin answered.
func (s *suiteRun) ask(svc service, front netip.Addr, suffix string) bool {
	name := fmt.Sprintf("%s, IPv%d client%s", svc.name, ipv(front), suffix)
	conn, err := dial(s.l.client, netip.AddrPortFrom(front, svc.port), nil)
	if err != nil {
		return s.c.check(false, name, "dial the edge: %v", err)
	}
	client := addrPort(conn.LocalAddr())
	line, err := firstLine(conn, 10*time.Second)
	conn.Close()
	if err != nil {
		return s.c.check(false, name, "no answer (%v) %q", err, line)
	}
	ok, why := judge(svc, client, line, s.r.Kind())
	return s.c.check(ok, name, "client %s, origin said %q%s", client, line, why)
}

// rewrites is how many accept()/getpeername() calls the origin program
// of s makes per connection that the receiver answers with the client
// (getname_toa_ok), and how many it cannot (getname_toa_mismatch): the C
// servers call accept() and getpeername() (the IPv4 one a second
// getpeername() with a sockaddr_in, which only an IPv4 client fits); the
// Go programs only accept(). An IPv6 client on the IPv4 C server's socket:
// toa.ko answers the two calls with a sockaddr_in6 buffer, the eBPF
// receiver none (row "C IPv4 server, IPv6 client").
func rewrites(s service, client4 bool, kind recvtest.Kind) (ok, mismatch int) {
	switch {
	case s.kind == "c4" && client4:
		return 3, 0
	case s.kind == "c4" && kind == recvtest.KindEBPF:
		return 0, 3
	case s.kind == "c4":
		return 2, 1
	case s.kind == "c6":
		return 2, 0
	}
	return 1, 0
}

func ipv(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

// judge compares what an origin program answered with the client's own
// address (the edge's where the receiver cannot answer the client); why
// explains a mismatch.
func judge(s service, client netip.AddrPort, line string, kind recvtest.Kind) (bool, string) {
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
		// the NAT64 client as AF_INET6 from toa.ko; the sockaddr_in-sized
		// call gets the edge for the NAT64 client. The eBPF hook cannot
		// change the family: the edge for all three.
		if !client.Addr().Is4() && kind == recvtest.KindEBPF {
			edge := "inet/" + back.String() + ":"
			ok := strings.HasPrefix(f["accept"], edge) && strings.HasPrefix(f["peer"], edge) && strings.HasPrefix(f["peer4"], edge)
			return ok, fmt.Sprintf(" (want accept=peer=peer4=%sPORT: the edge)", edge)
		}
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
// the origin's C servers, with this program's own eBPF sender (in this
// program's cgroup): the option goes out (the sender says so) and the
// origin must ignore and count it.
func (s *suiteRun) rogue() error {
	c, l := s.c, s.l
	sender, err := toasend.Open(toasend.Options{CgroupPath: s.cg.self})
	if err != nil {
		return fmt.Errorf("this program's TOA sender: %w", err)
	}
	defer sender.Close()
	before, err := s.r.Counters()
	if err != nil {
		return err
	}
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
	after, err := s.r.Counters()
	if err != nil {
		return err
	}
	d := delta(after, before)
	c.check(d["syn_recv_sock_untrusted"] == 2 && d["syn_recv_sock_toa"] == 0, "untrusted counted",
		"syn_recv_sock_untrusted +%d (want +2), syn_recv_sock_toa +%d (want 0)", d["syn_recv_sock_untrusted"], d["syn_recv_sock_toa"])
	return nil
}

// freedBeforeLoad: every connection so far is closed (the servers close
// after answering, the clients after reading), so the receiver must have
// freed every entry it made: ip6_address_alloc == ip6_address_free, once
// the last closes have reached the origin (waited for, at most 10 s).
func (s *suiteRun) freedBeforeLoad() {
	var m map[string]uint64
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		m, err = s.r.Counters()
		if (err == nil && m["ip6_address_alloc"] == m["ip6_address_free"]) || time.Now().After(deadline) {
			break
		}
	}
	s.c.check(err == nil && m["ip6_address_alloc"] == m["ip6_address_free"] && m["ip6_address_alloc"] > 0, "freed before load",
		"ip6_address_alloc %d, ip6_address_free %d with every connection so far closed (%v)", m["ip6_address_alloc"], m["ip6_address_free"], err)
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
