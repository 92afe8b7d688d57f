// Package monitoring tests what realip ships for operators' monitoring,
// in packaging/monitoring: the Prometheus rule files
// (realip-agent.rules.yml, realip-edge.rules.yml), their promtool unit
// tests (*.rules.test.yml), and the Grafana dashboard
// (realip-dashboard.json).
//
// The package has tests only:
//   - promtool (Debian's prometheus package) checks the rule files and runs
//     their unit tests, and a Go test checks that every alert has a
//     severity, a summary, a description and a runbook, and a unit test
//     that fires it and one that does not;
//   - the dashboard's model is checked (datasource variable, ids, layout,
//     variables used and defined);
//   - every dashboard query, every recording rule and every alert
//     expression is run against a real Prometheus, started by the test on
//     loopback in a network namespace, that scrapes the real realip-agent
//     exporter (reading a toa_stats file of a procfs tree, summed and per
//     CPU), the real realip-edge relaying TCP and UDP traffic of a client
//     namespace to an origin namespace, a Go server on realip's listener,
//     and the real `realip-agent unwrap` relaying the edge's ppv1 and spp
//     traffic to plain servers on the origin's loopback (and to one that
//     is down). Each dashboard query and recording rule must return
//     series.
//
// Tests that need promtool, prometheus, root or namespaces skip without
// them, and fail instead with REALIP_STRICT=1 (internal/testenv).
package monitoring
