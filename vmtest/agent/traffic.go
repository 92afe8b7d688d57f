//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"github.com/realip/realip/agent"
	"github.com/realip/realip/edge/toasend"
	"github.com/realip/realip/vmtest/vmnet"
)

// The guest's own network namespace is the origin (where the agent and the
// module run); a second namespace is the edge, joined by a veth pair. The
// edge holds an address in each of three prefixes, so one edge can send
// TOA from a source the module trusts and from one it does not:
// 198.51.100.0/24 and 2001:db8:1::/64 are trusted by the first
// configuration, 203.0.113.0/24 by the second (after SIGHUP).
const (
	originDev = "agv0" // in the guest's namespace
	edgeDev   = "agv1" // in the edge's namespace
)

var (
	originAddrs = []netip.Prefix{
		netip.MustParsePrefix("198.51.100.2/24"),
		netip.MustParsePrefix("203.0.113.2/24"),
		netip.MustParsePrefix("2001:db8:1::2/64"),
	}
	edgeAddrs = []netip.Prefix{
		netip.MustParsePrefix("198.51.100.1/24"),
		netip.MustParsePrefix("203.0.113.1/24"),
		netip.MustParsePrefix("2001:db8:1::1/64"),
	}
	edgeA  = edgeAddrs[0].Addr() // trusted by the first configuration
	edgeB  = edgeAddrs[1].Addr() // trusted by the second
	edgeV6 = edgeAddrs[2].Addr() // trusted by the first only
)

// lab is the edge namespace, the origin's listeners and the eBPF TOA
// sender (realip-edge's, edge/toasend) that writes the options.
type lab struct {
	edge     *vmnet.NS
	sender   *toasend.Sender
	ln4, ln6 net.Listener // origin: 0.0.0.0 and [::] (IPv6 only), any port
}

