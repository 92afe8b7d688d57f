//go:build linux

package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/realip/realip/internal/testenv"
)

// Series of the edge's TOA sender (exporter.NewEdgeTOACollector).
const (
	mTOAUp      = "realip_edge_toa_writer_up"
	mTOAArmed   = "realip_edge_toa_sockets_armed_total"
	mTOAOptions = "realip_edge_toa_options_written_total"
	mTOANoSpace = "realip_edge_toa_no_space_total"
	mTOAErrors  = "realip_edge_toa_errors_total"
)

// mountCgroup2 mounts the cgroup v2 hierarchy on a temporary folder and
// returns it: `ip netns exec` gives the edge a fresh /sys without the
// machine's cgroup2 mount, and the edge runs in the root cgroup, where the
// program sees its sockets.
func mountCgroup2(t *testing.T) string {
	t.Helper()
	cg := t.TempDir()
	if out, err := exec.Command("mount", "-t", "cgroup2", "cgroup2", cg).CombinedOutput(); err != nil {
		testenv.SkipOrFail(t, "mount cgroup2: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", cg).Run() })
	return cg
}

// promtoolCheck runs `promtool check metrics` on an exposition; it fails
// on any problem it prints, even with exit status 0.
func promtoolCheck(t *testing.T, exposition string) {
	t.Helper()
	promtool := testenv.RequireCommand(t, "promtool")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s\nexposition:\n%s", err, out, exposition)
	}
}

// TestEdgeTOAMetrics checks that the counters of the edge's eBPF TOA
// sender reach realip-edge's /metrics and move with the traffic of a toa
// rule (real eBPF on this machine's kernel), that an edge without a toa
// rule exports none of them, and that `promtool check metrics` accepts
// both expositions.
func TestEdgeTOAMetrics(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	startWhoamiOn(t, l.origin, "-tcp", ":8000", "-proto", "ppv1", "-trust", edgeTrust, "-optional", "-header-timeout", "100ms")

	t.Run("without a toa rule", func(t *testing.T) {
		const addr = "127.0.0.1:9101"
		e := startEdge(t, l.edge, fmt.Sprintf("tcp:1001 %s 8000 off ppv1\n", originV4), "-metrics", addr)
		tcpAsk(t, l.client, netip.AddrPortFrom(edgeFrontV4, 1001))
		text := scrape(t, l.edge, addr)
		if strings.Contains(text, "realip_edge_toa_") {
			t.Errorf("TOA sender series without a toa rule:\n%s", text)
		}
		promtoolCheck(t, text)
		e.signal(t, syscall.SIGTERM)
		waitExit(t, e.Proc, 10*time.Second)
	})

	cg := mountCgroup2(t)
	startEdge(t, l.edge, fmt.Sprintf("tcp:1000 %s 8000 off toa\n", originV4), "-metrics", metricsAddr, "-toa-cgroup", cg)
	series := []struct {
		name   string
		labels []string
	}{
		{mTOAUp, nil},
		{mTOAArmed, nil},
		{mTOAOptions, []string{`segment="syn"`}},
		{mTOAOptions, []string{`segment="ack"`}},
		{mTOANoSpace, nil},
		{mTOAErrors, nil},
	}
	read := func(text string) []float64 {
		t.Helper()
		vals := make([]float64, len(series))
		for i, s := range series {
			v, ok := metricValue(text, s.name, s.labels...)
			if !ok {
				t.Fatalf("no %s%v in /metrics:\n%s", s.name, s.labels, text)
			}
			vals[i] = v
		}
		return vals
	}
	before := read(scrape(t, l.edge, metricsAddr))
	if want := []float64{1, 0, 0, 0, 0, 0}; fmt.Sprint(before) != fmt.Sprint(want) {
		t.Errorf("before any connection: %v, want %v (up, armed, syn, ack, no_space, errors)", before, want)
	}

	const conns = 3
	for i := range conns {
		front := edgeFrontV4
		if i%2 == 1 {
			front = edgeFrontV6
		}
		tcpAsk(t, l.client, netip.AddrPortFrom(front, 1000))
	}
	text := scrape(t, l.edge, metricsAddr)
	after := read(text)
	up, armed, syn, ack, noSpace, errs := after[0], after[1], after[2], after[3], after[4], after[5]
	// A SYN may be sent again (and written again) if it is lost; the
	// handshake ACK is written once per connection.
	if up != 1 || armed != conns || syn < conns || ack != conns || noSpace != 0 || errs != 0 {
		t.Errorf("after %d connections: up %v armed %v syn %v ack %v no_space %v errors %v; want 1 %d >=%d %d 0 0",
			conns, up, armed, syn, ack, noSpace, errs, conns, conns, conns)
	}
	t.Logf("TOA sender series before %v, after %d connections %v (up, armed, syn, ack, no_space, errors)", before, conns, after)
	if n, _ := metricValue(text, "realip_edge_errors_total", `reason="toa_not_sent"`); n != 0 {
		t.Errorf("toa_not_sent = %v", n)
	}
	promtoolCheck(t, text)
}
