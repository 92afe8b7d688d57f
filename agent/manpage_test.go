//go:build linux

package agent

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/realip/realip/internal/cmddoc"
)

// configDefaults is how realip-agent.yaml(5) writes each field's default;
// a new field must be added here (the test says so).
func configDefaults() map[string]string {
	d := DefaultConfig()
	kinds := make([]string, len(d.Kinds))
	for i, k := range d.Kinds {
		kinds[i] = strconv.Itoa(int(k))
	}
	return map[string]string{
		"receiver":        "Default: " + string(d.Receiver),
		"cgroup":          "Empty (the default)",
		"module_path":     "Empty (the default)",
		"trusted":         "Default: empty",
		"kinds":           "Default: [" + strings.Join(kinds, ", ") + "]",
		"metrics_listen":  "Default: " + d.MetricsListen,
		"metrics_per_cpu": "Default: " + strconv.FormatBool(d.MetricsPerCPU),
		"procfs":          "Default: " + d.Procfs,
		"unwrap":          "Default: empty (none)",
		"unwrap_routing":  "Default: empty",
	}
}

// TestConfigManPage: realip-agent.yaml(5) documents exactly the fields
// ParseConfig knows, in its order, each with its default and limits, and
// its example is a valid file.
func TestConfigManPage(t *testing.T) {
	p, err := cmddoc.ReadMan("realip-agent.yaml.5")
	if err != nil {
		t.Fatal(err)
	}
	items, err := p.Items("FIELDS")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		got = append(got, it.Key())
	}
	if !slices.Equal(got, configFields) {
		t.Errorf("realip-agent.yaml.5 FIELDS documents %q; ParseConfig knows %q", got, configFields)
	}
	defaults := configDefaults()
	limits := map[string][]string{
		"trusted": {strconv.Itoa(maxPrefixes) + " prefixes", strconv.Itoa(maxConfigStr-1) + " characters"},
		"kinds":   {"2 to 255"},
	}
	for _, it := range items {
		def, ok := defaults[it.Key()]
		if !ok {
			t.Errorf("field %s: the test does not know its default; add it to configDefaults", it.Key())
		} else if !strings.Contains(it.Text, def) {
			t.Errorf("realip-agent.yaml.5, %s (line %d): the text does not say %q", it.Key(), it.Line, def)
		}
		for _, l := range limits[it.Key()] {
			if !strings.Contains(it.Text, l) {
				t.Errorf("realip-agent.yaml.5, %s (line %d): the text does not give the limit %q", it.Key(), it.Line, l)
			}
		}
	}
	lines, err := p.Lines("EXAMPLES")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig([]byte(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatalf("realip-agent.yaml.5 EXAMPLES is not a valid file: %v\n%s", err, strings.Join(lines, "\n"))
	}
	if len(cfg.Trusted) == 0 {
		t.Errorf("realip-agent.yaml.5 EXAMPLES trusts every source; the example should show a trust list")
	}
}

// docCheckLine is a line of the doctor section naming checks: "name: ..."
// or "name, name: ...".
var docCheckLine = regexp.MustCompile(`^([a-z]+(?:, [a-z]+)*): `)

// TestDoctorManPage: the doctor section of realip-agent(8) names every
// check doctor makes, in the report's order, and no other.
func TestDoctorManPage(t *testing.T) {
	p, err := cmddoc.ReadMan("realip-agent.8")
	if err != nil {
		t.Fatal(err)
	}
	lines, err := p.Lines("doctor")
	if err != nil {
		t.Fatal(err)
	}
	var documented, want []string
	for _, l := range lines {
		if m := docCheckLine.FindStringSubmatch(l); m != nil {
			documented = append(documented, strings.Split(m[1], ", ")...)
		}
	}
	for _, c := range doctorChecks() {
		want = append(want, c.name)
	}
	if !slices.Equal(documented, want) {
		t.Errorf("realip-agent.8, .SS doctor describes the checks %q; doctor makes %q", documented, want)
	}
}
