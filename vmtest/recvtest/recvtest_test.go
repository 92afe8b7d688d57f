//go:build linux

package recvtest

import (
	"slices"
	"strings"
	"testing"
)

func TestParseKind(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Kind
		ok   bool
	}{
		{"kmod", KindKmod, true},
		{"ebpf", KindEBPF, true},
		{"", "", false},
		{"EBPF", "", false},
		{"bpf", "", false},
	} {
		got, err := ParseKind(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseKind(%q) = %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseStats(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		names    []string
		sums     map[string]uint64
		cpus     int
		err      string
	}{
		{name: "two CPUs", in: "                 CPU0 CPU1\nsyn_recv_sock_toa 3 4\nip6_address_alloc 0 7\n",
			names: []string{"syn_recv_sock_toa", "ip6_address_alloc"}, sums: map[string]uint64{"syn_recv_sock_toa": 7, "ip6_address_alloc": 7}, cpus: 2},
		{name: "one CPU", in: "CPU0\ngetname_toa_ok 18446744073709551615\n",
			names: []string{"getname_toa_ok"}, sums: map[string]uint64{"getname_toa_ok": 1<<64 - 1}, cpus: 1},
		{name: "short row", in: "CPU0 CPU1\nsyn_recv_sock_toa 3\n", err: "1 columns, the header has 2 CPUs"},
		{name: "not a number", in: "CPU0\nsyn_recv_sock_toa x\n", err: "invalid syntax"},
		{name: "no header", in: "syn_recv_sock_toa 3\n", err: "want CPU columns"},
		{name: "empty", in: "", err: "want CPU columns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names, rows, cpus, err := parseStats([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil || !slices.Equal(names, tc.names) || cpus != tc.cpus {
				t.Fatalf("names %v, %d CPUs, %v; want %v, %d", names, cpus, err, tc.names, tc.cpus)
			}
			for name, want := range tc.sums {
				if got := sum(rows[name]); got != want {
					t.Errorf("%s sums to %d, want %d", name, got, want)
				}
			}
		})
	}
}
