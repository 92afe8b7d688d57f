//go:build linux

package edge

import (
	"bufio"
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/realip/realip/internal/testenv"
	"golang.org/x/sys/unix"

	"github.com/realip/realip/edge/rules"
	"github.com/realip/realip/wire"
)

// TestTCPHeader checks the header written to the origin before the first
// payload byte, for every IP passing mode and both families.
func TestTCPHeader(t *testing.T) {
	v4src, v4dst := netip.MustParseAddrPort("192.0.2.10:51000"), netip.MustParseAddrPort("192.0.2.1:80")
	v6src, v6dst := netip.MustParseAddrPort("[2001:db8:1::10]:51000"), netip.MustParseAddrPort("[2001:db8:1::1]:443")

	t.Run("ppv1", func(t *testing.T) {
		for _, tc := range []struct {
			src, dst netip.AddrPort
			want     string
		}{
			{v4src, v4dst, "PROXY TCP4 192.0.2.10 192.0.2.1 51000 80\r\n"},
			{v6src, v6dst, "PROXY TCP6 2001:db8:1::10 2001:db8:1::1 51000 443\r\n"},
		} {
			hdr, err := tcpHeader(wire.PPv1, tc.src, tc.dst)
			if err != nil || string(hdr) != tc.want {
				t.Errorf("tcpHeader(ppv1, %v, %v) = %q, %v; want %q", tc.src, tc.dst, hdr, err, tc.want)
			}
		}
	})
	t.Run("ppv2", func(t *testing.T) {
		for _, tc := range []struct{ src, dst netip.AddrPort }{{v4src, v4dst}, {v6src, v6dst}} {
			hdr, err := tcpHeader(wire.PPv2, tc.src, tc.dst)
			if err != nil {
				t.Fatalf("tcpHeader(ppv2, %v, %v): %v", tc.src, tc.dst, err)
			}
			// The header must be framed exactly: nothing of the payload may
			// be taken for header, so parse it with a payload behind it.
			br := bufio.NewReaderSize(bytes.NewReader(append(hdr, "payload"...)), wire.MaxV2HeaderLen)
			h, err := wire.ReadProxyHeader(br)
			if err != nil {
				t.Fatalf("parse %x: %v", hdr, err)
			}
			if h.Version != 2 || h.Local || h.Datagram || h.Source != tc.src || h.Destination != tc.dst || len(h.TLVs) != 0 {
				t.Errorf("header %+v, want a v2 stream PROXY %v -> %v without TLVs", h, tc.src, tc.dst)
			}
			if rest, _ := br.ReadString(0); rest != "payload" {
				t.Errorf("after the header: %q, want the payload", rest)
			}
		}
	})
	for _, mode := range []wire.Proto{wire.None, wire.SPP, wire.TOA} {
		t.Run(rules.ModeKeyword(mode), func(t *testing.T) {
			hdr, err := tcpHeader(mode, v4src, v4dst)
			if err != nil || hdr != nil {
				t.Errorf("tcpHeader(%v) = %q, %v; want no header", mode, hdr, err)
			}
		})
	}
}

// TestPassingFor checks what each IP passing mode means to the relays:
// the passing value, the health check's hello and a flow's datagram
// header (TestTCPHeader checks the TCP headers).
func TestPassingFor(t *testing.T) {
	client, target := netip.MustParseAddrPort("192.0.2.10:40000"), netip.MustParseAddrPort("192.0.2.1:2000")
	ppv2Dgram, err := wire.AppendProxyHeader(nil, &wire.ProxyHeader{Version: 2, Datagram: true, Source: client, Destination: target}, wire.MarshalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode  wire.Proto
		every bool // Options.PPv2EveryDatagram
		want  passing
		hello string
		dgram []byte
	}{
		{wire.None, false, passing{}, "", nil},
		{wire.TOA, false, passing{toa: true}, "", nil},
		{wire.PPv1, false, passing{tcpProxy: 1}, "PROXY UNKNOWN\r\n", nil},
		{wire.PPv2, false, passing{tcpProxy: 2, dgram: wire.PPv2}, "\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00", ppv2Dgram},
		{wire.PPv2, true, passing{tcpProxy: 2, dgram: wire.PPv2, dgramEvery: true}, "\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00", ppv2Dgram},
		{wire.SPP, false, passing{dgram: wire.SPP, dgramEvery: true, sppReplies: true}, "", wire.AppendSPP(nil, wire.SPPHeader{Client: client, Proxy: target})},
	} {
		t.Run(rules.ModeKeyword(tc.mode), func(t *testing.T) {
			p := passingFor(tc.mode, tc.every)
			if p != tc.want {
				t.Fatalf("passingFor(%v, %v) = %+v, want %+v", tc.mode, tc.every, p, tc.want)
			}
			hello, err := p.checkHello()
			if err != nil || string(hello) != tc.hello {
				t.Errorf("checkHello() = %q, %v; want %q", hello, err, tc.hello)
			}
			var buf [headroom]byte
			hdr, err := p.flowHeader(buf[:0], client, target)
			if err != nil || !bytes.Equal(hdr, tc.dgram) {
				t.Errorf("flowHeader() = %x, %v; want %x", hdr, err, tc.dgram)
			}
		})
	}
}

