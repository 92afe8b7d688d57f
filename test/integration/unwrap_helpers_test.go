//go:build linux

package integration

// Helpers of the unwrap tests (issue 14): the real `realip-agent unwrap`
// in the origin's namespace, its configuration file, its metrics and log,
// the routing it installs, and the servers behind it: unmodified ones
// (python3's http.server, nginx, a python3 UDP echo server) and plain Go
// servers that record every peer they see.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/realip/realip/internal/netns"
	"github.com/realip/realip/internal/testenv"
)

// unwrapMetricsAddr is where the agent serves /metrics, on the loopback of
// the origin's namespace (every lab has its own).
const unwrapMetricsAddr = "127.0.0.1:9788"

// The routing table of tproute's defaults: what the agent's rules look up.
const unwrapTable = "lookup 7714"

// Log messages of realip-agent (slog text handler) the tests wait for.
const (
	logAgentServing  = `msg="serving metrics"`
	logAgentReloaded = `msg="configuration reloaded"`
	logAgentRefused  = `msg="configuration not applied; the previous one stays in force"`
)

var agentBin lazyPath

// agentBinary builds cmd/realip-agent once per test binary run.
func agentBinary(t *testing.T) string {
	t.Helper()
	return moduleBinary(t, &agentBin, "./cmd/realip-agent", "realip-agent")
}

// unwrapEntry is one entry of the agent's unwrap list, as the file spells
// it; empty fields are left out of the file.
type unwrapEntry struct {
	name, network string
	listen        netip.AddrPort
	accept        []string
	port          uint16 // the server's port on 127.0.0.1 and [::1]
	framing       string
	untrusted     string
	maxFlows      int
	idle          string
}

// unwrapYAML renders an agent configuration: the edge's origin-side
// addresses as the trusted list, metrics on unwrapMetricsAddr, entries.
func unwrapYAML(entries ...unwrapEntry) string {
	var b strings.Builder
	fmt.Fprintf(&b, "trusted: [%s/32, %s/128]\n", edgeBackV4, edgeBackV6)
	fmt.Fprintf(&b, "metrics_listen: %q\n", unwrapMetricsAddr)
	b.WriteString("unwrap:\n")
	for _, e := range entries {
		fmt.Fprintf(&b, "  - name: %s\n    network: %s\n    listen: %q\n", e.name, e.network, e.listen)
		fmt.Fprintf(&b, "    accept: [%s]\n", strings.Join(e.accept, ", "))
		fmt.Fprintf(&b, "    to: [\"127.0.0.1:%d\", \"[::1]:%d\"]\n", e.port, e.port)
		for _, f := range []struct{ key, value string }{
			{"framing", e.framing}, {"untrusted", e.untrusted}, {"idle_timeout", e.idle},
		} {
			if f.value != "" {
				fmt.Fprintf(&b, "    %s: %s\n", f.key, f.value)
			}
		}
		if e.maxFlows > 0 {
			fmt.Fprintf(&b, "    max_flows: %d\n", e.maxFlows)
		}
	}
	return b.String()
}

// agentProc is a running `realip-agent unwrap` with its configuration file.
type agentProc struct {
	daemon
}

// startAgent writes text to a configuration file and runs the agent on it
// in h (startAgentFile).
func startAgent(t *testing.T, h *netns.Host, text string) *agentProc {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.yaml")
	writeFile(t, path, text)
	return startAgentFile(t, h, path)
}

// startAgentFile runs `realip-agent unwrap -config path` in h and waits
// until it serves its metrics, which it does once every relay is up.
func startAgentFile(t *testing.T, h *netns.Host, path string) *agentProc {
	t.Helper()
	p := h.Start(t, agentBinary(t), "unwrap", "-config", path)
	waitCount(t, p, logAgentServing, 1)
	return &agentProc{daemon{Proc: p, host: h, name: "realip-agent", file: path,
		appliedMsg: logAgentReloaded, refusedMsg: logAgentRefused}}
}

// metrics scrapes the agent's /metrics.
func (a *agentProc) metrics(t *testing.T) string {
	t.Helper()
	return scrape(t, a.host, unwrapMetricsAddr)
}

