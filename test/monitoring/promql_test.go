package monitoring

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// builtins are the values given to Grafana's own variables when a query is
// run outside Grafana: windows long enough for a rate over a Prometheus
// that scrapes every second and started seconds ago.
var builtins = map[string]string{
	"__rate_interval": "1m",
	"__interval":      "15s",
	"__range":         "5m",
}

// varRef matches a Grafana variable reference: $name or ${name}.
var varRef = regexp.MustCompile(`\$(?:\{(\w+)\}|(\w+))`)

// refs returns the names of the variables expr refers to.
func refs(expr string) []string {
	var out []string
	for _, m := range varRef.FindAllStringSubmatch(expr, -1) {
		out = append(out, m[1]+m[2])
	}
	return out
}

// expand replaces every variable of expr by its value in values or
// builtins; a variable in neither is an error.
func expand(expr string, values map[string]string) (string, error) {
	var missing []string
	out := varRef.ReplaceAllStringFunc(expr, func(ref string) string {
		name := strings.Trim(ref, "${}")
		if v, ok := values[name]; ok {
			return v
		}
		if v, ok := builtins[name]; ok {
			return v
		}
		missing = append(missing, name)
		return ref
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%q: undefined variables %v", expr, missing)
	}
	return out, nil
}

// regexValue is how Grafana writes a selection of a multi-value variable
// (here: All) into a Prometheus regex matcher: each value regex-escaped,
// with the backslashes doubled for the PromQL string, and more than one
// value as an alternation (a|b).
func regexValue(vals []string) string {
	esc := make([]string, len(vals))
	for i, v := range vals {
		esc[i] = strings.ReplaceAll(regexp.QuoteMeta(v), `\`, `\\`)
	}
	if len(esc) == 1 {
		return esc[0]
	}
	return "(" + strings.Join(esc, "|") + ")"
}

var labelValuesCall = regexp.MustCompile(`^\s*label_values\((.+),\s*(\w+)\s*\)\s*$`)

// parseLabelValues splits a Grafana Prometheus variable query
// label_values(SELECTOR, LABEL).
func parseLabelValues(q string) (selector, label string, err error) {
	m := labelValuesCall.FindStringSubmatch(q)
	if m == nil {
		return "", "", fmt.Errorf("variable query %q is not label_values(SELECTOR, LABEL)", q)
	}
	return strings.TrimSpace(m[1]), m[2], nil
}

// query returns a variable's query: its definition, or query.query.
func (v variable) query() string {
	if v.Definition != "" {
		return v.Definition
	}
	var q struct {
		Query string `json:"query"`
	}
	if json.Unmarshal(v.Query, &q) == nil && q.Query != "" {
		return q.Query
	}
	var s string
	json.Unmarshal(v.Query, &s)
	return s
}

var (
	metricToken   = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	stringLiteral = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
)

// realipMetrics returns the realip_* metric names an expression selects
// (recording rule names, which hold colons, and strings are left out).
func realipMetrics(expr string) []string {
	var out []string
	for _, tok := range metricToken.FindAllString(stringLiteral.ReplaceAllString(expr, `""`), -1) {
		if strings.HasPrefix(tok, "realip_") && !strings.Contains(tok, ":") && !slices.Contains(out, tok) {
			out = append(out, tok)
		}
	}
	return out
}

func TestExpand(t *testing.T) {
	vals := map[string]string{"agent": "a", "rule": `(tcp:80|udp:53)`}
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{`x{instance=~"$agent"}`, `x{instance=~"a"}`, false},
		{`x{instance=~"${agent}", rule=~"$rule"}`, `x{instance=~"a", rule=~"(tcp:80|udp:53)"}`, false},
		{`rate(x[$__rate_interval])`, `rate(x[1m])`, false},
		{`increase(x[$__range])`, `increase(x[5m])`, false},
		{`x{instance=~"$nope"}`, "", true},
		{`no variables`, `no variables`, false},
	} {
		got, err := expand(tc.in, vals)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("expand(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestRegexValue(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"edge"}, "edge"},
		{[]string{"127.0.0.1:9789"}, `127\\.0\\.0\\.1:9789`},
		{[]string{"a:1", "b:2"}, "(a:1|b:2)"},
		{[]string{"[2001:db8::1]:80", "x+y"}, `(\\[2001:db8::1\\]:80|x\\+y)`},
	} {
		if got := regexValue(tc.in); got != tc.want {
			t.Errorf("regexValue(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestParseLabelValues(t *testing.T) {
	for _, tc := range []struct {
		in, sel, label string
		err            bool
	}{
		{"label_values(realip_toa_module_loaded, instance)", "realip_toa_module_loaded", "instance", false},
		{`label_values(m{instance=~"$edge", a="b,c"}, rule)`, `m{instance=~"$edge", a="b,c"}`, "rule", false},
		{"label_values(instance)", "", "", true},
		{"query_result(up)", "", "", true},
	} {
		sel, label, err := parseLabelValues(tc.in)
		if (err != nil) != tc.err || sel != tc.sel || label != tc.label {
			t.Errorf("parseLabelValues(%q) = %q, %q, %v", tc.in, sel, label, err)
		}
	}
}

func TestRealipMetrics(t *testing.T) {
	got := realipMetrics(`sum by (x) (instance:realip_toa_handshakes:rate5m) / rate(realip_toa_a_total[5m]) + realip_toa_a_total + up{job="realip_x", a='realip_y'} + realip_z`)
	want := []string{"realip_toa_a_total", "realip_z"}
	if !slices.Equal(got, want) {
		t.Errorf("realipMetrics = %q, want %q", got, want)
	}
}
