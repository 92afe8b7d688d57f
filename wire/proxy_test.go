package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"testing/iotest"
)

var (
	client4 = netip.MustParseAddrPort("192.0.2.7:40000")
	vip4    = netip.MustParseAddrPort("198.51.100.1:443")
	client6 = netip.MustParseAddrPort("[2001:db8::7]:40000")
	vip6    = netip.MustParseAddrPort("[2001:db8::1]:443")
)

func mustHeader(t testing.TB, h *ProxyHeader, opt MarshalOptions) []byte {
	t.Helper()
	b, err := AppendProxyHeader(nil, h, opt)
	if err != nil {
		t.Fatalf("AppendProxyHeader(%+v): %v", h, err)
	}
	return b
}

func newReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, MaxV2HeaderLen) }

func TestDetect(t *testing.T) {
	tests := []struct {
		in      string
		version int
		decided bool
	}{
		{"", 0, false},
		{"P", 0, false},
		{"PROXY", 0, false},
		{"PROXY ", 1, true},
		{"PROXY TCP4 ...", 1, true},
		{"PROXZ", 0, true},
		{"GET / HTTP/1.1", 0, true},
		{"\r\n\r\n\x00", 0, false},
		{"\r\n\r\n\x00\r\nQUIT\n", 2, true},
		{"\r\n\r\n\x01", 0, true},
	}
	for _, tt := range tests {
		v, d := Detect([]byte(tt.in))
		if v != tt.version || d != tt.decided {
			t.Errorf("Detect(%q) = %d, %v; want %d, %v", tt.in, v, d, tt.version, tt.decided)
		}
	}
}

func TestReadProxyHeader(t *testing.T) {
	tlvs := []TLV{{TLVALPN, []byte("h2")}, {TLVAuthority, []byte("example.com")}, {TLVUniqueID, []byte{1, 2, 3}}, {0xE0, []byte("custom")}}
	tests := []struct {
		name string
		raw  []byte
		want ProxyHeader
	}{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n"),
			ProxyHeader{Version: 1, Source: client4, Destination: vip4}},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n"),
			ProxyHeader{Version: 1, Source: client6, Destination: vip6}},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), ProxyHeader{Version: 1, Local: true}},
		{"v1 unknown with junk", []byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), ProxyHeader{Version: 1, Local: true}},
		{"v2 tcp4", mustHeader(t, &ProxyHeader{Version: 2, Source: client4, Destination: vip4}, MarshalOptions{}),
			ProxyHeader{Version: 2, Source: client4, Destination: vip4}},
		{"v2 tcp6 tlvs crc", mustHeader(t, &ProxyHeader{Version: 2, Source: client6, Destination: vip6, TLVs: tlvs}, MarshalOptions{CRC32C: true}),
			ProxyHeader{Version: 2, Source: client6, Destination: vip6, TLVs: tlvs}},
		{"v2 local", mustHeader(t, &ProxyHeader{Version: 2, Local: true}, MarshalOptions{}), ProxyHeader{Version: 2, Local: true}},
		{"v2 mixed families mapped", mustHeader(t, &ProxyHeader{Version: 2, Source: client4, Destination: vip6}, MarshalOptions{}),
			ProxyHeader{Version: 2, Source: client4, Destination: vip6}},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			name := tt.name
			var r io.Reader = io.MultiReader(bytes.NewReader(tt.raw), strings.NewReader("payload"))
			if oneByte {
				name += " one byte at a time"
				r = iotest.OneByteReader(r)
			}
			t.Run(name, func(t *testing.T) {
				br := newReader(r)
				got, err := ReadProxyHeader(br)
				if err != nil {
					t.Fatalf("ReadProxyHeader: %v", err)
				}
				checkHeader(t, got, &tt.want)
				rest, _ := io.ReadAll(br)
				if string(rest) != "payload" {
					t.Fatalf("bytes after the header: %q, want %q", rest, "payload")
				}
			})
		}
	}
}

