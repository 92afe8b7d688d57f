package exporter

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/realip/realip/internal/testenv"
	"github.com/realip/realip/listener"
	"github.com/realip/realip/wire"
)

func sampleListenerStats() listener.Stats {
	var s listener.Stats
	s.Accepted[wire.None] = 3
	s.Accepted[wire.PPv2] = 40
	s.Accepted[wire.TOA] = 7
	s.Rejected[listener.ReasonChecksum] = 2
	s.Rejected[listener.ReasonUntrusted] = 5
	s.Untrusted = 9
	s.IgnoredHeaders = 4
	s.Pending = 1
	s.FlowsLive = 6
	s.FlowsEvicted = 11
	s.FlowsExpired = 12
	return s
}

func TestListenerCollector(t *testing.T) {
	c := NewListenerCollector("web", sampleListenerStats)
	want := `
# HELP realip_listener_accepted_total Connections handed out by Accept (TCP) or datagrams delivered (UDP), by the protocol that carried the client address (none: the socket's own peer).
# TYPE realip_listener_accepted_total counter
realip_listener_accepted_total{listener="web",proto="none"} 3
realip_listener_accepted_total{listener="web",proto="ppv1"} 0
realip_listener_accepted_total{listener="web",proto="ppv2"} 40
realip_listener_accepted_total{listener="web",proto="spp"} 0
realip_listener_accepted_total{listener="web",proto="toa"} 7
# HELP realip_listener_pending_connections TCP connections whose header is being read.
# TYPE realip_listener_pending_connections gauge
realip_listener_pending_connections{listener="web"} 1
# HELP realip_listener_udp_flows_active UDP flows held (PROXY v2 flows, and SPP flows on sockets of both).
# TYPE realip_listener_udp_flows_active gauge
realip_listener_udp_flows_active{listener="web"} 6
# HELP realip_listener_untrusted_total Connections or datagrams from peers outside the trusted prefixes, whatever became of them.
# TYPE realip_listener_untrusted_total counter
realip_listener_untrusted_total{listener="web"} 9
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"realip_listener_accepted_total", "realip_listener_pending_connections",
		"realip_listener_udp_flows_active", "realip_listener_untrusted_total"); err != nil {
		t.Fatal(err)
	}
	// Every reason is there from the start.
	if n := testutil.CollectAndCount(c, "realip_listener_rejected_total"); n != listener.NumReasons {
		t.Errorf("%d rejected series, want %d", n, listener.NumReasons)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
	// Two listeners in one registry, as a server with a TCP and a UDP port has.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c, NewListenerCollector("dns", func() listener.Stats { return listener.Stats{} }))
	if n, err := testutil.GatherAndCount(reg, "realip_listener_rejected_total"); err != nil || n != 2*listener.NumReasons {
		t.Errorf("two listeners: %d series, %v", n, err)
	}
	if err := reg.Register(NewListenerCollector("dns", sampleListenerStats)); err == nil {
		t.Error("a second listener with the same name was registered")
	}
}

// TestListenerCollectorLive wires the collector to a real listener, the
// one-call way the package documentation shows.
func TestListenerCollectorLive(t *testing.T) {
	ln, err := listener.Listen("tcp", "127.0.0.1:0", listener.Config{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewListenerCollector("live", ln.Stats))
	if n, err := testutil.GatherAndCount(reg); err != nil || n == 0 {
		t.Fatalf("%d series, %v", n, err)
	}
}

// expositions render every collector of this package in the text format:
// summed toa_stats (with extra rows) and the listener collectors
// in one, per-CPU toa_stats in the other.
func expositions(t *testing.T) [][]byte {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newTestCollector(t, "testdata/extra", false),
		NewListenerCollector("web", sampleListenerStats),
		NewListenerCollector("dns", func() listener.Stats { return listener.Stats{} }))
	perCPU := prometheus.NewPedanticRegistry()
	perCPU.MustRegister(newTestCollector(t, fixtureTree(t, manyCPUs(4)), true))
	var out [][]byte
	for _, g := range []prometheus.Gatherer{reg, perCPU} {
		mfs, err := g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, buf.Bytes())
	}
	return out
}

// TestPromtool checks the expositions with Prometheus' own linter,
// `promtool check metrics` (Debian package prometheus: scripts/deps.sh
// prometheus). Without promtool it skips, or fails with REALIP_STRICT=1.
func TestPromtool(t *testing.T) {
	promtool := testenv.RequireCommand(t, "promtool")
	exps := expositions(t)
	all := bytes.Join(exps, nil)
	for _, want := range []string{"realip_toa_syn_recv_sock_future_total", `realip_toa_probe_missed_total{cpu="3"}`,
		"realip_listener_rejected_total"} {
		if !bytes.Contains(all, []byte(want)) {
			t.Fatalf("expositions lack %s", want)
		}
	}
	for _, exp := range exps {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(exp)
		out, err := cmd.CombinedOutput()
		cancel()
		// promtool prints lint problems; some of them with exit status 0.
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Fatalf("promtool check metrics: %v\n%s\nexposition:\n%s", err, out, exp)
		}
	}
}

func TestHandlerAndServer(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newTestCollector(t, "testdata/seed", false))
	srv, err := Listen("127.0.0.1:0", reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + srv.Addr().String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "realip_toa_ip6_address_alloc_total 1723") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, `href="/metrics"`) {
		t.Errorf("/: %d %s", code, body)
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("/nope: %d", code)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-srv.Done(); err != nil {
		t.Errorf("Done: %v", err)
	}
}
