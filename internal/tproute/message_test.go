//go:build linux

package tproute

import (
	"net/netip"
	"testing"
)

// TestMessageRoundTrip checks that what marshal encodes, parse reads back:
// Check compares the kernel's dumps with the entries built here, so the
// two must agree on every field, big table numbers included.
func TestMessageRoundTrip(t *testing.T) {
	for _, c := range []Config{
		{},
		{Table: 100, Priority: 1, Mark: 0xffffffff, Sources: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}},
		{Table: 1 << 31, Priority: 32765, Sources: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}},
	} {
		c = c.WithDefaults()
		for _, want := range c.wantRules() {
			b, err := want.marshal()
			if err != nil {
				t.Fatalf("marshal %v: %v", want, err)
			}
			got, err := parseRule(b)
			if err != nil || !got.same(want) {
				t.Errorf("parseRule(marshal(%v)) = %v, %v", want, got, err)
			}
		}
		for _, want := range c.wantRoutes() {
			b, err := want.marshal()
			if err != nil {
				t.Fatalf("marshal %v: %v", want, err)
			}
			got, err := parseRoute(b)
			if err != nil || !got.same(want) {
				t.Errorf("parseRoute(marshal(%v)) = %v, %v", want, got, err)
			}
		}
	}
}

func TestParseShort(t *testing.T) {
	for n := range ruleHdrLen {
		if _, err := parseRule(make([]byte, n)); err == nil {
			t.Errorf("parseRule accepted %d bytes", n)
		}
		if _, err := parseRoute(make([]byte, n)); err == nil {
			t.Errorf("parseRoute accepted %d bytes", n)
		}
	}
}
