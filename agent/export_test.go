//go:build linux

package agent

import "github.com/prometheus/client_golang/prometheus"

// The agent's internals the external tests (package agent_test, which
// use agenttest's fakes) look at.

func LoadsMetric(a *Agent) prometheus.Counter       { return a.loads }
func ReloadsMetric(a *Agent) *prometheus.CounterVec { return a.reloads }
func ReloadOKMetric(a *Agent) prometheus.Gauge      { return a.reloadOK }

func SwapTOACollector(a *Agent, cfg Config) error { return a.swapTOACollector(cfg) }