// tcpHeader is the header a rule in mode writes before a connection's
// first payload byte.
func tcpHeader(mode wire.Proto, src, dst netip.AddrPort) ([]byte, error) {
	pass := passingFor(mode, false)
	return pass.tcpHeader(src, dst)
}

// testRuleState is a ruleState with fresh metrics, enough for the UDP reply
// path.
func testRuleState(t *testing.T, mode wire.Proto) (*ruleState, *metrics) {
	t.Helper()
	m := newMetrics(prometheus.NewRegistry())
	r := &rules.Rule{Proto: rules.UDP, IPMode: mode, Ports: []rules.PortRange{{Lo: 2000, Hi: 2000}}}
	return &ruleState{rule: r, pass: passingFor(mode, false), metrics: m.forRule("udp:2000", "udp")}, m
}

func errorCount(m *metrics, reason string) float64 {
	var out dto.Metric
	if err := m.errors.WithLabelValues("udp:2000", reason).Write(&out); err != nil {
		panic(err)
	}
	return out.GetCounter().GetValue()
}

// seriesCount returns how many series c holds.
func seriesCount(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 100)
	go func() { c.Collect(ch); close(ch) }()
	n := 0
	for range ch {
		n++
	}
	return n
}

// TestReplyPayload checks what the edge makes of an origin's reply: SPP
// replies lose their header; a reply without one still loses 38 bytes, as
// EdgeOne does, and is counted; a reply shorter than a header is dropped
// and counted; other modes pass replies through untouched.
func TestReplyPayload(t *testing.T) {
	client := netip.MustParseAddrPort("192.0.2.10:40000")
	proxy := netip.MustParseAddrPort("192.0.2.1:2000")
	withHeader := wire.AppendSPP(nil, wire.SPPHeader{Client: client, Proxy: proxy})
	withHeader = append(withHeader, "answer"...)
	bare := []byte(strings.Repeat("x", wire.SPPHeaderLen) + "tail of a bare reply")

	t.Run("spp", func(t *testing.T) {
		rs, m := testRuleState(t, wire.SPP)
		f := &udpFlow{b: &binding{rs: rs}}

		got, ok := f.replyPayload(withHeader)
		if !ok || string(got) != "answer" {
			t.Errorf("reply with SPP header: %q, %v; want %q", got, ok, "answer")
		}
		if n := errorCount(m, "spp_reply_without_header"); n != 0 {
			t.Errorf("a reply with a header counted as without: %v", n)
		}

		got, ok = f.replyPayload(bare)
		if !ok || string(got) != "tail of a bare reply" {
			t.Errorf("reply without header: %q, %v; want its first %d bytes cut", got, ok, wire.SPPHeaderLen)
		}
		if n := errorCount(m, "spp_reply_without_header"); n != 1 {
			t.Errorf("spp_reply_without_header = %v, want 1", n)
		}

		exact := []byte(strings.Repeat("y", wire.SPPHeaderLen))
		if got, ok := f.replyPayload(exact); !ok || len(got) != 0 {
			t.Errorf("reply of exactly %d bytes: %q, %v; want an empty datagram", wire.SPPHeaderLen, got, ok)
		}

		if got, ok := f.replyPayload([]byte("short")); ok || got != nil {
			t.Errorf("short reply: %q, %v; want it dropped", got, ok)
		}
		if n := errorCount(m, "reply_short"); n != 1 {
			t.Errorf("reply_short = %v, want 1", n)
		}
	})
	for _, mode := range []wire.Proto{wire.PPv2, wire.None} {
		t.Run(rules.ModeKeyword(mode), func(t *testing.T) {
			rs, m := testRuleState(t, mode)
			f := &udpFlow{b: &binding{rs: rs}}
			for _, d := range [][]byte{withHeader, bare, []byte("short"), {}} {
				got, ok := f.replyPayload(d)
				if !ok || !bytes.Equal(got, d) {
					t.Errorf("replyPayload(%q) = %q, %v; want it unchanged", d, got, ok)
				}
			}
			if n := seriesCount(m.errors); n != 0 {
				t.Errorf("%d error series, want none", n)
			}
		})
	}
}

