//go:build linux

package main

import (
	"strings"
	"testing"
)

// TestRows: every row of the suite's table has a name of its own and
// both expectations, and the receivers differ where the issue says they
// must (the NAT64 case, the entries, the stop).
func TestRows(t *testing.T) {
	seen := map[string]row{}
	for _, r := range rows {
		if r.name == "" || r.kmod == "" || r.ebpf == "" {
			t.Errorf("row %+v: empty", r)
		}
		if _, dup := seen[r.name]; dup {
			t.Errorf("row %q twice", r.name)
		}
		seen[r.name] = r
	}
	for _, name := range []string{"C IPv4 server, IPv6 client", "load: entries", "load: entries elsewhere", "stop", "stop: gone", "freed"} {
		if r, ok := seen[name]; !ok || r.kmod == r.ebpf {
			t.Errorf("row %q: missing, or no difference between the receivers (%+v)", name, r)
		}
	}
	// The NAT64 row is named as the functional round names its check.
	svc := services[0]
	if got := svc.name + ", IPv6 client"; !strings.HasPrefix(got, "C IPv4 server") || seen[got].name != got {
		t.Errorf("the functional round's check %q has no row", got)
	}
}