func newLab() (*lab, error) {
	l := &lab{}
	var err error
	if l.edge, err = vmnet.NewNS(); err != nil {
		return nil, err
	}
	if err := vmnet.AddVeth(originDev, edgeDev, l.edge); err != nil {
		l.close()
		return nil, err
	}
	if err := configureLink(nil, originDev, originAddrs); err != nil {
		l.close()
		return nil, err
	}
	if err := configureLink(l.edge, edgeDev, edgeAddrs); err != nil {
		l.close()
		return nil, err
	}
	// The guest mounts cgroup2 at /sys/fs/cgroup and runs everything in
	// its root, so the program sees the sockets of every namespace.
	if l.sender, err = toasend.Open(toasend.Options{CgroupPath: "/sys/fs/cgroup"}); err != nil {
		l.close()
		return nil, fmt.Errorf("TOA sender: %w", err)
	}
	if l.ln4, err = net.Listen("tcp4", "0.0.0.0:0"); err != nil {
		l.close()
		return nil, err
	}
	if l.ln6, err = net.Listen("tcp6", "[::]:0"); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

func configureLink(ns *vmnet.NS, dev string, addrs []netip.Prefix) error {
	return ns.Do(func() error {
		if err := vmnet.LinkUp("lo"); err != nil {
			return err
		}
		for _, p := range addrs {
			if err := vmnet.AddAddr(dev, p); err != nil {
				return err
			}
		}
		return vmnet.LinkUp(dev)
	})
}

func (l *lab) close() {
	if l.ln4 != nil {
		l.ln4.Close()
	}
	if l.ln6 != nil {
		l.ln6.Close()
	}
	if l.sender != nil {
		l.sender.Close()
	}
	vmnet.DelLink(originDev) // takes the peer with it
	if l.edge != nil {
		l.edge.Close()
	}
}

// toaConn is one connection from the edge namespace carrying a TOA option.
type toaConn struct {
	out, in net.Conn
	client  netip.AddrPort // what the option says
	proxy   netip.AddrPort // the edge's real source address and port
	local   netip.AddrPort // the origin's address
	accept  netip.AddrPort // what accept() reported
	peer    netip.AddrPort // what getpeername() reported
}

func (c *toaConn) close() {
	c.out.Close()
	c.in.Close()
}

// entry is the module's entry this connection should have, as status
// prints it.
func (c *toaConn) entry() agent.Entry {
	return agent.Entry{Local: c.local.String(), Proxy: c.proxy.String(), Client: c.client.String()}
}

// dial connects from src in the edge namespace to the origin's listener
// of src's family with a TOA option saying client, checks that the SYN and
// the handshake ACK carried it, and accepts the connection.
func (l *lab) dial(src netip.Addr, client netip.AddrPort) (*toaConn, error) {
	ln, dst := l.ln4, originAddrs[0].Addr()
	switch src {
	case edgeB:
		dst = originAddrs[1].Addr()
	case edgeV6:
		ln, dst = l.ln6, originAddrs[2].Addr()
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	var out net.Conn
	err := l.edge.Do(func() (err error) {
		d := net.Dialer{
			LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)),
			Control:   l.sender.Control(client),
			Timeout:   5 * time.Second,
		}
		out, err = d.Dial("tcp", netip.AddrPortFrom(dst, port).String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", dst, src, err)
	}
	syn, ack, err := l.sender.Carried(out.(*net.TCPConn))
	if err != nil || !syn || !ack {
		out.Close()
		return nil, fmt.Errorf("the TOA option %s was not on the handshake from %s (syn %v, ack %v, %v)", client, src, syn, ack, err)
	}
	in, err := acceptWithin(ln, 5*time.Second)
	if err != nil {
		out.Close()
		return nil, err
	}
	c := &toaConn{
		out: out, in: in, client: client,
		proxy:  unmapped(out.LocalAddr()),
		local:  unmapped(in.LocalAddr()),
		accept: unmapped(in.RemoteAddr()),
	}
	if c.peer, err = getpeername(in); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func unmapped(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// getpeername asks the kernel directly, where the module answers.
func getpeername(c net.Conn) (netip.AddrPort, error) {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var sa unix.Sockaddr
	var gerr error
	if err := rc.Control(func(fd uintptr) { sa, gerr = unix.Getpeername(int(fd)) }); err != nil {
		return netip.AddrPort{}, err
	}
	if gerr != nil {
		return netip.AddrPort{}, fmt.Errorf("getpeername: %w", gerr)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port)), nil
	}
	return netip.AddrPort{}, fmt.Errorf("getpeername: unexpected %T", sa)
}

// acceptWithin bounds Accept, so a lost connection fails the check
// instead of hanging the scenario.
func acceptWithin(ln net.Listener, d time.Duration) (net.Conn, error) {
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(d))
	defer ln.(*net.TCPListener).SetDeadline(time.Time{})
	c, err := ln.Accept()
	if err != nil {
		return nil, fmt.Errorf("accept on %s: %w", ln.Addr(), err)
	}
	return c, nil
}

// outcome is what the module should make of a connection's option.
type outcome int

const (
	honoured  outcome = iota // trusted source, accepted kind: the client is reported
	untrusted                // accepted kind from an untrusted source: ignored and counted
	otherKind                // a kind the module is not configured to read: not TOA at all
)

func (o outcome) String() string {
	return [...]string{"honoured", "ignored (untrusted)", "not read (kind not configured)"}[o]
}

// trustCase is one connection of a traffic round. The sender writes kind
// 200 for an IPv4 client and 253 for an IPv6 one (Tencent's kinds).
type trustCase struct {
	src    netip.Addr
	client netip.AddrPort
	want   outcome
}

// check tells whether accept() and getpeername() both report the option's
// client (honoured) or both the edge's real address (otherwise), and says
// what they reported.
func (c *toaConn) check(o outcome) (bool, string) {
	want := c.proxy
	if o == honoured {
		want = c.client
	}
	return c.accept == want && c.peer == want,
		fmt.Sprintf("%s -> %s option %s: accept %s, getpeername %s", c.proxy, c.local, c.client, c.accept, c.peer)
}

// metricValues parses a text exposition into series -> value, a series
// being the name followed by its labels as Prometheus prints them
// (`name` or `name{a="b"}`).
func metricValues(body string) (map[string]float64, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parsing the exposition: %w", err)
	}
	out := make(map[string]float64)
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := name
			if len(m.GetLabel()) > 0 {
				var ls []string
				for _, lp := range m.GetLabel() {
					ls = append(ls, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
				}
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Untyped != nil:
				out[key] = m.Untyped.GetValue()
			}
		}
	}
	return out, nil
}

// scrapeValues scrapes the agent's /metrics and parses it.
func scrapeValues() (map[string]float64, string, error) {
	body, err := scrape()
	if err != nil {
		return nil, "", err
	}
	v, err := metricValues(body)
	return v, body, err
}

// Metrics the traffic rounds follow.
const (
	mUntrusted = "realip_toa_syn_recv_sock_untrusted_total"
	mTOA       = "realip_toa_syn_recv_sock_toa_total"
	mGetnameOK = "realip_toa_getname_toa_ok_total"
	mInUse     = "realip_toa_ip6_addresses_in_use"
)