// scrapeLinger is how long the agent's metrics server keeps a scrape's
// connection, and the goroutine serving it, after its response: net/http
// half-closes a connection it answered with "Connection: close" and waits
// 500 ms before closing it (rstAvoidanceDelay), and scrape asks with
// HTTP/1.0.
const scrapeLinger = 600 * time.Millisecond

// settled waits until no scrape's connection or goroutine is left in the
// agent, so that its counts of goroutines and sockets are its relays' and
// its own, comparable from one reading to the next. Polled at 10 ms, each
// reading would count the scrapes of the readings before it.
func (a *agentProc) settled() { time.Sleep(scrapeLinger) }

// goroutines is the agent's go_goroutines once settled.
func (a *agentProc) goroutines(t *testing.T) float64 {
	t.Helper()
	a.settled()
	return a.metric(t, "go_goroutines")
}

// metric returns the first series of name whose labels include labels, 0
// when there is none.
func (a *agentProc) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, _ := metricValue(a.metrics(t), name, labels...)
	return v
}

// waitMetric waits until the series of name with labels satisfies ok.
func (a *agentProc) waitMetric(t *testing.T, ok func(float64) bool, what, name string, labels ...string) float64 {
	t.Helper()
	var got float64
	waitFor(t, ioTimeout, func() bool {
		got = a.metric(t, name, labels...)
		return ok(got)
	}, func() string { return fmt.Sprintf("%s%v = %v, want %s", name, labels, got, what) })
	return got
}

// atLeast and equal are conditions for waitMetric.
func atLeast(n float64) (func(float64) bool, string) {
	return func(v float64) bool { return v >= n }, fmt.Sprintf(">= %v", n)
}

func equal(n float64) (func(float64) bool, string) {
	return func(v float64) bool { return v == n }, fmt.Sprintf("%v", n)
}

// waitAtLeast waits until the series is at least n.
func (a *agentProc) waitAtLeast(t *testing.T, n float64, name string, labels ...string) float64 {
	t.Helper()
	ok, what := atLeast(n)
	return a.waitMetric(t, ok, what, name, labels...)
}

// waitEqual waits until the series is n.
func (a *agentProc) waitEqual(t *testing.T, n float64, name string, labels ...string) float64 {
	t.Helper()
	ok, what := equal(n)
	return a.waitMetric(t, ok, what, name, labels...)
}

// entryLabel is the label selecting an entry's series.
func entryLabel(name string) string { return `entry="` + name + `"` }

// sockets returns the ss lines of the agent's sockets of netid ("tcp" or
// "udp") whose local address is none of except.
func (a *agentProc) sockets(t *testing.T, netid string, except ...string) []string {
	t.Helper()
	owner := fmt.Sprintf("pid=%d,", a.Cmd.Process.Pid)
	var out []string
	for _, line := range socketsOf(t, a.host) {
		f := strings.Fields(line)
		if len(f) > 4 && f[0] == netid && strings.Contains(line, owner) && !slices.Contains(except, f[4]) {
			out = append(out, line)
		}
	}
	return out
}

// ipOutput runs ip with args in h and returns its output.
func ipOutput(t *testing.T, h *netns.Host, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	out, err := h.Command(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: ip %s: %v\n%s", h.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// routingState is h's policy rules and every route of every table, both
// families, as ip(8) prints them.
func routingState(t *testing.T, h *netns.Host) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"-4", "rule", "show"}, {"-6", "rule", "show"},
		{"-4", "route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"},
	} {
		fmt.Fprintf(&b, "# ip %s\n%s", strings.Join(args, " "), ipOutput(t, h, args...))
	}
	return b.String()
}

// socketsOf lists h's TCP and UDP sockets (ss -tuanp), one a line.
func socketsOf(t *testing.T, h *netns.Host) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	out, err := h.Command(ctx, "ss", "-H", "-tuanp").CombinedOutput()
	if err != nil {
		t.Fatalf("%s: ss: %v\n%s", h.Name, err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// processesIn returns the command names of the processes in h's namespace.
func processesIn(t *testing.T, h *netns.Host) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", h.Namespace).CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v\n%s", h.Namespace, err, out)
	}
	var names []string
	for _, pid := range strings.Fields(string(out)) {
		comm, err := os.ReadFile("/proc/" + pid + "/comm")
		if err == nil { // else gone meanwhile
			names = append(names, pid+" "+strings.TrimSpace(string(comm)))
		}
	}
	return names
}