// parseSet parses rules and groups for TestExpandOriginKey.
func parseSet(t *testing.T, rulesText, groupsText string) *rules.Set {
	t.Helper()
	groups, err := rules.ParseGroups(strings.NewReader(groupsText), "groups.txt")
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.Parse(strings.NewReader(rulesText), "rules.txt", groups)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// TestExpandOriginKey checks the key that decides whether a rule kept its
// state (listener binding, UDP flows, origin pool) across a reload: the tag
// and the line do not matter; everything that changes forwarding does,
// including the hosts of the group a rule names.
func TestExpandOriginKey(t *testing.T) {
	const groups = "web 198.51.100.10 2001:db8:2::10\n"
	base := parseSet(t, "tcp:80;443 og:web 8080 on ppv1 old tag\n", groups)
	hosts, key := expandOrigin(&base.Rules[0], base.Groups)
	want := []string{"198.51.100.10", "2001:db8:2::10"}
	if len(hosts) != len(want) {
		t.Fatalf("hosts %v, want %v", hosts, want)
	}
	for i, h := range hosts {
		if h.String() != want[i] {
			t.Errorf("host %d = %v, want %v", i, h, want[i])
		}
	}

	same := []struct{ name, rules, groups string }{
		{"tag changed", "tcp:80;443 og:web 8080 on ppv1 a new tag\n", groups},
		{"tag removed", "tcp:80;443 og:web 8080 on ppv1\n", groups},
		{"other line, spelling", "# moved down\n\nTCP:80;443   OG:Web 8080 ON PPV1 x\n", groups},
		{"group line moved", "tcp:80;443 og:web 8080 on ppv1\n", "# comment\nweb 198.51.100.10 2001:db8:2::10\n"},
	}
	for _, tc := range same {
		set := parseSet(t, tc.rules, tc.groups)
		r := &set.Rules[len(set.Rules)-1]
		if _, k := expandOrigin(r, set.Groups); k != key {
			t.Errorf("%s: key %q, want the unchanged %q", tc.name, k, key)
		}
	}

	differ := []struct{ name, rules, groups string }{
		{"group host changed", "tcp:80;443 og:web 8080 on ppv1 old tag\n", "web 198.51.100.11 2001:db8:2::10\n"},
		{"group host added", "tcp:80;443 og:web 8080 on ppv1 old tag\n", "web 198.51.100.10 2001:db8:2::10 198.51.100.11\n"},
		{"group host removed", "tcp:80;443 og:web 8080 on ppv1 old tag\n", "web 198.51.100.10\n"},
		{"group order changed", "tcp:80;443 og:web 8080 on ppv1 old tag\n", "web 2001:db8:2::10 198.51.100.10\n"},
		{"origin port", "tcp:80;443 og:web 8081 on ppv1 old tag\n", groups},
		{"persist", "tcp:80;443 og:web 8080 off ppv1 old tag\n", groups},
		{"ip mode", "tcp:80;443 og:web 8080 on ppv2 old tag\n", groups},
		{"ports", "tcp:80;444 og:web 8080 on ppv1 old tag\n", groups},
		{"origin", "tcp:80;443 198.51.100.10 8080 on ppv1 old tag\n", groups},
	}
	for _, tc := range differ {
		set := parseSet(t, tc.rules, tc.groups)
		if _, k := expandOrigin(&set.Rules[0], set.Groups); k == key {
			t.Errorf("%s: key %q did not change", tc.name, k)
		}
	}
}

// TestRaiseFileLimit checks that raiseFileLimit succeeds without touching
// a limit that is already high enough, and raises the soft limit when it
// is not (restored afterwards).
func TestRaiseFileLimit(t *testing.T) {
	var before unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &before); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &before); err != nil {
			t.Errorf("restore RLIMIT_NOFILE: %v", err)
		}
	})

	t.Run("already high enough", func(t *testing.T) {
		for _, n := range []int{0, 1, int(before.Cur) - fileMargin} {
			if n < 0 {
				continue
			}
			if err := raiseFileLimit(n); err != nil {
				t.Errorf("raiseFileLimit(%d) with soft limit %d: %v", n, before.Cur, err)
			}
			var now unix.Rlimit
			if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &now); err != nil {
				t.Fatal(err)
			}
			if now != before {
				t.Errorf("raiseFileLimit(%d) changed the limit from %+v to %+v", n, before, now)
			}
		}
	})

	t.Run("raises the soft limit", func(t *testing.T) {
		if before.Max < 2*fileMargin {
			testenv.SkipOrFail(t, "hard limit %d is too low to test a raise", before.Max)
		}
		low := unix.Rlimit{Cur: fileMargin, Max: before.Max}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
			t.Fatal(err)
		}
		defer unix.Setrlimit(unix.RLIMIT_NOFILE, &before)
		if err := raiseFileLimit(100); err != nil {
			t.Fatalf("raiseFileLimit(100): %v", err)
		}
		var now unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &now); err != nil {
			t.Fatal(err)
		}
		if now.Cur != fileMargin+100 || now.Max != before.Max {
			t.Errorf("limit %+v, want soft %d and the hard limit %d unchanged", now, fileMargin+100, before.Max)
		}
	})
}
