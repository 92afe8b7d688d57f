//go:build linux

package monitoring

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/realip/realip/exporter"
	"github.com/realip/realip/internal/netns"
	"github.com/realip/realip/internal/testenv"
	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

// ioTimeout bounds every dial, read and wait; in the lab everything
// answers within milliseconds.
const ioTimeout = 5 * time.Second

// The lab: client - edge - origin. The edge relays; client and origin
// cannot reach each other. Prometheus runs in the edge's namespace.
var (
	clientV4  = netip.MustParseAddr("192.0.2.10")
	edgeFront = netip.MustParseAddr("192.0.2.1")
	edgeBack  = netip.MustParseAddr("198.51.100.1")
	originV4  = netip.MustParseAddr("198.51.100.10")
)

// Ports of the origin's servers and of the metrics endpoints.
const (
	portWeb           = 8001 // TCP, Go server on realip's listener (ppv1, ppv2)
	portDNS           = 9002 // UDP, Go server on realip's listener (ppv2, first datagram)
	portPlain         = 8003 // TCP, plain echo server behind a toa rule
	portDown          = 8004 // nothing listens: the rule's origin is down
	portServerMetrics = 9100 // the Go server's /metrics
	portAgent         = 9788 // realip-agent exporter, counters summed
	portAgentPerCPU   = 9790 // realip-agent exporter -per-cpu
	portEdgeMetrics   = 9789 // realip-edge -metrics, on the edge's loopback
)

// edgeRulesText has a rule for each kind of traffic the dashboard shows.
var edgeRulesText = fmt.Sprintf(`tcp:1001 %[1]s %[2]d off ppv1 web, Go server on the listener
udp:2002 %[1]s %[3]d off ppv2 dns, Go server on the listener
tcp:1003 %[1]s %[4]d off toa plain server, option written by eBPF
tcp:1004 %[1]s %[5]d off ppv2 origin down
`, originV4, portWeb, portDNS, portPlain, portDown) + edgeUnwrapRules

// stack is the running system the dashboard watches.
type stack struct {
	lab                  *netns.Lab
	client, edge, origin *netns.Host
	procfs               string // the agent exporters' procfs root
	tick                 int    // toa_stats rewrites so far
	rounds               int    // calls of round
}

// binDir holds the commands built once per test binary run.
var binDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "realip-monitoring-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "monitoring:", err)
		os.Exit(1)
	}
	binDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

