//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/realip/realip/edge/toasend"
	"github.com/realip/realip/toactl"
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

func suite(c *checker, cfg *config) error {
	if err := raiseFiles(1 << 16); err != nil {
		return err
	}
	l, err := newLab()
	if err != nil {
		return err
	}
	defer l.Close()
	c.check(true, "lab", "client %s %s, edge %s %s | %s %s, origin %s %s | %s %s, rogue %s %s",
		client4, client6, front4, front6, back4, back6, origin4, origin6, oside4, oside6, rogue4, rogue6)

	// The origin's module trusts the edge's origin-facing addresses only.
	if err := loadModule(cfg.module, "trusted="+trusted()); err != nil {
		return err
	}
	b, _ := os.ReadFile("/sys/module/toa/parameters/trusted")
	c.check(strings.Contains(string(b), back4.Addr().String()) && strings.Contains(string(b), back6.Addr().String()),
		"module", "toa.ko loaded, trusted %s", strings.TrimSpace(string(b)))

	// The edge, in its own cgroup with its TOA sender attached there.
	edgeCG, err := cgroup("realip-edge")
	if err != nil {
		return err
	}
	rulesPath := "/tmp/edge-rules.txt"
	if err := os.WriteFile(rulesPath, []byte(rulesText()), 0o644); err != nil {
		return err
	}
	edge, err := start(l.edge, "realip-edge", edgeCG, cfg.edge, "-rules", rulesPath,
		"-toa-cgroup", edgeCG, "-metrics", "127.0.0.1:9300", "-drain-timeout", "1s",
		// One health check per origin, at start, before anything is
		// counted: periodic ones would reach the origins without the
		// option and blur the exact counter checks below.
		"-check-every", "1h")
	if err != nil {
		return err
	}
	defer edge.stop(5 * time.Second)
	if err := edge.waitFor(`msg="edge: rules applied"`, 60*time.Second); err != nil {
		return err
	}
	c.check(true, "edge", "realip-edge running with %d toa rules, sender in %s", len(services)+2, edgeCG)

	// The origin's programs.
	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.stop(2 * time.Second)
		}
	}()
	for _, s := range []struct {
		name, ready string
		argv        []string
	}{
		{"toa_server4", "listening", []string{cfg.c4, "10004"}},
		{"toa_server6", "listening", []string{cfg.c6, "10006"}},
		{"whoami", "whoami: tcp", []string{cfg.whoami, "-tcp", ":8080", "-proto", "toa", "-trust", trusted()}},
	} {
		p, err := start(l.origin, s.name, "", s.argv...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		if err := p.waitFor(s.ready, 20*time.Second); err != nil {
			return err
		}
	}
	goLn, err := listen(l.origin, "[::]:9000")
	if err != nil {
		return err
	}
	defer goLn.Close()
	go serveRemoteAddr(goLn)

	functional(c, l, "")
	// SYN cookies on the origin for every connection: no SYN is kept, the
	// handshake ACK is the only segment the module can read the option from.
	if err := sysctl(l.origin, "net.ipv4.tcp_syncookies", "2"); err != nil {
		return err
	}
	before, err := netstat(l.origin)
	if err != nil {
		return err
	}
	n, served := functional(c, l, " (syncookies=2)")
	after, _ := netstat(l.origin)
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
	c.check(served == n && sent >= uint64(n) && recv >= uint64(n),
		"syncookies", "origin sent %d and accepted %d SYN cookies for %d connections, %d answered with the client (want all, and at least %d each; stray cookies failed: %d)",
		sent, recv, n, served, n, after["SyncookiesFailed"]-before["SyncookiesFailed"])
	if err := sysctl(l.origin, "net.ipv4.tcp_syncookies", "1"); err != nil {
		return err
	}

	if err := rogue(c, l); err != nil {
		return err
	}
	total, err := loadAndUnload(c, l, cfg)
	if err != nil {
		return err
	}
	checkEdgeMetrics(c, l, edge, total+2*n)
	return nil
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

// waitGrow waits 500 ms, then until n has grown beyond from or 10 s have
// passed.
func waitGrow(n *atomic.Int64, from int64) {
	time.Sleep(500 * time.Millisecond)
	for deadline := time.Now().Add(10 * time.Second); n.Load() <= from && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
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

// The load phase's protocol is client-speaks-first by default: the client
// sends its own address right after connect() and the origin answers "ok",
// so the edge relays that data right behind its handshake ACK. On veth, the
// ACK (sent from the softirq that took the SYN-ACK) and the data (sent by
// the edge's writing thread) enter different CPUs' backlogs, so the origin
// may complete the handshake from the data segment before the ACK arrives.
// realip's sender therefore writes the option on the first data segment as
// well (edge/toasend); before it did, about one connection in a few hundred
// showed the edge here. -server-first makes the origin greet first instead,
// so that only the ACK can complete the handshake.

// A connection of the load phase, as the origin holds it.
type held struct {
	conn  *net.TCPConn
	fd    int
	want  netip.AddrPort // the client, as the client saw its own address
	proxy netip.AddrPort // the edge's end, from the module's entry
}

type loadServer struct {
	ln          *net.TCPListener
	clientFirst bool // the client writes first; else the server greets first
	mu          sync.Mutex
	held        []*held
	bad         atomic.Int64
	firstBad    atomic.Value
	churn       atomic.Int64
}

func (s *loadServer) serve() {
	for {
		conn, err := s.ln.AcceptTCP()
		if err != nil {
			return
		}
		go s.handle(conn)
	}
}

func (s *loadServer) handle(conn *net.TCPConn) {
	if !s.clientFirst {
		io.WriteString(conn, "hello\n")
	}
	line, err := firstLine(conn, 30*time.Second)
	if err != nil {
		conn.Close()
		return
	}
	if strings.HasPrefix(line, "churn ") {
		s.churn.Add(1)
		io.WriteString(conn, "ok\n")
		io.Copy(io.Discard, conn)
		conn.Close()
		return
	}
	want, err := netip.ParseAddrPort(line)
	got := addrPort(conn.RemoteAddr())
	if err != nil || got != want {
		s.fail(fmt.Sprintf("accept() gave %s, the client is %q", got, line))
	}
	s.mu.Lock()
	s.held = append(s.held, &held{conn: conn, fd: fdOf(conn), want: want})
	s.mu.Unlock()
	io.WriteString(conn, "ok\n")
}

func (s *loadServer) fail(msg string) {
	if s.bad.Add(1) == 1 {
		s.firstBad.Store(msg)
	}
}

func (s *loadServer) snapshot() []*held {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*held(nil), s.held...)
}

// getpeernameThreads runs n OS threads that call getpeername() on random
// held connections until stop is closed. Strict: the answer must be the
// client. Not strict (during the unload): the client or the edge.
type peerCheckers struct {
	calls, bad atomic.Int64
	strict     atomic.Bool
	firstBad   atomic.Value
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startCheckers(s *loadServer, n int) *peerCheckers {
	p := &peerCheckers{stop: make(chan struct{})}
	p.strict.Store(true)
	for i := range n {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			runtime.LockOSThread() // a thread of its own, truly concurrent
			defer runtime.UnlockOSThread()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			var list []*held
			for {
				select {
				case <-p.stop:
					return
				default:
				}
				if len(list) < 64 || rng.IntN(64) == 0 {
					list = s.snapshot()
				}
				if len(list) == 0 {
					time.Sleep(time.Millisecond)
					continue
				}
				for range 32 {
					h := list[rng.IntN(len(list))]
					got, err := peerOf(h.fd)
					p.calls.Add(1)
					ok := err == nil && got == h.want
					if !ok && !p.strict.Load() && err == nil && h.proxy.IsValid() {
						ok = got == h.proxy
					}
					if !ok && p.bad.Add(1) == 1 {
						p.firstBad.Store(fmt.Sprintf("getpeername on the connection of %s gave %s (%v)", h.want, got, err))
					}
					// getsockname() passes through the module's getname to
					// the kernel's, which may sleep (lock_sock): the unload
					// must wait for such calls too.
					if local, err := localOf(h.fd); err != nil || local.Port() != loadOriginPort {
						if p.bad.Add(1) == 1 {
							p.firstBad.Store(fmt.Sprintf("getsockname on the connection of %s gave %s (%v)", h.want, local, err))
						}
					}
				}
				// Paced: on two emulated CPUs, unpaced threads would starve
				// the clients and the edge.
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	return p
}

func (p *peerCheckers) halt() {
	close(p.stop)
	p.wg.Wait()
}

func (p *peerCheckers) why() string {
	if v, ok := p.firstBad.Load().(string); ok {
		return "; first: " + v
	}
	return ""
}

// loadAndUnload is the load phase and the unload under load. It returns
// how many connections went through the edge.
func loadAndUnload(c *checker, l *lab, cfg *config) (int, error) {
	ln, err := listen(l.origin, fmt.Sprintf("[::]:%d", loadOriginPort))
	if err != nil {
		return 0, err
	}
	srv := &loadServer{ln: ln, clientFirst: cfg.clientFirst}
	go srv.serve()
	defer func() {
		ln.Close()
		for _, h := range srv.snapshot() {
			h.conn.Close()
		}
	}()

	checkers := startCheckers(srv, cfg.checkers)
	defer func() {
		select {
		case <-checkers.stop:
		default:
			checkers.halt()
		}
	}()

	targets := []netip.AddrPort{
		netip.AddrPortFrom(front4.Addr(), loadPort4), netip.AddrPortFrom(front4.Addr(), loadPort6),
		netip.AddrPortFrom(front6.Addr(), loadPort4), netip.AddrPortFrom(front6.Addr(), loadPort6),
	}
	var (
		mu      sync.Mutex
		clients []net.Conn
		failed  atomic.Int64
		first   atomic.Value
		wg      sync.WaitGroup
	)
	defer func() {
		for _, conn := range clients {
			conn.Close()
		}
	}()
	statsBefore := toaStats()
	originBefore, _ := netstat(l.origin)
	edgeBefore, _ := netstat(l.edge)
	t0 := time.Now()
	per := (cfg.conns + cfg.clients - 1) / cfg.clients
	for w := range cfg.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The whole client runs on one thread inside the client host.
			l.client.Do(func() error {
				d := net.Dialer{Timeout: 20 * time.Second}
				for j := range per {
					if w*per+j >= cfg.conns {
						break
					}
					to := targets[(w+j)%len(targets)]
					conn, err := d.Dial("tcp", to.String())
					if err == nil && !cfg.clientFirst {
						err = expectLine(conn, "hello")
					}
					if err == nil {
						_, err = fmt.Fprintf(conn, "%s\n", addrPort(conn.LocalAddr()))
						if err == nil {
							var line string
							line, err = firstLine(conn, 30*time.Second)
							if err == nil && line != "ok" {
								err = fmt.Errorf("answer %q", line)
							}
						}
						if err != nil {
							conn.Close()
						}
					}
					if err != nil {
						if failed.Add(1) == 1 {
							first.Store(fmt.Sprintf("%s: %v", to, err))
						}
						continue
					}
					mu.Lock()
					clients = append(clients, conn)
					mu.Unlock()
				}
				return nil
			})
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	why := ""
	if v, ok := first.Load().(string); ok {
		why = "; first failure: " + v
	}
	// Each server handler registers before it answers "ok": all are held.
	hs := srv.snapshot()
	c.check(failed.Load() == 0 && len(hs) == cfg.conns, "load",
		"%d connections from %d concurrent clients through the edge in %v (%.0f/s), %d held by the origin, %d failed%s",
		len(clients), cfg.clients, elapsed.Round(time.Millisecond), float64(len(clients))/elapsed.Seconds(), len(hs), failed.Load(), why)
	whyBad := ""
	if v, ok := srv.firstBad.Load().(string); ok {
		whyBad = "; first: " + v
	}
	c.check(srv.bad.Load() == 0, "load: accept()", "%d of %d connections accepted with a wrong peer%s", srv.bad.Load(), len(hs), whyBad)
	c.check(checkers.calls.Load() > 0 && checkers.bad.Load() == 0, "load: concurrent getpeername()",
		"%d threads, %d calls during the load, %d wrong%s", cfg.checkers, checkers.calls.Load(), checkers.bad.Load(), checkers.why())

	originAfter, _ := netstat(l.origin)
	edgeAfter, _ := netstat(l.edge)
	fmt.Printf("info load: toa_stats %s\n", fmtDelta(delta(toaStats(), statsBefore)))
	fmt.Printf("info load: origin TcpExt %s\n", netstatDelta(originAfter, originBefore))
	fmt.Printf("info load: edge TcpExt %s\n", netstatDelta(edgeAfter, edgeBefore))

	// Every connection, once more, and against the module's entries.
	wrong := 0
	var firstWrong string
	for _, h := range hs {
		if got, err := peerOf(h.fd); err != nil || got != h.want {
			if wrong++; wrong == 1 {
				firstWrong = fmt.Sprintf("; first: %s gave %s (%v)", h.want, got, err)
			}
		}
	}
	c.check(wrong == 0, "load: getpeername() on every connection", "%d of %d wrong%s", wrong, len(hs), firstWrong)
	// The module answers about the namespace of the asking socket: the
	// origin's entries from inside the origin, none from the edge's.
	var ctl *toactl.Client
	if err := l.origin.Do(func() (err error) { ctl, err = toactl.Dial(); return err }); err != nil {
		return len(hs), err
	}
	entries, err := ctl.Entries()
	_, live, serr := ctl.Stats()
	ctl.Close()
	if err != nil || serr != nil {
		return len(hs), errors.Join(err, serr)
	}
	var other []toactl.Entry
	oerr := l.edge.Do(func() error {
		ectl, err := toactl.Dial()
		if err != nil {
			return err
		}
		defer ectl.Close()
		other, err = ectl.Entries()
		return err
	})
	c.check(oerr == nil && len(other) == 0, "load: netlink entries per namespace",
		"the edge's namespace sees %d of the origin's %d entries (%v)", len(other), len(entries), oerr)
	byConn := map[[2]netip.AddrPort]toactl.Entry{}
	for _, e := range entries {
		byConn[[2]netip.AddrPort{e.Local, e.Client}] = e
	}
	missing := 0
	for _, h := range hs {
		e, ok := byConn[[2]netip.AddrPort{addrPort(h.conn.LocalAddr()), h.want}]
		back := back6.Addr()
		if addrPort(h.conn.LocalAddr()).Addr().Is4() {
			back = back4.Addr()
		}
		if !ok || e.Proxy.Addr() != back {
			missing++
			continue
		}
		h.proxy = e.Proxy
	}
	alloc, _ := toaStat("ip6_address_alloc")
	free, _ := toaStat("ip6_address_free")
	c.check(missing == 0 && live >= uint64(len(hs)) && alloc-free == live, "load: netlink entries",
		"%d live entries (toa_stats: %d allocated - %d freed = %d), %d of %d connections without an entry naming the edge",
		live, alloc, free, alloc-free, missing, len(hs))

	// Unload with every connection open, getpeername() running on all
	// threads and new connections arriving.
	checkers.strict.Store(false)
	churnStop := make(chan struct{})
	var churnOK, churnFail atomic.Int64
	var churnWG sync.WaitGroup
	churnWG.Add(1)
	go func() {
		defer churnWG.Done()
		l.client.Do(func() error { churn(targets, cfg.clientFirst, churnStop, &churnOK, &churnFail); return nil })
	}()
	// New connections before, during and after the unload: at least one
	// made before it starts and one after it ends, however slowly the guest
	// runs (at least 500 ms each way, at most 10 s).
	waitGrow(&churnOK, 0)
	callsBefore := checkers.calls.Load()
	t1 := time.Now()
	uerr := unloadModule()
	took := time.Since(t1)
	waitGrow(&churnOK, churnOK.Load())
	close(churnStop)
	churnWG.Wait()
	checkers.halt()
	c.check(uerr == nil, "unload", "delete_module(toa) with %d connections open took %v (%v)", len(hs), took.Round(time.Microsecond), uerr)
	c.check(churnFail.Load() == 0 && churnOK.Load() > 0, "unload: new connections", "%d made during the unload, %d failed", churnOK.Load(), churnFail.Load())
	c.check(checkers.bad.Load() == 0 && checkers.calls.Load() > callsBefore, "unload: concurrent getpeername()",
		"%d calls around the unload, each the client or the edge; %d other answers%s",
		checkers.calls.Load()-callsBefore, checkers.bad.Load(), checkers.why())
	if uerr != nil {
		return len(hs), nil
	}
	freed, allocated, ok := unloadLine()
	c.check(ok && freed == allocated && allocated >= uint64(len(hs)), "unload: freed",
		"kernel log: %d of %d entries freed (ip6_address_free == ip6_address_alloc)", freed, allocated)
	_, statErr := os.Stat("/proc/net/toa_stats")
	_, dialErr := toactl.Dial()
	c.check(errors.Is(statErr, os.ErrNotExist) && errors.Is(dialErr, toactl.ErrNotLoaded), "unload: gone",
		"/proc/net/toa_stats: %v; netlink: %v", statErr, dialErr)
	wrong, firstWrong = 0, ""
	for _, h := range hs {
		if got, err := peerOf(h.fd); err != nil || got != h.proxy {
			if wrong++; wrong == 1 {
				firstWrong = fmt.Sprintf("; first: %s gave %s (%v), want %s", h.want, got, err, h.proxy)
			}
		}
	}
	c.check(wrong == 0, "unload: hooks gone", "getpeername() on the %d still-open connections answers the edge again; %d do not%s",
		len(hs), wrong, firstWrong)
	// The connections still carry data after the unload.
	if len(clients) > 0 {
		conn := clients[len(clients)/2]
		_, werr := io.WriteString(conn, "still here\n")
		c.check(werr == nil, "unload: connections alive", "write after the unload: %v", werr)
	}
	return len(hs) + int(churnOK.Load()), nil
}

// expectLine reads one line and wants it to be want.
func expectLine(conn net.Conn, want string) error {
	line, err := firstLine(conn, 30*time.Second)
	if err == nil && line != want {
		err = fmt.Errorf("answer %q, want %q", line, want)
	}
	return err
}

// churn keeps opening short connections until stop is closed.
func churn(targets []netip.AddrPort, clientFirst bool, stop chan struct{}, ok, fail *atomic.Int64) {
	d := net.Dialer{Timeout: 10 * time.Second}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		to := targets[i%len(targets)]
		conn, err := d.Dial("tcp", to.String())
		if err == nil && !clientFirst {
			err = expectLine(conn, "hello")
		}
		if err == nil {
			_, err = fmt.Fprintf(conn, "churn %s\n", addrPort(conn.LocalAddr()))
			if err == nil {
				var line string
				line, err = firstLine(conn, 10*time.Second)
				if err == nil && line != "ok" {
					err = fmt.Errorf("answer %q", line)
				}
			}
			conn.Close()
		}
		if err != nil {
			fail.Add(1)
			fmt.Printf("churn: %s: %v\n", to, err)
			continue
		}
		ok.Add(1)
	}
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
