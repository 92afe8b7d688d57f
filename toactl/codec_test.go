package toactl

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/mdlayher/netlink"
)

func TestConfigRoundTrip(t *testing.T) {
	cfg := Config{
		Trusted: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::/32")},
		Kinds:   []uint8{200, 253, 254},
	}
	b, err := encodeConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, cfg) {
		t.Fatalf("got %+v, want %+v", got, cfg)
	}
}

func TestEncodeConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"invalid prefix": {Trusted: []netip.Prefix{{}}},
		"empty kinds":    {Kinds: []uint8{}},
		"kind 1":         {Kinds: []uint8{1}},
	} {
		if _, err := encodeConfig(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestParseLists(t *testing.T) {
	tests := []struct {
		in      string
		want    []netip.Prefix
		wantErr bool
	}{
		{"", nil, false},
		{"198.51.100.7", []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32")}, false},
		{"198.51.100.7/24, 2001:db8::1/32", []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::/32")}, false},
		{"nonsense", nil, true},
		{"10.0.0.0/40", nil, true},
	}
	for _, tt := range tests {
		got, err := ParsePrefixes(tt.in)
		if (err != nil) != tt.wantErr || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParsePrefixes(%q) = %v, %v", tt.in, got, err)
		}
	}
	if k, err := ParseKinds("200, 253"); err != nil || !reflect.DeepEqual(k, []uint8{200, 253}) {
		t.Errorf("ParseKinds: %v %v", k, err)
	}
	for _, bad := range []string{"1", "256", "x"} {
		if _, err := ParseKinds(bad); err == nil {
			t.Errorf("ParseKinds(%q) accepted", bad)
		}
	}
}

func TestDecodeStatsAndEntry(t *testing.T) {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(attrStats, func(nae *netlink.AttributeEncoder) error {
		for i, name := range []string{"syn_recv_sock_toa", "syn_recv_sock_no_toa"} {
			nae.Nested(attrStat, func(sae *netlink.AttributeEncoder) error {
				sae.String(attrStatName, name)
				sae.Uint64(attrStatValue, uint64(i+7))
				return nil
			})
		}
		return nil
	})
	ae.Uint64(attrLive, 3)
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	stats, live, err := decodeStats(b)
	want := []Stat{{"syn_recv_sock_toa", 7}, {"syn_recv_sock_no_toa", 8}}
	if err != nil || live != 3 || !reflect.DeepEqual(stats, want) {
		t.Fatalf("stats %v live %d err %v", stats, live, err)
	}

	e := Entry{
		Local:  netip.MustParseAddrPort("198.51.100.10:80"),
		Proxy:  netip.MustParseAddrPort("198.51.100.1:40000"),
		Client: netip.MustParseAddrPort("[2001:db8::7]:5555"),
	}
	ae = netlink.NewAttributeEncoder()
	ae.Bytes(attrLocal, encodeAddr(e.Local))
	ae.Bytes(attrProxy, encodeAddr(e.Proxy))
	ae.Bytes(attrClient, encodeAddr(e.Client))
	b, _ = ae.Encode()
	got, err := decodeEntry(b)
	if err != nil || got != e {
		t.Fatalf("entry %+v, %v", got, err)
	}
	ae = netlink.NewAttributeEncoder()
	ae.Bytes(attrLocal, []byte{1, 2, 3})
	b, _ = ae.Encode()
	if _, err := decodeEntry(b); err == nil {
		t.Fatal("short address accepted")
	}
}

func FuzzDecode(f *testing.F) {
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(attrLocal, encodeAddr(netip.MustParseAddrPort("1.2.3.4:5")))
	ae.String(attrTrusted, "10.0.0.0/8")
	seed, _ := ae.Encode()
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeEntry(b)
		decodeStats(b)
		decodeConfig(b)
	})
}
