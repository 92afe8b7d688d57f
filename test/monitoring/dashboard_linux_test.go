//go:build linux

package monitoring

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// promCheck is one expression run against Prometheus.
type promCheck struct {
	what, expr string
	series     bool // it must return at least one series
}

// expectations hold only if the real programs counted the test's traffic
// and read the toa_stats file as written: the dashboard's series carry
// real values, not just names.
var expectations = []string{
	`realip_listener_accepted_total{listener="web", proto="ppv1"} > 0`,
	`realip_listener_accepted_total{listener="dns", proto="ppv2"} > 0`,
	`realip_listener_rejected_total{listener="web", reason="malformed"} > 0`,
	`realip_edge_origin_up{rule="tcp:1001"} == 1`,
	`realip_edge_origin_up{rule="tcp:1004"} == 0`,
	`realip_edge_errors_total{rule="tcp:1004", reason=~"no_origin|dial"} > 0`,
	`realip_edge_toa_options_written_total{segment="ack"} > 0`,
	`sum(realip_edge_bytes_total{rule="udp:2002"}) > 0`,
	`realip_toa_ip6_addresses_in_use == 13`,
	`count(realip_toa_syn_recv_sock_toa_total{cpu!=""}) == 2`,
	`instance:realip_toa_handshakes:rate5m{outcome="honoured"} > 0`,
	`realip_unwrap_routing_up == 1`,
	`realip_unwrap_relayed_total{entry="web", network="tcp"} > 0`,
	`realip_unwrap_headers_total{entry="web", protocol="ppv1"} > 0`,
	`realip_unwrap_rejected_total{entry="web", reason="malformed"} > 0`,
	`realip_unwrap_bytes_total{entry="web", direction="to_client"} > 0`,
	`realip_unwrap_headers_total{entry="game", protocol="spp"} > 0`,
	`realip_unwrap_datagrams_total{entry="game", direction="to_client"} > 0`,
	`realip_unwrap_live{entry="game", network="udp"} > 0`,
	`realip_unwrap_dial_errors_total{entry="down"} > 0`,
}

// TestDashboardOnPrometheus runs every dashboard query (variables
// resolved, All selected), every recording rule and every alert
// expression against a real Prometheus scraping the real programs, until
// each query returns series (alerts: evaluates without error), every rule
// is healthy and every target up, bounded in time.
func TestDashboardOnPrometheus(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.round(t)
	c := s.startPrometheus(t)
	d := loadDashboard(t)
	rules := allRules(t)
	start := time.Now()
	deadline := start.Add(40 * time.Second)
	var left []string
	var n int
	for {
		left, n = problems(c, d, rules)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
		s.round(t)
	}
	if len(left) > 0 {
		t.Fatalf("after %v (%d rounds of traffic), %d problems:\n%s", time.Since(start).Round(time.Second), s.rounds, len(left), strings.Join(left, "\n"))
	}
	t.Logf("%d expressions answered after %v (%d rounds of traffic)", n, time.Since(start).Round(time.Second), s.rounds)
	var exprs []string
	for _, r := range rules {
		exprs = append(exprs, r.Expr)
	}
	for _, p := range d.allPanels() {
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
		}
	}
	checkMetricNames(t, c, exprs)
}

// problems runs every check once; it returns what failed and how many
// expressions were run.
func problems(c *promClient, d *dashboardModel, rules []rule) ([]string, int) {
	out, err := c.unhealthy()
	if err != nil {
		return []string{err.Error()}, 0
	}
	values, bad := resolveVariables(c, d)
	if len(bad) > 0 {
		return append(out, bad...), 0
	}
	checks, err := allChecks(d, rules, values)
	if err != nil {
		return append(out, err.Error()), 0
	}
	for _, chk := range checks {
		n, err := c.query(chk.expr)
		switch {
		case err != nil:
			out = append(out, fmt.Sprintf("%s: %s: %v", chk.what, chk.expr, err))
		case chk.series && n == 0:
			out = append(out, fmt.Sprintf("%s: no series: %s", chk.what, chk.expr))
		}
	}
	return out, len(checks)
}

// resolveVariables gives each query variable, in order, all the values
// its label_values query finds (Grafana's All), formatted as Grafana
// writes them into a regex matcher. It stops at the first variable
// without a value, as the later ones may use it.
func resolveVariables(c *promClient, d *dashboardModel) (map[string]string, []string) {
	values := map[string]string{}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, err := expand(v.query(), values)
		if err != nil {
			return nil, []string{fmt.Sprintf("variable %s: %v", v.Name, err)}
		}
		sel, label, err := parseLabelValues(q)
		if err != nil {
			return nil, []string{err.Error()}
		}
		vals, err := c.labelValues(sel, label)
		if err != nil || len(vals) == 0 {
			return nil, []string{fmt.Sprintf("variable %s: %s: no value (%v)", v.Name, q, err)}
		}
		values[v.Name] = regexValue(vals)
	}
	return values, nil
}

// allChecks lists the dashboard's queries (expanded), the rules'
// expressions and the expectations.
func allChecks(d *dashboardModel, rules []rule, values map[string]string) ([]promCheck, error) {
	var out []promCheck
	for _, p := range d.allPanels() {
		for _, q := range p.Targets {
			e, err := expand(q.Expr, values)
			if err != nil {
				return nil, fmt.Errorf("panel %q query %s: %w", p.Title, q.RefID, err)
			}
			out = append(out, promCheck{fmt.Sprintf("panel %q query %s", p.Title, q.RefID), e, true})
		}
	}
	for _, r := range rules {
		if r.Record != "" {
			out = append(out, promCheck{"recording rule " + r.Record, r.Expr, true})
		} else {
			out = append(out, promCheck{"alert " + r.Alert, r.Expr, false})
		}
	}
	for _, e := range expectations {
		out = append(out, promCheck{"expectation", e, true})
	}
	return out, nil
}

// checkMetricNames fails for a realip metric the expressions use that
// neither the running programs served nor the Go sources name (a typo in
// a rule would otherwise pass its unit test, which uses the same name).
// Names only `realip-agent run` serves, with a receiver loaded, are in the
// sources.
func checkMetricNames(t *testing.T, c *promClient, exprs []string) {
	t.Helper()
	live, err := c.names()
	if err != nil {
		t.Fatal(err)
	}
	source := sourceMetricNames(t)
	var used []string
	for _, e := range exprs {
		for _, m := range realipMetrics(e) {
			if !slices.Contains(used, m) {
				used = append(used, m)
			}
		}
	}
	for _, m := range used {
		switch {
		case slices.Contains(live, m):
		case source[m]:
			t.Logf("%s: not served here (only `realip-agent run` with a receiver loaded does); named in the Go sources", m)
		default:
			t.Errorf("%s: no such metric: neither served by the programs here nor named in the Go sources", m)
		}
	}
	t.Logf("%d realip metric names used by the rules and the dashboard; Prometheus holds %d names", len(used), len(live))
}

var quotedMetric = regexp.MustCompile(`"(realip_[a-z0-9_]+)"`)

// sourceMetricNames returns the realip_* names quoted in the module's
// non-test Go files.
func sourceMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() && path != root && (strings.HasPrefix(e.Name(), ".") || e.Name() == "testdata") {
			return filepath.SkipDir
		}
		if e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range quotedMetric.FindAllSubmatch(b, -1) {
			out[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
