//go:build linux

package main

import (
	"strings"
	"testing"
)

func TestParseResult(t *testing.T) {
	for _, tc := range []struct {
		line   string
		ok     bool
		relay  string
		value  float64
		hasCPU bool
		notes  string
	}{
		{"result relay=realip rep=2 metric=udp_rt_per_s value=123.5 unit=req/s gen_cores=0.30 relay_cores=0.50 relay_us_per_op=40.1 op=req lost=3 bad=0",
			true, "realip", 123.5, true, "lost=3"},
		{"result relay=direct rep=1 metric=tcp_MBps value=9 unit=MB/s gen_cores=0.1 errors=0", true, "direct", 9, false, ""},
		{"result relay=x rep=1 metric=tcp_MBps value=nan? unit=MB/s", false, "", 0, false, ""},
		{"check tcp 198.51.100.2:9001 header none: the server saw 198.51.100.1:1", false, "", 0, false, ""},
		{"", false, "", 0, false, ""},
	} {
		relay, _, s, ok := parseResult(tc.line)
		if ok != tc.ok || relay != tc.relay || s.value != tc.value || s.hasCPU != tc.hasCPU || strings.Join(s.notes, " ") != tc.notes {
			t.Errorf("parseResult(%q) = %q %+v %v", tc.line, relay, s, ok)
		}
	}
}

func TestRatioLine(t *testing.T) {
	r := &report{}
	a := []sample{{rep: "1", value: 90}, {rep: "2", value: 110}, {rep: "3", value: 100}}
	b := []sample{{rep: "1", value: 100}, {rep: "2", value: 100}, {rep: "3", value: 100}}
	for _, tc := range []struct {
		target float64
		want   []string
	}{
		{1.0, []string{"1.00x against base", "pairs 0.90..1.10", "target >=1.00: met"}},
		{1.05, []string{"target >=1.05: NOT met"}},
		{0, []string{"1.00x against base"}},
	} {
		got := r.ratioLine("fig", a, "base", b, tc.target)
		for _, w := range tc.want {
			if !strings.Contains(got.text, w) {
				t.Errorf("target %v: %q lacks %q", tc.target, got.text, w)
			}
		}
		if tc.target == 0 && strings.Contains(got.text, "target") {
			t.Errorf("no target, yet %q", got.text)
		}
	}
}

func TestOrder(t *testing.T) {
	r := &report{subject: "realip", ceiling: "direct", baselines: []string{"go-mmproxy", "haproxy"},
		variants: []variant{{name: "realip-spp"}},
		relays:   []string{"haproxy", "other", "realip-spp", "go-mmproxy", "realip", "direct"}}
	r.order()
	if got := strings.Join(r.relays, " "); got != "direct realip realip-spp go-mmproxy haproxy other" {
		t.Errorf("order: %s", got)
	}
}