// statusEntries runs `status -json` and `status` and returns the entries
// of each; an error if they disagree or either failed.
func (s *scenario) statusEntries() ([]agent.Entry, uint64, string, error) {
	code, out, errs := s.agentCmd("status", "-json")
	var st agent.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
		return nil, 0, "", fmt.Errorf("status -json: exit %d, %v: %s %s", code, err, out, errs)
	}
	code, text, errs := s.agentCmd("status")
	if code != 0 {
		return nil, 0, "", fmt.Errorf("status: exit %d: %s %s", code, text, errs)
	}
	rows := tableRows(text)
	if len(rows) != len(st.Entries) || uint64(len(st.Entries)) != st.LiveEntries {
		return nil, 0, text, fmt.Errorf("status lists %d entries, status -json %d (live_entries %d):\n%s\n%s", len(rows), len(st.Entries), st.LiveEntries, text, out)
	}
	for _, e := range st.Entries {
		if !slices.Contains(rows, e) {
			return nil, 0, text, fmt.Errorf("status -json entry %+v is not in the status table:\n%s", e, text)
		}
	}
	return st.Entries, st.LiveEntries, text, nil
}

// tableRows reads the LOCAL PROXY CLIENT table of `realip-agent status`.
func tableRows(text string) []agent.Entry {
	var rows []agent.Entry
	in := false
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if slices.Equal(f, []string{"LOCAL", "PROXY", "CLIENT"}) {
			in = true
			continue
		}
		if in && len(f) == 3 {
			rows = append(rows, agent.Entry{Local: f[0], Proxy: f[1], Client: f[2]})
		}
	}
	return rows
}

// trafficRound opens the connections of cases while the module holds the
// configuration named by round, and checks, with every connection open:
// each option is honoured, or ignored (accept and getpeername give the
// real peer), as the case says; the agent's metrics moved by exactly the
// number of each (untrusted options, honoured options, entries in use;
// getpeername answers at least); `status` and `status -json` list an
// entry (local, proxy, client) for each honoured connection and none for
// the others. Then it closes them and checks the entries are freed.
func (s *scenario) trafficRound(l *lab, round string, cases []trustCase) {
	r := &trafficRun{s: s, round: round}
	if !r.baseline() {
		return
	}
	defer r.closeConns()
	if !r.open(l, cases) {
		return
	}
	r.checkMetrics()
	r.checkStatus()
	r.closeConns()
	r.checkFreed()
}

// trafficRun is the state of one traffic round.
type trafficRun struct {
	s     *scenario
	round string

	before     map[string]float64 // the agent's metrics before the round
	entsBefore []agent.Entry      // the module's entries before the round
	conns      []*toaConn

	nTrusted, nUntrusted, nOther int
	want, notWant                []agent.Entry // entries of honoured connections, of the others
}

// name is the name of one of the round's checks.
func (r *trafficRun) name(check string) string { return "traffic-" + r.round + "-" + check }

// baseline reads the metrics and entries the round's checks compare with.
func (r *trafficRun) baseline() bool {
	var err error
	if r.before, _, err = scrapeValues(); err != nil {
		fail(r.name("setup"), "metrics before: %v", err)
		return false
	}
	if r.entsBefore, _, _, err = r.s.statusEntries(); err != nil {
		fail(r.name("setup"), "%v", err)
		return false
	}
	return true
}

// open dials the connections of cases and checks what accept() and
// getpeername() report for each; false if one could not be opened.
func (r *trafficRun) open(l *lab, cases []trustCase) bool {
	var seen []string
	good := true
	for _, tc := range cases {
		c, err := l.dial(tc.src, tc.client)
		if err != nil {
			fail(r.name("dial"), "%v", err)
			return false
		}
		r.conns = append(r.conns, c)
		ok, what := c.check(tc.want)
		if !ok {
			good = false
			fail(r.name("getpeername"), "want the option %s: %s", tc.want, what)
		}
		seen = append(seen, tc.want.String()+": "+what)
		switch tc.want {
		case honoured:
			r.nTrusted++
			r.want = append(r.want, c.entry())
		case untrusted:
			r.nUntrusted++
			r.notWant = append(r.notWant, c.entry())
		case otherKind:
			r.nOther++
			r.notWant = append(r.notWant, c.entry())
		}
	}
	if good {
		pass(r.name("getpeername"), "%d options honoured, %d from untrusted sources ignored, %d of a kind not configured not read (the SYN and ACK of each carried it):\n    %s",
			r.nTrusted, r.nUntrusted, r.nOther, strings.Join(seen, "\n    "))
	}
	return true
}

