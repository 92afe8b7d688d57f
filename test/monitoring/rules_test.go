package monitoring

import (
	"context"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/realip/realip/internal/testenv"
)

// runPromtool runs promtool with args in dir and returns its output; it
// fails the test if promtool fails.
func runPromtool(t *testing.T, args ...string) string {
	t.Helper()
	promtool := testenv.RequireCommand(t, "promtool")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPromtoolCheckRules: `promtool check rules` accepts both files, with
// every lint check made fatal.
func TestPromtoolCheckRules(t *testing.T) {
	t.Parallel()
	for _, f := range ruleFiles {
		t.Run(f.rules, func(t *testing.T) {
			out := runPromtool(t, "check", "rules", "--lint=all", "--lint-fatal", f.rules)
			if !strings.Contains(out, "SUCCESS") || strings.Contains(out, "WARNING") {
				t.Errorf("promtool check rules %s:\n%s", f.rules, out)
			}
		})
	}
}

// TestPromtoolTestRules runs the rule files' unit tests.
func TestPromtoolTestRules(t *testing.T) {
	t.Parallel()
	for _, f := range ruleFiles {
		t.Run(f.tests, func(t *testing.T) {
			out := runPromtool(t, "test", "rules", f.tests)
			if !strings.Contains(out, "SUCCESS") {
				t.Errorf("promtool test rules %s:\n%s", f.tests, out)
			}
		})
	}
}

var recordName = regexp.MustCompile(`^[a-z_]+:realip_[a-z0-9_]+:[a-z0-9_]+$`)

// TestRulesAreDocumented checks what an operator relies on in every rule:
// alert names unique and prefixed, a severity, and the three annotations;
// recording rules named level:metric:operations.
func TestRulesAreDocumented(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range allRules(t) {
		name := r.Alert + r.Record
		if (r.Alert == "") == (r.Record == "") || strings.TrimSpace(r.Expr) == "" {
			t.Errorf("rule %q: want exactly one of alert and record, and an expr", name)
			continue
		}
		if seen[name] {
			t.Errorf("%s: defined twice", name)
		}
		seen[name] = true
		if r.Record != "" {
			if !recordName.MatchString(r.Record) {
				t.Errorf("recording rule %s: not named level:realip_metric:operations", r.Record)
			}
			continue
		}
		if !strings.HasPrefix(r.Alert, "Realip") {
			t.Errorf("alert %s: name does not start with Realip", r.Alert)
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, s)
		}
		for _, a := range []string{"summary", "description", "runbook"} {
			if len(strings.TrimSpace(r.Annotations[a])) < 20 {
				t.Errorf("alert %s: annotation %s missing or too short: %q", r.Alert, a, r.Annotations[a])
			}
		}
	}
}

// coverage is what a unit test file checks of one rule file.
type coverage struct {
	fires, quiet map[string]bool // by alert name
	exprs        []string        // promql_expr_test expressions
	unknown      []string        // alert names tested that the rule file lacks
}

func readCoverage(t *testing.T, rules []rule, testFile, ruleFile string) coverage {
	t.Helper()
	var f unitTestFile
	if err := readYAML(testFile, &f); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.RuleFiles, []string{ruleFile}) {
		t.Errorf("%s: rule_files %v, want [%s]", testFile, f.RuleFiles, ruleFile)
	}
	alerts := map[string]bool{}
	for _, r := range rules {
		alerts[r.Alert] = r.Alert != ""
	}
	c := coverage{fires: map[string]bool{}, quiet: map[string]bool{}}
	for _, tc := range f.Tests {
		for _, at := range tc.AlertRuleTest {
			if !alerts[at.AlertName] {
				c.unknown = append(c.unknown, at.AlertName)
			}
			if len(at.ExpAlerts) > 0 {
				c.fires[at.AlertName] = true
			} else {
				c.quiet[at.AlertName] = true
			}
		}
		for _, e := range tc.PromQLExprTest {
			c.exprs = append(c.exprs, e.Expr)
		}
	}
	return c
}

// TestEveryRuleIsUnitTested: each alert has a unit test where it fires and
// one where it does not, no unit test names an alert that does not exist
// (promtool would pass it: an unknown alert never fires), and each
// recording rule's result is checked by a promql_expr_test.
func TestEveryRuleIsUnitTested(t *testing.T) {
	for _, f := range ruleFiles {
		rules := loadRules(t, f.rules)
		c := readCoverage(t, rules, f.tests, f.rules)
		for _, name := range c.unknown {
			t.Errorf("%s: tests alert %s, which %s does not define", f.tests, name, f.rules)
		}
		for _, r := range rules {
			switch {
			case r.Alert != "" && !c.fires[r.Alert]:
				t.Errorf("%s: no unit test in %s where it fires", r.Alert, f.tests)
			case r.Alert != "" && !c.quiet[r.Alert]:
				t.Errorf("%s: no unit test in %s where it stays quiet", r.Alert, f.tests)
			case r.Record != "" && !slices.ContainsFunc(c.exprs, func(e string) bool { return strings.Contains(e, r.Record) }):
				t.Errorf("%s: no promql_expr_test in %s checks it", r.Record, f.tests)
			}
		}
		t.Logf("%s: %d alerts, each firing and quiet in %s", f.rules, len(c.fires), f.tests)
	}
}