var python lazyPath

// pythonBinary returns the python3 interpreter's own path (not a shim that
// may need the caller's environment).
func pythonBinary(t *testing.T) string {
	t.Helper()
	p := testenv.RequireCommand(t, "python3")
	return python.get(t, "python3", func() (string, error) {
		out, err := exec.Command(p, "-c", "import sys; print(sys.executable)").Output()
		path := strings.TrimSpace(string(out))
		if err == nil && path == "" {
			path = p
		}
		return path, err
	})
}

// startHTTPServer runs `python3 -m http.server PORT --bind ADDR` serving
// dir in h and waits until it accepts connections. It logs every request
// on stderr as "CLIENT - - [date] "REQUEST" STATUS -".
func startHTTPServer(t *testing.T, h *netns.Host, addr netip.AddrPort, dir string) *netns.Proc {
	t.Helper()
	p := h.Start(t, pythonBinary(t), "-u", "-m", "http.server", strconv.Itoa(int(addr.Port())),
		"--bind", addr.Addr().String(), "--directory", dir)
	waitAccepting(t, h, addr, p)
	return p
}

// waitAccepting waits until addr accepts TCP connections from inside h,
// failing if p exits first.
func waitAccepting(t *testing.T, h *netns.Host, addr netip.AddrPort, p *netns.Proc) {
	t.Helper()
	var err error
	waitFor(t, ioTimeout, func() bool {
		select {
		case <-p.Done():
			t.Fatalf("server exited (%v):\n%s", p.Err(), p.Output())
		default:
		}
		var c net.Conn
		if c, err = dial(h, addr); err == nil {
			c.Close()
			return true
		}
		return false
	}, func() string { return fmt.Sprintf("%v not accepting: %v\n%s", addr, err, p.Output()) })
}

// udpEchoScript is a plain UDP echo server that knows nothing of SPP or
// PROXY: on 127.0.0.1:PORT and [::1]:PORT it prints "peer=ADDR:PORT" for
// every datagram and, unless told "silent", answers "peer=ADDR:PORT "
// followed by the datagram.
const udpEchoScript = `import selectors, socket, sys
port = int(sys.argv[1])
silent = sys.argv[2:] == ["silent"]
sel = selectors.DefaultSelector()
for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((host, port))
    sel.register(s, selectors.EVENT_READ)
print("udp echo ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        data, peer = s.recvfrom(65535)
        name = ("[%s]:%d" if s.family == socket.AF_INET6 else "%s:%d") % peer[:2]
        print("peer=" + name, flush=True)
        if not silent:
            s.sendto(("peer=%s " % name).encode() + data, peer)
`

// startUDPEcho runs udpEchoScript in h on port and waits until it is bound.
func startUDPEcho(t *testing.T, h *netns.Host, port uint16, args ...string) *netns.Proc {
	t.Helper()
	path := filepath.Join(t.TempDir(), "udpecho.py")
	if err := os.WriteFile(path, []byte(udpEchoScript), 0o644); err != nil {
		t.Fatal(err)
	}
	p := h.Start(t, pythonBinary(t), append([]string{"-u", path, strconv.Itoa(int(port))}, args...)...)
	waitOutput(t, p, "udp echo ready")
	return p
}

// loopbacks are the server addresses every unwrap entry of these tests
// points to, one per family.
var loopbacks = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}

// peerServer is a plain TCP and UDP server on 127.0.0.1:PORT and
// [::1]:PORT in a lab host: it records the peer of every connection and
// datagram; on TCP it writes "peer=ADDR:PORT\n" and echoes, on UDP it
// answers "peer=ADDR:PORT " and the datagram, unless silent.
type peerServer struct {
	mu    sync.Mutex
	peers []netip.AddrPort
}