func (r *trafficRun) closeConns() {
	for _, c := range r.conns {
		c.close()
	}
	r.conns = nil
}

// checkMetrics checks the agent's metrics moved by the round's connections.
func (r *trafficRun) checkMetrics() {
	after, body, err := scrapeValues()
	if err != nil {
		fail(r.name("metrics"), "%v", err)
		return
	}
	var errs []error
	for _, d := range []struct {
		metric string
		want   int
	}{
		{mUntrusted, r.nUntrusted},
		{mTOA, r.nTrusted},
		{mInUse, r.nTrusted},
	} {
		b, okb := r.before[d.metric]
		a, oka := after[d.metric]
		if !okb || !oka {
			errs = append(errs, fmt.Errorf("%s missing from the scrape", d.metric))
		} else if a-b != float64(d.want) {
			errs = append(errs, fmt.Errorf("%s moved from %v to %v, want +%d", d.metric, b, a, d.want))
		}
	}
	// accept() and getpeername() of each honoured connection, at least.
	if got := after[mGetnameOK] - r.before[mGetnameOK]; got < float64(2*r.nTrusted) {
		errs = append(errs, fmt.Errorf("%s moved by %v, want at least %d", mGetnameOK, got, 2*r.nTrusted))
	}
	if err := errors.Join(errs...); err != nil {
		fail(r.name("metrics"), "%v\nscrape:\n%s", err, body)
	} else {
		pass(r.name("metrics"), "/metrics: %s +%d, %s +%d, %s +%d",
			mUntrusted, r.nUntrusted, mTOA, r.nTrusted, mInUse, r.nTrusted)
	}
}

// checkStatus checks `status` and `status -json` list an entry for each
// honoured connection and none for the others.
func (r *trafficRun) checkStatus() {
	ents, live, text, err := r.s.statusEntries()
	switch {
	case err != nil:
		fail(r.name("status"), "%v", err)
		return
	case len(ents) != len(r.entsBefore)+r.nTrusted:
		fail(r.name("status"), "%d entries (live %d), want %d:\n%s", len(ents), live, len(r.entsBefore)+r.nTrusted, text)
		return
	}
	var errs []error
	for _, e := range r.want {
		if !slices.Contains(ents, e) {
			errs = append(errs, fmt.Errorf("no entry %+v", e))
		}
	}
	for _, e := range r.notWant {
		for _, got := range ents {
			if got.Local == e.Local && got.Proxy == e.Proxy {
				errs = append(errs, fmt.Errorf("an entry %+v for an untrusted connection", got))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		fail(r.name("status"), "%v; status:\n%s", err, text)
	} else {
		pass(r.name("status"), "status and status -json list the %d honoured connections (local, proxy, client), none of the %d others:\n%s",
			r.nTrusted, r.nUntrusted+r.nOther, indent(text))
	}
}

// checkFreed checks, once the connections are closed, that their entries
// are gone and the entries-in-use gauge is back where it was.
func (r *trafficRun) checkFreed() {
	var left []agent.Entry
	ok := waitFor(10*time.Second, func() bool {
		ents, _, _, err := r.s.statusEntries()
		if err != nil {
			return false
		}
		left = nil
		for _, e := range r.want {
			if slices.Contains(ents, e) {
				left = append(left, e)
			}
		}
		return len(left) == 0
	})
	end, _, err := scrapeValues()
	switch {
	case !ok:
		fail(r.name("freed"), "entries still listed 10s after close: %+v", left)
	case err != nil:
		fail(r.name("freed"), "%v", err)
	case end[mInUse] != r.before[mInUse]:
		fail(r.name("freed"), "%s is %v after close, was %v before", mInUse, end[mInUse], r.before[mInUse])
	default:
		pass(r.name("freed"), "entries gone after close, %s back to %v", mInUse, end[mInUse])
	}
}

// lintScrape runs Prometheus' linter (what `promtool check metrics`
// runs) on the agent's real exposition.
func lintScrape() {
	body, err := scrape()
	if err != nil {
		fail("metrics-lint", "%v", err)
		return
	}
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	switch {
	case err != nil:
		fail("metrics-lint", "%v", err)
	case len(problems) > 0:
		var b strings.Builder
		for _, p := range problems {
			fmt.Fprintf(&b, "\n    %s: %s", p.Metric, p.Text)
		}
		fail("metrics-lint", "promlint:%s", b.String())
	default:
		pass("metrics-lint", "promlint (promtool check metrics) finds no problem in %d bytes", len(body))
	}
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
