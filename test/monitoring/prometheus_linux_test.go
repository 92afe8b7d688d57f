//go:build linux

package monitoring

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/realip/realip/internal/netns"
	"github.com/realip/realip/internal/testenv"
)

// promClient talks to Prometheus' HTTP API inside a namespace.
type promClient struct {
	base string
	hc   *http.Client
}

// prometheusConfig scrapes every second the agent exporters, the unwrap
// agent, the edge and the Go server, and evaluates the shipped rule files
// every second.
const prometheusConfig = `global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %[1]s
  - %[2]s
scrape_configs:
  - job_name: realip-agent
    static_configs:
      - targets: ['%[3]s', '%[4]s', '%[7]s']
  - job_name: realip-edge
    static_configs:
      - targets: ['%[5]s']
  - job_name: go-server
    static_configs:
      - targets: ['%[6]s']
`

// startPrometheus runs Debian's prometheus in the edge's namespace on a
// free loopback port with a temporary storage folder, and waits until it
// is ready.
func (s *stack) startPrometheus(t *testing.T) *promClient {
	t.Helper()
	bin := testenv.RequireCommand(t, "prometheus")
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(prometheusConfig, filepath.Join(abs, agentRules), filepath.Join(abs, edgeRules),
		hostPort(originV4, portAgent), hostPort(originV4, portAgentPerCPU),
		hostPort(netip.MustParseAddr("127.0.0.1"), portEdgeMetrics), hostPort(originV4, portServerMetrics),
		hostPort(originV4, portAgentUnwrap))
	cfgPath := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeLoopbackPort(t, s.edge)
	p := s.edge.Start(t, bin, "--config.file="+cfgPath, "--storage.tsdb.path="+t.TempDir(),
		"--web.listen-address="+addr)
	c := &promClient{base: "http://" + addr, hc: &http.Client{
		Timeout:   ioTimeout,
		Transport: &http.Transport{DialContext: dialIn(s.edge)},
	}}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := c.hc.Get(c.base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c
			}
		}
		select {
		case <-p.Done():
			t.Fatalf("prometheus exited (%v):\n%s", p.Err(), p.Output())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready within 15s (%v):\n%s", err, p.Output())
		}
	}
}

// freeLoopbackPort returns 127.0.0.1:PORT with a port free in h.
func freeLoopbackPort(t *testing.T, h *netns.Host) string {
	t.Helper()
	var addr string
	err := h.Do(func() error {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr = l.Addr().String()
		return l.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// dialIn returns a DialContext that connects from inside h.
func dialIn(h *netns.Host) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := h.Do(func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// get calls the API at path and decodes its data into data.
func (c *promClient) get(path string, params url.Values, data any) error {
	resp, err := c.hc.Get(c.base + path + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, r.ErrorType, r.Error)
	}
	return json.Unmarshal(r.Data, data)
}

// query runs an instant query and returns the number of series.
func (c *promClient) query(q string) (int, error) {
	var d struct {
		ResultType string            `json:"resultType"`
		Result     []json.RawMessage `json:"result"`
	}
	if err := c.get("/api/v1/query", url.Values{"query": {q}}, &d); err != nil {
		return 0, err
	}
	if d.ResultType != "vector" {
		return 0, fmt.Errorf("result type %s, want vector", d.ResultType)
	}
	return len(d.Result), nil
}

// labelValues returns the sorted values of label among the series that
// selector matches, as Grafana's label_values(selector, label) does.
func (c *promClient) labelValues(selector, label string) ([]string, error) {
	var series []map[string]string
	if err := c.get("/api/v1/series", url.Values{"match[]": {selector}}, &series); err != nil {
		return nil, err
	}
	var out []string
	for _, s := range series {
		if v := s[label]; v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out, nil
}

// names returns every metric name Prometheus holds.
func (c *promClient) names() ([]string, error) {
	var out []string
	err := c.get("/api/v1/label/__name__/values", url.Values{}, &out)
	return out, err
}

// scrapeTargets is the number of targets prometheusConfig lists.
const scrapeTargets = 5

// unhealthy returns the scrape targets that are not up (or not there yet:
// Prometheus applies its targets some seconds after it starts) and the
// rules that it has not evaluated without error yet.
func (c *promClient) unhealthy() ([]string, error) {
	var targets struct {
		ActiveTargets []struct {
			ScrapeURL, Health, LastError string
		} `json:"activeTargets"`
	}
	if err := c.get("/api/v1/targets", url.Values{}, &targets); err != nil {
		return nil, err
	}
	var out []string
	if n := len(targets.ActiveTargets); n != scrapeTargets {
		out = append(out, fmt.Sprintf("%d scrape targets, want %d", n, scrapeTargets))
	}
	for _, tg := range targets.ActiveTargets {
		if tg.Health != "up" {
			out = append(out, fmt.Sprintf("target %s: %s %s", tg.ScrapeURL, tg.Health, tg.LastError))
		}
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Name, Health, LastError string
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := c.get("/api/v1/rules", url.Values{}, &rules); err != nil {
		return nil, err
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Health != "ok" {
				out = append(out, fmt.Sprintf("rule %s: %s %s", r.Name, r.Health, r.LastError))
			}
		}
	}
	return out, nil
}
