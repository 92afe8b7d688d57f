//go:build linux

package toarecv

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
)

func TestPrefixKey(t *testing.T) {
	tests := []struct {
		in       string
		wantBits uint32
		wantBack string
	}{
		{"198.51.100.0/24", 120, "198.51.100.0/24"},
		{"198.51.100.7/24", 120, "198.51.100.0/24"}, // masked
		{"0.0.0.0/0", 96, "0.0.0.0/0"},
		{"203.0.113.9/32", 128, "203.0.113.9/32"},
		{"2001:db8::/32", 32, "2001:db8::/32"},
		{"::/0", 0, "::/0"},
		{"2001:db8::1/128", 128, "2001:db8::1/128"},
	}
	for _, tc := range tests {
		k := prefixKey(netip.MustParsePrefix(tc.in))
		if k.Prefixlen != tc.wantBits {
			t.Errorf("prefixKey(%s).Prefixlen = %d, want %d", tc.in, k.Prefixlen, tc.wantBits)
		}
		if got := keyPrefix(k).String(); got != tc.wantBack {
			t.Errorf("keyPrefix(prefixKey(%s)) = %s, want %s", tc.in, got, tc.wantBack)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	many := make([]netip.Prefix, MaxPrefixes+1)
	for i := range many {
		many[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32)
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"empty", Config{}, ""},
		{"typical", Config{Trusted: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, Kinds: []uint8{200, 254}}, ""},
		{"too-many", Config{Trusted: many}, "at most 256"},
		{"invalid-prefix", Config{Trusted: []netip.Prefix{{}}}, "invalid trusted prefix"},
		{"kind-nop", Config{Kinds: []uint8{1}}, "kind 1 is no option"},
		{"kind-eol", Config{Kinds: []uint8{200, 0}}, "kind 0 is no option"},
		{"kind-timestamps", Config{Kinds: []uint8{200, 8}}, ""}, // as toa.ko: the operator's choice
		{"kind-2", Config{Kinds: []uint8{2}}, ""},
	}
	for _, tc := range tests {
		err := tc.cfg.check()
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: check() = %v, want error containing %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestAddrPort(t *testing.T) {
	port := func(p uint16) uint16 { // as the program stores it: big-endian in memory
		var b [2]byte
		binary.BigEndian.PutUint16(b[:], p)
		return binary.NativeEndian.Uint16(b[:])
	}
	var v4 [16]uint8
	copy(v4[:], []byte{203, 0, 113, 7})
	v6 := netip.MustParseAddr("2001:db8::7").As16()
	if got := addrPort(v4, 4, port(4242)); got.String() != "203.0.113.7:4242" {
		t.Errorf("IPv4: %v", got)
	}
	if got := addrPort(v6, 6, port(443)); got.String() != "[2001:db8::7]:443" {
		t.Errorf("IPv6: %v", got)
	}
}

func TestCounterNamesMatchProgram(t *testing.T) {
	if len(CounterNames) != len(recvSpecsCounters(t)) {
		t.Fatalf("CounterNames has %d names, the program's toa_stats map %d slots", len(CounterNames), len(recvSpecsCounters(t)))
	}
}

// recvSpecsCounters returns one slot per counter of the compiled program.
func recvSpecsCounters(t *testing.T) []struct{} {
	spec, err := loadRecv()
	if err != nil {
		t.Fatal(err)
	}
	return make([]struct{}, spec.Maps["toa_stats"].MaxEntries)
}

func TestCounterSum(t *testing.T) {
	if got := (Counter{PerCPU: []uint64{1, 2, 3}}).Sum(); got != 6 {
		t.Fatalf("Sum = %d", got)
	}
}
