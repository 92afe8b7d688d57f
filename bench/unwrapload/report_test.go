//go:build linux

package main

import (
	"strings"
	"testing"
)

func TestRatioLine(t *testing.T) {
	r := &report{}
	a := []sample{{Rep: "1", Value: 90}, {Rep: "2", Value: 110}, {Rep: "3", Value: 100}}
	b := []sample{{Rep: "1", Value: 100}, {Rep: "2", Value: 100}, {Rep: "3", Value: 100}}
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
