//go:build linux

package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/realip/realip/agent"
	"github.com/realip/realip/toactl"
	"github.com/realip/realip/toarecv"
)

// doctorReport runs doctor -json with args and decodes its report.
func (e cliEnv) doctorReport(t *testing.T, args ...string) (int, *agent.Report) {
	t.Helper()
	code, out, errs := e.main(append([]string{"doctor", "-json"}, args...)...)
	var rep agent.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("doctor -json: exit %d, %v: %s %s", code, err, out, errs)
	}
	return code, &rep
}

// TestCLIDoctor: the exit statuses doctor promises (0 no problem,
// warnings allowed; 1 a problem; 2 usage) and its text and JSON.
func TestCLIDoctor(t *testing.T) {
	e := newCLIEnv(t)
	e.Write("trusted: [198.51.100.0/24]\n")
	if code, _, errs := e.main("load", "-config", e.ConfigPath); code != 0 {
		t.Fatalf("load: %d %s", code, errs)
	}
	var zero []toactl.Stat
	for _, n := range toarecv.CounterNames {
		zero = append(zero, toactl.Stat{Name: n})
	}
	e.Module.SetStats(zero, nil)
	// No traffic yet: options is a warning, which exits 0.
	code, out, errs := e.main("doctor", "-config", e.ConfigPath)
	if code != exitOK || !strings.Contains(out, "ok      receiver   toa.ko 0.1.0") || !strings.Contains(out, "warn    options") ||
		!strings.Contains(out, "\n0 problems, ") {
		t.Errorf("healthy: exit %d\n%s%s", code, out, errs)
	}
	for i, line := range strings.Split(out, "\n") {
		if utf8.RuneCountInString(line) > agent.TextWidth {
			t.Errorf("line %d wider than %d: %q", i+1, agent.TextWidth, line)
		}
	}
	code, rep := e.doctorReport(t, "-config", e.ConfigPath)
	if code != exitOK || rep.Receiver != agent.ReceiverKmod || rep.Status != agent.CheckWarn || rep.Problems() != 0 {
		t.Errorf("healthy -json: exit %d, %+v", code, rep)
	}
	code, out, errs = e.main("doctor", "-watch", "1ms", "-config", e.ConfigPath)
	if code != exitOK || !strings.Contains(errs, "realip-agent doctor: watching the counters for 1ms\n") ||
		!strings.Contains(out, "counters: what moved in a window of 0.001s") {
		t.Errorf("-watch: exit %d\n%s%s", code, out, errs)
	}

	e.Write("trusted: []\n")
	if code, _, errs := e.main("load", "-config", e.ConfigPath); code != 0 {
		t.Fatalf("load with an empty trust list: %d %s", code, errs)
	}
	code, rep = e.doctorReport(t, "-config", e.ConfigPath)
	if c := rep.Check("trust"); code != exitError || c == nil || c.Status != agent.CheckProblem {
		t.Errorf("empty trust list: exit %d, %+v", code, c)
	}

	if code, _, _ := e.main("unload"); code != 0 {
		t.Fatal("unload")
	}
	code, out, _ = e.main("doctor", "-config", e.ConfigPath)
	if code != exitError || !strings.Contains(out, "PROBLEM receiver   no TOA receiver is in place") {
		t.Errorf("no receiver: exit %d\n%s", code, out)
	}
	code, rep = e.doctorReport(t, "-config", e.Dir+"/missing.yaml")
	if c := rep.Check("config"); code != exitError || c.Status != agent.CheckProblem {
		t.Errorf("named file missing: exit %d, %+v", code, c)
	}
}

func TestCLIDoctorUsage(t *testing.T) {
	e := newCLIEnv(t)
	for _, args := range [][]string{{"doctor", "-watch", "-1s"}, {"doctor", "-watch", "soon"}, {"doctor", "extra"}, {"doctor", "-bogus"}} {
		if code, out, errs := e.main(args...); code != exitUsage || out != "" {
			t.Errorf("%q: exit %d, want %d: %s %s", args, code, exitUsage, out, errs)
		}
	}
}