var builds sync.Map // package -> *buildResult

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// command builds ./cmd/NAME of this module once and returns its path.
func command(t *testing.T, name string) string {
	t.Helper()
	goTool := testenv.RequireCommand(t, "go")
	v, _ := builds.LoadOrStore(name, &buildResult{})
	b := v.(*buildResult)
	b.once.Do(func() {
		b.path = filepath.Join(binDir, name)
		cmd := exec.Command(goTool, "build", "-o", b.path, "./cmd/"+name)
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ./cmd/%s: %w\n%s", name, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// newStack builds the lab and starts everything but Prometheus: the Go
// server, the plain server, two agent exporters, `realip-agent unwrap`
// with its servers, and realip-edge.
func newStack(t *testing.T) *stack {
	t.Helper()
	edgeBin, agentBin := command(t, "realip-edge"), command(t, "realip-agent")
	s := &stack{lab: netns.NewLab(t), procfs: t.TempDir()}
	s.client, s.edge, s.origin = s.lab.Host("client"), s.lab.Host("edge"), s.lab.Host("origin")
	s.lab.Link(s.client, s.edge, pfx(clientV4, 24), pfx(edgeFront, 24))
	s.lab.Link(s.edge, s.origin, pfx(edgeBack, 24), pfx(originV4, 24))

	startGoServer(t, s.origin)
	startEcho(t, s.origin, portPlain)
	if err := os.MkdirAll(filepath.Join(s.procfs, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.writeTOAStats(t)
	for _, a := range []struct {
		port int
		args []string
	}{{portAgent, nil}, {portAgentPerCPU, []string{"-per-cpu"}}} {
		args := append([]string{"exporter", "-listen", hostPort(originV4, a.port), "-procfs", s.procfs}, a.args...)
		s.origin.Start(t, agentBin, args...)
	}
	s.startUnwrap(t, agentBin)

	rules := filepath.Join(t.TempDir(), "edge.rules")
	if err := os.WriteFile(rules, []byte(edgeRulesText), 0o644); err != nil {
		t.Fatal(err)
	}
	p := s.edge.Start(t, edgeBin, "-rules", rules, "-metrics", hostPort(netip.MustParseAddr("127.0.0.1"), portEdgeMetrics),
		"-toa-cgroup", mountCgroup2(t))
	waitOutput(t, p, `msg="edge: rules applied"`)
	waitOutput(t, p, `msg=metrics `)
	return s
}

func pfx(a netip.Addr, bits int) []netip.Prefix { return []netip.Prefix{netip.PrefixFrom(a, bits)} }

func hostPort(a netip.Addr, port int) string {
	return netip.AddrPortFrom(a, uint16(port)).String()
}

// mountCgroup2 mounts the cgroup v2 hierarchy on a temporary folder for
// the edge's TOA sender (`ip netns exec` gives the edge a /sys without the
// machine's cgroup2 mount).
func mountCgroup2(t *testing.T) string {
	t.Helper()
	cg := t.TempDir()
	if out, err := exec.Command("mount", "-t", "cgroup2", "cgroup2", cg).CombinedOutput(); err != nil {
		testenv.SkipOrFail(t, "mount cgroup2: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", cg).Run() })
	return cg
}

// waitOutput waits until p has printed want, failing if p exits first.
func waitOutput(t *testing.T, p *netns.Proc, want string) {
	t.Helper()
	deadline := time.After(ioTimeout)
	for !strings.Contains(p.Output(), want) {
		select {
		case <-p.Done():
			t.Fatalf("process exited (%v) before printing %q:\n%s", p.Err(), want, p.Output())
		case <-deadline:
			t.Fatalf("%q not printed within %v:\n%s", want, ioTimeout, p.Output())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// toaRows are the rows of realip's /proc/net/toa_stats, in its order.
var toaRows = []string{
	"syn_recv_sock_toa", "syn_recv_sock_no_toa", "getname_toa_ok", "getname_toa_mismatch",
	"getname_toa_bypass", "getname_toa_empty", "ip6_address_alloc", "ip6_address_free",
	"syn_recv_sock_untrusted", "syn_recv_sock_bad_option", "syn_recv_sock_from_syn",
	"alloc_failed", "probe_missed", "listeners_taken_over",
}

// writeTOAStats writes the next toa_stats file as the module prints it (a
// CPUn header, then a row per counter, a column per CPU). Every counter
// grows with each call, row r by r+1 per CPU, except alloc_failed and
// probe_missed (0) and listeners_taken_over (3); frees trail allocations.
func (s *stack) writeTOAStats(t *testing.T) {
	t.Helper()
	var b strings.Builder
	b.WriteString("                 \tCPU0\tCPU1\n")
	for r, name := range toaRows {
		v0, v1 := 100*(r+1)+s.tick*(r+1), 50*(r+1)+s.tick*(r+1)
		switch name {
		case "alloc_failed", "probe_missed":
			v0, v1 = 0, 0
		case "listeners_taken_over":
			v0, v1 = 2, 1
		case "ip6_address_free":
			v0, v1 = 700+s.tick*7-9, 350+s.tick*7-4 // 13 entries held
		}
		fmt.Fprintf(&b, "%-24s\t%d\t%d\n", name, v0, v1)
	}
	s.tick++
	path := filepath.Join(s.procfs, "net", "toa_stats")
	if err := os.WriteFile(path+".tmp", []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// startGoServer runs, in h, a server on realip's listener the way an
// application embeds it: a TCP listener (PROXY v1 and v2) and a UDP
// socket (PROXY v2 on the first datagram of a flow), both trusting only
// the edge, each answering with the client address it sees, and their
// counters on /metrics.
func startGoServer(t *testing.T, h *netns.Host) {
	t.Helper()
	trusted := []netip.Prefix{netip.PrefixFrom(edgeBack, 32)}
	var ln *listener.Listener
	var pc *listener.PacketConn
	var srv *exporter.Server
	err := h.Do(func() (err error) {
		ln, err = listener.Listen("tcp", fmt.Sprintf(":%d", portWeb), listener.Config{
			Protocols: []wire.Proto{wire.PPv1, wire.PPv2}, Trusted: trusted, HeaderTimeout: time.Second})
		if err != nil {
			return err
		}
		pc, err = listener.ListenPacket("udp", fmt.Sprintf(":%d", portDNS), listener.Config{
			Protocols: []wire.Proto{wire.PPv2}, Trusted: trusted, Framing: listener.FramingFirstDatagram})
		if err != nil {
			return err
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(exporter.NewListenerCollector("web", ln.Stats), exporter.NewListenerCollector("dns", pc.Stats))
		srv, err = exporter.Listen(hostPort(originV4, portServerMetrics), reg, nil)
		return err
	})
	if err != nil {
		t.Fatalf("go server: %v", err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close(); srv.Shutdown(context.Background()) })
	go serveTCP(ln)
	go serveUDP(pc)
}

func serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(ioTimeout))
			fmt.Fprintf(c, "client=%s\n", c.RemoteAddr())
			io.Copy(io.Discard, c)
		}()
	}
}

func serveUDP(pc net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		_, addr, err := pc.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err == nil {
			pc.WriteTo([]byte("client="+addr.String()+"\n"), addr)
		}
	}
}

// startEcho runs a plain TCP echo server in h: an origin without any TOA
// receiver, behind the edge's toa rule.
func startEcho(t *testing.T, h *netns.Host, port int) {
	t.Helper()
	var ln net.Listener
	err := h.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatalf("echo server: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(ioTimeout))
				io.Copy(c, c)
			}()
		}
	}()
}
