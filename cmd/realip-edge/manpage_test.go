//go:build linux

package main

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/realip/realip/edge/rules"
	"github.com/realip/realip/internal/cmddoc"
	"github.com/realip/realip/wire"
)

func edgePage(t *testing.T) *cmddoc.Page {
	t.Helper()
	p, err := cmddoc.ReadMan("realip-edge.8")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func itemKeys(t *testing.T, p *cmddoc.Page, heading string) []string {
	t.Helper()
	items, err := p.Items(heading)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, it := range items {
		out = append(out, it.Key())
	}
	return out
}

// TestManPageOptions: OPTIONS of realip-edge(8) is exactly the flag set,
// a value flag as "-name VALUE" with its default written out.
func TestManPageOptions(t *testing.T) {
	p := edgePage(t)
	items, err := p.Items("OPTIONS")
	if err != nil {
		t.Fatal(err)
	}
	for _, problem := range cmddoc.CheckFlags(newFlagSet(&flags{}), items) {
		t.Errorf("realip-edge.8 OPTIONS: %s", problem)
	}
	// The synopsis and the signals and statuses main implements.
	if got, err := p.Lines("SYNOPSIS"); err != nil || !slices.Equal(got, []string{
		"realip-edge -rules FILE [-origin-groups FILE] [OPTION...]",
		"realip-edge -rules FILE [-origin-groups FILE] -check",
	}) {
		t.Errorf("realip-edge.8 SYNOPSIS: %q, %v", got, err)
	}
	if got := itemKeys(t, p, "SIGNALS"); !slices.Equal(got, []string{"SIGHUP", "SIGTERM", "SIGINT"}) {
		t.Errorf("realip-edge.8 SIGNALS: %q; main handles SIGHUP, SIGTERM, SIGINT", got)
	}
	if got := itemKeys(t, p, "EXIT STATUS"); !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Errorf("realip-edge.8 EXIT STATUS: %q; main exits 0, 1 or 2", got)
	}
}

// TestManPageRules: the rules file format of realip-edge(8) agrees with
// package edge/rules: every IP passing mode with the protocols it is for,
// the reserved ports, the limits.
func TestManPageRules(t *testing.T) {
	p := edgePage(t)
	var modes []string
	items, err := p.Items("IP PASSING MODES")
	if err != nil {
		t.Fatal(err)
	}
	text := make(map[string]string)
	for _, it := range items {
		text[it.Key()] = it.Text
	}
	for m := wire.Proto(0); int(m) < wire.NumProtos; m++ {
		tcp, udp := rules.TCP.Supports(m), rules.UDP.Supports(m)
		if !tcp && !udp {
			continue
		}
		kw := rules.ModeKeyword(m)
		modes = append(modes, kw)
		want := map[[2]bool]string{{true, true}: "TCP and UDP.", {true, false}: "TCP only.", {false, true}: "UDP only."}[[2]bool{tcp, udp}]
		if t2, ok := text[kw]; ok && !strings.HasPrefix(t2, want) {
			t.Errorf("realip-edge.8 IP PASSING MODES, %s: the text should start %q: %q", kw, want, t2)
		}
	}
	if got := itemKeys(t, p, "IP PASSING MODES"); !sameSet(got, modes) {
		t.Errorf("realip-edge.8 IP PASSING MODES: %q; the rules take %q", got, modes)
	}
	rulesText, err := p.Text("RULES FILE")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"TCP " + reservedPorts(t, "tcp"),
		"UDP " + reservedPorts(t, "udp"),
		"at most " + strconv.Itoa(rules.MaxRules) + " rules",
		"each port 1 to " + strconv.Itoa(rules.MaxForwardPort),
		"A port, 1 to " + strconv.Itoa(rules.MaxOriginPort),
		"1 to " + strconv.Itoa(rules.MaxTagLen) + " characters",
	} {
		if !strings.Contains(rulesText, want) {
			t.Errorf("realip-edge.8 RULES FILE does not say %q", want)
		}
	}
	groups, err := p.Text("ORIGIN GROUPS FILE")
	if err != nil {
		t.Fatal(err)
	}
	if want := "1 to " + strconv.Itoa(rules.MaxGroupName) + " letters"; !strings.Contains(groups, want) {
		t.Errorf("realip-edge.8 ORIGIN GROUPS FILE does not say %q", want)
	}
}

var reservedList = regexp.MustCompile(`includes reserved \w+ ports? ([0-9, ]+)`)

// reservedPorts returns the reserved ports of proto as the rules parser
// names them when a range covers them all: "3943, 3944, ...".
func reservedPorts(t *testing.T, proto string) string {
	t.Helper()
	line := proto + ":1-" + strconv.Itoa(rules.MaxForwardPort) + " 192.0.2.1 80 off off\n"
	_, err := rules.Parse(strings.NewReader(line), "reserved", nil)
	if err == nil {
		t.Fatalf("%q: no error for a range over every port", line)
	}
	m := reservedList.FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("%q: the error names no reserved ports: %v", line, err)
	}
	return strings.TrimSpace(m[1])
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// edgeValueCompletions are what the value of each value flag completes to
// in the test's folder: any file, folders only, or nothing (a value to
// type). A new value flag must be added here.
var edgeValueCompletions = map[string][]string{
	"rules":                {"edge.groups", "edge.rules", "origins.d"},
	"origin-groups":        {"edge.groups", "edge.rules", "origins.d"},
	"toa-cgroup":           {"origins.d"},
	"metrics":              nil,
	"listen-ip":            nil,
	"tcp-idle":             nil,
	"udp-idle":             nil,
	"dial-timeout":         nil,
	"drain-timeout":        nil,
	"check-every":          nil,
	"max-udp-flows":        nil,
	"max-tcp-conns":        nil,
	"max-udp-flows-per-ip": nil,
	"max-tcp-conns-per-ip": nil,
	"toa-kind-v4":          nil,
	"toa-kind-v6":          nil,
}

// TestCompletion completes realip-edge through packaging/completion's
// script in a real bash with bash-completion: its flags, whether each
// takes a value, and the files a value flag takes.
func TestCompletion(t *testing.T) {
	cmddoc.RequireBashCompletion(t)
	script, err := cmddoc.CompletionFor("realip-edge")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	for _, f := range []string{"edge.rules", "edge.groups"} {
		if err := os.WriteFile(filepath.Join(work, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(work, "origins.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := cmddoc.Completion{Script: script, WorkDir: work}
	fs := newFlagSet(&flags{})
	problems, err := c.CheckFlagCompletion("realip-edge ", fs)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
	if got, err := c.Complete("realip-edge "); err != nil || !slices.Equal(got, cmddoc.FlagNames(fs)) {
		t.Errorf("realip-edge <TAB>: %q (%v), want the flags", got, err)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			return
		}
		want, ok := edgeValueCompletions[f.Name]
		if !ok {
			t.Errorf("-%s: a value flag the test does not know; add it to edgeValueCompletions", f.Name)
			return
		}
		for _, line := range []string{"realip-edge -" + f.Name + " ", "realip-edge -check -" + f.Name + "="} {
			got, err := c.Complete(line)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%q completes to %q, want %q", line, got, want)
			}
		}
	})
}