func checkHeader(t *testing.T, got, want *ProxyHeader) {
	t.Helper()
	if got.Version != want.Version || got.Local != want.Local || got.Source != want.Source || got.Destination != want.Destination || got.Datagram != want.Datagram {
		t.Fatalf("header %+v, want %+v", got, want)
	}
	var tlvs []TLV
	for _, x := range got.TLVs {
		if x.Type != TLVCRC32C {
			tlvs = append(tlvs, x)
		}
	}
	if len(tlvs) != len(want.TLVs) {
		t.Fatalf("TLVs %v, want %v", tlvs, want.TLVs)
	}
	for i := range tlvs {
		if tlvs[i].Type != want.TLVs[i].Type || !bytes.Equal(tlvs[i].Value, want.TLVs[i].Value) {
			t.Fatalf("TLV %d = %v, want %v", i, tlvs[i], want.TLVs[i])
		}
	}
}

func TestReadProxyHeaderErrors(t *testing.T) {
	v2 := mustHeader(t, &ProxyHeader{Version: 2, Source: client4, Destination: vip4, TLVs: []TLV{{TLVNoop, []byte{0}}}}, MarshalOptions{CRC32C: true})
	badCRC := bytes.Clone(v2)
	badCRC[len(badCRC)-1] ^= 0xff
	hugeLen := bytes.Clone(v2)
	binary.BigEndian.PutUint16(hugeLen[14:], 5000)
	badVersion := mustHeader(t, &ProxyHeader{Version: 2, Source: client4, Destination: vip4}, MarshalOptions{})
	badVersion[12] = 0x31
	overrun := mustHeader(t, &ProxyHeader{Version: 2, Source: client4, Destination: vip4, TLVs: []TLV{{TLVNoop, []byte{1, 2, 3, 4}}}}, MarshalOptions{})
	binary.BigEndian.PutUint16(overrun[len(overrun)-6:], 9)
	tests := []struct {
		name string
		raw  string
		want error
	}{
		{"no header", "GET / HTTP/1.1\r\n", ErrNoHeader},
		{"empty stream", "", ErrTruncated},
		{"signature cut", "PROX", ErrTruncated},
		{"v1 cut", "PROXY TCP4 192.0.2.7", ErrTruncated},
		{"v1 bare LF", "PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\n", ErrMalformed},
		{"v1 too long", "PROXY TCP4 " + strings.Repeat("1", 120) + "\r\n", ErrMalformed},
		{"v1 bad address", "PROXY TCP4 192.0.2.777 198.51.100.1 40000 443\r\n", ErrMalformed},
		{"v1 bad port", "PROXY TCP4 192.0.2.7 198.51.100.1 70000 443\r\n", ErrMalformed},
		{"v1 family mismatch", "PROXY TCP4 2001:db8::7 198.51.100.1 40000 443\r\n", ErrMalformed},
		{"v1 unknown proto", "PROXY UDP4 192.0.2.7 198.51.100.1 40000 443\r\n", ErrMalformed},
		{"v2 cut in fixed part", string(v2[:14]), ErrTruncated},
		{"v2 cut in body", string(v2[:20]), ErrTruncated},
		{"v2 bad crc", string(badCRC), ErrChecksum},
		{"v2 length over limit", string(hugeLen), ErrMalformed},
		{"v2 bad version", string(badVersion), ErrMalformed},
		{"v2 TLV overruns", string(overrun), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadProxyHeader(newReader(strings.NewReader(tt.raw)))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReadProxyHeaderLeavesNonHeaderUntouched(t *testing.T) {
	br := newReader(strings.NewReader("PROXZ hello"))
	if _, err := ReadProxyHeader(br); !errors.Is(err, ErrNoHeader) {
		t.Fatalf("err = %v", err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "PROXZ hello" {
		t.Fatalf("stream after detection: %q", rest)
	}
}

func TestReadProxyHeaderKeepsIOError(t *testing.T) {
	boom := errors.New("boom")
	_, err := ReadProxyHeader(newReader(io.MultiReader(strings.NewReader("PROXY TCP4"), iotest.ErrReader(boom))))
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want it to wrap %v", err, boom)
	}
}

func TestReadProxyHeaderSmallBuffer(t *testing.T) {
	if _, err := ReadProxyHeader(bufio.NewReader(strings.NewReader("x"))); err == nil {
		t.Fatal("a reader smaller than MaxV2HeaderLen was accepted")
	}
}

func TestParseProxyDatagram(t *testing.T) {
	hdr := mustHeader(t, &ProxyHeader{Version: 2, Datagram: true, Source: client6, Destination: vip6}, MarshalOptions{CRC32C: true})
	h, payload, err := ParseProxyDatagram(append(bytes.Clone(hdr), "dns query"...))
	if err != nil {
		t.Fatal(err)
	}
	checkHeader(t, h, &ProxyHeader{Version: 2, Datagram: true, Source: client6, Destination: vip6})
	if string(payload) != "dns query" {
		t.Fatalf("payload %q", payload)
	}
	badCRC := bytes.Clone(hdr)
	badCRC[20] ^= 1
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"no header", []byte("dns query"), ErrNoHeader},
		{"empty", nil, ErrTruncated},
		{"signature cut", hdr[:5], ErrTruncated},
		{"fixed part cut", hdr[:13], ErrTruncated},
		{"body cut", hdr[:len(hdr)-1], ErrTruncated},
		{"v1", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n"), ErrMalformed},
		{"bad crc", badCRC, ErrChecksum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := ParseProxyDatagram(tt.in); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAppendProxyHeaderErrors(t *testing.T) {
	tests := []struct {
		name string
		h    ProxyHeader
		opt  MarshalOptions
	}{
		{"version 3", ProxyHeader{Version: 3, Local: true}, MarshalOptions{}},
		{"v1 with TLV", ProxyHeader{Version: 1, Source: client4, Destination: vip4, TLVs: []TLV{{1, nil}}}, MarshalOptions{}},
		{"v1 with crc", ProxyHeader{Version: 1, Source: client4, Destination: vip4}, MarshalOptions{CRC32C: true}},
		{"missing destination", ProxyHeader{Version: 2, Source: client4}, MarshalOptions{}},
	}
	for _, tt := range tests {
		if _, err := AppendProxyHeader(nil, &tt.h, tt.opt); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
}

func TestHeaderTLVAccessors(t *testing.T) {
	h := &ProxyHeader{TLVs: []TLV{{TLVALPN, []byte("h2")}, {TLVAuthority, []byte("example.com")}, {TLVUniqueID, []byte("id")}}}
	if h.ALPN() != "h2" || h.Authority() != "example.com" || string(h.UniqueID()) != "id" {
		t.Fatalf("accessors: %q %q %q", h.ALPN(), h.Authority(), h.UniqueID())
	}
	if _, ok := h.SSL(); ok {
		t.Fatal("SSL reported without an SSL TLV")
	}
}

func FuzzReadProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\nrest"))
	f.Add([]byte("PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(mustHeader(f, &ProxyHeader{Version: 2, Source: client4, Destination: vip4, TLVs: []TLV{{TLVALPN, []byte("h2")}}}, MarshalOptions{CRC32C: true}))
	f.Add(mustHeader(f, &ProxyHeader{Version: 2, Local: true}, MarshalOptions{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		br := newReader(bytes.NewReader(b))
		h, err := ReadProxyHeader(br)
		if err != nil {
			return
		}
		rest, _ := io.ReadAll(br)
		if len(rest) > len(b) {
			t.Fatalf("more bytes after the header (%d) than input (%d)", len(rest), len(b))
		}
		if h.Version == 2 && !h.Local {
			if _, err := AppendProxyHeader(nil, h, MarshalOptions{}); err != nil {
				t.Fatalf("a parsed header does not marshal again: %v", err)
			}
		}
	})
}

func FuzzParseProxyDatagram(f *testing.F) {
	f.Add(mustHeader(f, &ProxyHeader{Version: 2, Datagram: true, Source: client4, Destination: vip4}, MarshalOptions{CRC32C: true}))
	f.Add(mustHeader(f, &ProxyHeader{Version: 2, Datagram: true, Source: client6, Destination: vip6}, MarshalOptions{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, payload, err := ParseProxyDatagram(b)
		if err == nil && len(payload) > len(b) {
			t.Fatal("payload longer than the datagram")
		}
	})
}

// plainDatagramHeaders are v2 headers of the form parsePlainV2 reads in
// place, with what the full parser makes of them.
func plainDatagramHeaders(t testing.TB) map[string][]byte {
	return map[string][]byte{
		"udp4":       mustHeader(t, &ProxyHeader{Version: 2, Datagram: true, Source: client4, Destination: vip4}, MarshalOptions{}),
		"tcp4":       mustHeader(t, &ProxyHeader{Version: 2, Source: client4, Destination: vip4}, MarshalOptions{}),
		"udp6":       mustHeader(t, &ProxyHeader{Version: 2, Datagram: true, Source: client6, Destination: vip6}, MarshalOptions{}),
		"udp mapped": mustHeader(t, &ProxyHeader{Version: 2, Datagram: true, Source: client4, Destination: vip6}, MarshalOptions{}),
	}
}

func TestParsePlainV2MatchesFullParser(t *testing.T) {
	for name, raw := range plainDatagramHeaders(t) {
		t.Run(name, func(t *testing.T) {
			want, err := parseV2Full(raw)
			if err != nil {
				t.Fatalf("full parser: %v", err)
			}
			var got ProxyHeader
			if !parsePlainV2(&got, raw) {
				t.Fatal("not read in place")
			}
			checkHeader(t, &got, want)
		})
	}
}

func TestParsePlainV2LeavesOthers(t *testing.T) {
	withTLV := mustHeader(t, &ProxyHeader{Version: 2, Datagram: true, Source: client4, Destination: vip4}, MarshalOptions{CRC32C: true})
	local := mustHeader(t, &ProxyHeader{Version: 2, Local: true}, MarshalOptions{})
	unix := bytes.Clone(plainDatagramHeaders(t)["udp4"])
	unix[13] = 0x32
	badTransport := bytes.Clone(unix)
	badTransport[13] = 0x13
	tests := map[string][]byte{"TLV": withTLV, "LOCAL": local, "unix family": unix, "transport 3": badTransport}
	for name, raw := range tests {
		h := ProxyHeader{Version: 9}
		if parsePlainV2(&h, raw) || h.Version != 9 {
			t.Errorf("%s: read in place (%+v)", name, h)
		}
	}
}

func TestParseProxyDatagramPlainAllocs(t *testing.T) {
	d := append(plainDatagramHeaders(t)["udp4"], "dns query"...)
	var src netip.AddrPort
	allocs := testing.AllocsPerRun(100, func() {
		h, _, err := ParseProxyDatagram(d)
		if err != nil {
			t.Fatal(err)
		}
		src = h.Source
	})
	if src != client4 {
		t.Fatalf("source %s, want %s", src, client4)
	}
	if allocs != 0 {
		t.Errorf("%.0f allocations per plain datagram, want 0", allocs)
	}
}

func BenchmarkParseProxyDatagram(b *testing.B) {
	crc := mustHeader(b, &ProxyHeader{Version: 2, Datagram: true, Source: client4, Destination: vip4}, MarshalOptions{CRC32C: true})
	for name, hdr := range map[string][]byte{
		"plain udp4":  plainDatagramHeaders(b)["udp4"],
		"plain udp6":  plainDatagramHeaders(b)["udp6"],
		"crc32c udp4": crc,
	} {
		d := append(bytes.Clone(hdr), make([]byte, 64)...)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				h, _, err := ParseProxyDatagram(d)
				if err != nil || !h.Source.IsValid() {
					b.Fatal(err)
				}
			}
		})
	}
	// What every datagram cost before parsePlainV2.
	plain := plainDatagramHeaders(b)["udp4"]
	b.Run("plain udp4 full parser", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := parseV2Full(plain); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzParsePlainV2 checks that a header read in place is read as the full
// parser reads it.
func FuzzParsePlainV2(f *testing.F) {
	for _, raw := range plainDatagramHeaders(f) {
		f.Add(raw)
	}
	f.Add(mustHeader(f, &ProxyHeader{Version: 2, Local: true}, MarshalOptions{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		total, err := datagramHeaderLen(b)
		if err != nil {
			return
		}
		var got ProxyHeader
		if !parsePlainV2(&got, b[:total]) {
			return
		}
		want, err := parseV2Full(b[:total])
		if err != nil {
			t.Fatalf("read in place as %+v, the full parser fails: %v", got, err)
		}
		checkHeader(t, &got, want)
	})
}