// startPeerServer starts a peerServer for network ("tcp", "udp" or both
// as "tcp+udp") in h.
func startPeerServer(t *testing.T, h *netns.Host, network string, port uint16, silent bool) *peerServer {
	t.Helper()
	s := &peerServer{}
	for _, lo := range loopbacks {
		addr := netip.AddrPortFrom(lo, port)
		err := h.Do(func() error {
			if strings.Contains(network, "tcp") {
				ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
				if err != nil {
					return err
				}
				t.Cleanup(func() { ln.Close() })
				go s.acceptLoop(ln)
			}
			if strings.Contains(network, "udp") {
				pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
				if err != nil {
					return err
				}
				t.Cleanup(func() { pc.Close() })
				go s.udpLoop(pc, silent)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("peer server on %v: %v", addr, err)
		}
	}
	return s
}

func (s *peerServer) record(p netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peers = append(s.peers, netip.AddrPortFrom(p.Addr().Unmap(), p.Port()))
}

// seen returns the peers recorded so far.
func (s *peerServer) seen() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.AddrPort(nil), s.peers...)
}

// sawAddr reports whether a connection or datagram came from a.
func (s *peerServer) sawAddr(a netip.Addr) bool {
	for _, p := range s.seen() {
		if p.Addr() == a {
			return true
		}
	}
	return false
}

func (s *peerServer) acceptLoop(ln *net.TCPListener) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			return
		}
		peer := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		s.record(peer)
		go func() {
			defer c.Close()
			if _, err := fmt.Fprintf(c, "peer=%s\n", peer); err != nil {
				return
			}
			io.Copy(c, c)
		}()
	}
}

func (s *peerServer) udpLoop(pc *net.UDPConn, silent bool) {
	buf := make([]byte, 64<<10)
	for {
		n, peer, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		s.record(peer)
		if !silent {
			reply := append([]byte(fmt.Sprintf("peer=%s ", peer)), buf[:n]...)
			pc.WriteToUDPAddrPort(reply, peer)
		}
	}
}

// peerLine reads a peerServer's first TCP line, "peer=ADDR:PORT\n".
func peerLine(t *testing.T, c net.Conn) netip.AddrPort {
	t.Helper()
	var line []byte
	b := make([]byte, 1)
	for len(line) < 64 {
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatalf("reading the server's peer line: got %q, %v", line, err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	s, ok := strings.CutPrefix(string(line), "peer=")
	ap, err := netip.ParseAddrPort(s)
	if !ok || err != nil {
		t.Fatalf("server's line %q: want peer=ADDR:PORT (%v)", line, err)
	}
	return ap
}

// peerSession is a TCP connection through the edge and the relay to a
// peerServer, kept open across the test.
type peerSession struct {
	c     net.Conn
	local netip.AddrPort
}

// openPeerSession connects from h to addr and checks that the server sees
// the client's own address and port.
func openPeerSession(t *testing.T, h *netns.Host, addr netip.AddrPort) *peerSession {
	t.Helper()
	c := mustDial(t, h, addr)
	s := &peerSession{c: c, local: addrPort(c.LocalAddr())}
	if got := peerLine(t, c); got != s.local {
		t.Fatalf("through %v the server saw %v, want the client %v", addr, got, s.local)
	}
	s.echo(t, "first\n")
	return s
}

// echo sends msg and reads it back.
func (s *peerSession) echo(t *testing.T, msg string) {
	t.Helper()
	s.c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(s.c, msg); err != nil {
		t.Fatalf("session %v: write: %v", s.local, err)
	}
	got := make([]byte, len(msg))
	if n, err := io.ReadFull(s.c, got); err != nil || string(got) != msg {
		t.Fatalf("session %v: echo %q, %v; want %q", s.local, got[:n], err, msg)
	}
}

// udpPeerExchange sends payload on c (through the edge and the relay to a
// peerServer or the python echo) and checks the answer: the server saw the
// client's own address and the payload came back intact.
func udpPeerExchange(t *testing.T, c *net.UDPConn, payload []byte) {
	t.Helper()
	reply := udpExchange(t, c, payload)
	want := append([]byte(fmt.Sprintf("peer=%s ", udpLocal(c))), payload...)
	if string(reply) != string(want) {
		t.Fatalf("reply %q, want %q (the server names the client %v, then the payload)", trimmed(reply), trimmed(want), udpLocal(c))
	}
}

// trimmed shortens b for messages.
func trimmed(b []byte) []byte {
	if len(b) > 80 {
		return append(b[:80:80], "..."...)
	}
	return b
}
