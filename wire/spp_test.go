package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

func TestSPPRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		h    SPPHeader
	}{
		{"ipv4", SPPHeader{netip.MustParseAddrPort("192.0.2.7:40000"), netip.MustParseAddrPort("198.51.100.1:6666")}},
		{"ipv6", SPPHeader{netip.MustParseAddrPort("[2001:db8::7]:1"), netip.MustParseAddrPort("[2001:db8::1]:65535")}},
		{"mixed", SPPHeader{netip.MustParseAddrPort("[2001:db8::7]:5"), netip.MustParseAddrPort("198.51.100.1:6666")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := AppendSPP(nil, tt.h)
			b = append(b, "payload"...)
			got, err := ParseSPP(b)
			if err != nil {
				t.Fatalf("ParseSPP: %v", err)
			}
			if got != tt.h {
				t.Fatalf("got %+v, want %+v", got, tt.h)
			}
			if string(b[SPPHeaderLen:]) != "payload" {
				t.Fatalf("payload %q", b[SPPHeaderLen:])
			}
		})
	}
}

func TestSPPWireLayout(t *testing.T) {
	h := SPPHeader{netip.MustParseAddrPort("1.2.3.4:258"), netip.MustParseAddrPort("5.6.7.8:772")}
	want := []byte{0x56, 0xEC,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 5, 6, 7, 8,
		1, 2, 3, 4}
	if got := AppendSPP(nil, h); !bytes.Equal(got, want) {
		t.Fatalf("layout\n got %x\nwant %x", got, want)
	}
}

func TestParseSPPErrors(t *testing.T) {
	valid := AppendSPP(nil, SPPHeader{netip.MustParseAddrPort("192.0.2.7:40000"), netip.MustParseAddrPort("198.51.100.1:6666")})
	zeroClient := bytes.Clone(valid)
	clear(zeroClient[2:18])
	zeroPort := bytes.Clone(valid)
	zeroPort[34], zeroPort[35] = 0, 0
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrNoHeader},
		{"one byte", []byte{0x56}, ErrNoHeader},
		{"wrong magic", append([]byte{0x56, 0xED}, valid[2:]...), ErrNoHeader},
		{"magic only", valid[:2], ErrTruncated},
		{"37 bytes", valid[:37], ErrTruncated},
		{"unspecified client", zeroClient, ErrMalformed},
		{"client port zero", zeroPort, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseSPP(tt.in); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestParseSPPDoesNotAllocate(t *testing.T) {
	b := AppendSPP(nil, SPPHeader{netip.MustParseAddrPort("192.0.2.7:40000"), netip.MustParseAddrPort("198.51.100.1:6666")})
	if n := testing.AllocsPerRun(100, func() { _, _ = ParseSPP(b) }); n != 0 {
		t.Fatalf("ParseSPP allocates %v times", n)
	}
}

func FuzzParseSPP(f *testing.F) {
	f.Add(AppendSPP(nil, SPPHeader{netip.MustParseAddrPort("192.0.2.7:40000"), netip.MustParseAddrPort("198.51.100.1:6666")}))
	f.Add(AppendSPP([]byte{}, SPPHeader{netip.MustParseAddrPort("[2001:db8::7]:1"), netip.MustParseAddrPort("[2001:db8::1]:2")}))
	f.Add([]byte{0x56, 0xEC, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseSPP(b)
		if err != nil {
			return
		}
		again, err := ParseSPP(AppendSPP(nil, h))
		if err != nil || again != h {
			t.Fatalf("re-encoding %+v gave %+v, %v", h, again, err)
		}
	})
}
