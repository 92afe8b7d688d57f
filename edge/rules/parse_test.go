package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/realip/realip/wire"
)

// testGroupsText is the origin-groups file used by the rule tests.
const testGroupsText = "web 192.0.2.10 192.0.2.11\nDB 2001:db8::1 db.example.com\n"

func testGroups(t testing.TB) Groups {
	t.Helper()
	g, err := ParseGroups(strings.NewReader(testGroupsText), "groups.txt")
	if err != nil {
		t.Fatalf("test groups: %v", err)
	}
	return g
}

// export returns the canonical text of s.
func export(t testing.TB, s *Set) string {
	t.Helper()
	var b strings.Builder
	if err := s.Export(&b); err != nil {
		t.Fatalf("Export: %v", err)
	}
	return b.String()
}

// wideTCP is every TCP forwarding port except the reserved ones.
const wideTCP = "tcp:1-3942;3945-6087;6089-35999;36001-55999;56001-64999"

var acceptCases = []struct {
	name, in, want string
}{
	{"empty file", "", ""},
	{"only comments and blanks", "# rules\n\n   \n\t# indented comment\n", ""},
	{"seed example", "tcp:123 test.origin.com 456 on ppv1\n", "tcp:123 test.origin.com 456 on ppv1\n"},
	{"keywords in upper case", "TCP:80 Example.COM 8080 ON PPV1\n", "tcp:80 example.com 8080 on ppv1\n"},
	{"mixed case keywords", "Udp:53 192.0.2.1 53 oFf PpV2\n", "udp:53 192.0.2.1 53 off ppv2\n"},
	{"list, ranges and tag", "tcp:80;443;8000-8010 og:web 8080 on ppv1 my tag\n", "tcp:80;443;8000-8010 og:web 8080 on ppv1 my tag\n"},
	{"ports keep their order", "tcp:443;80;9000-9001;81\t1.2.3.4 80 off off\n", "tcp:443;80;9000-9001;81 1.2.3.4 80 off off\n"},
	{"group prefix and name in any case", "tcp:81 OG:Web 80 off off\nudp:81 og:db 80 off off\n", "tcp:81 og:web 80 off off\nudp:81 og:db 80 off off\n"},
	{"runs of spaces and tabs", "  udp:53 \t 192.0.2.1\t\t53   off   ppv2  \n", "udp:53 192.0.2.1 53 off ppv2\n"},
	{"range to range", "tcp:80-90 192.0.2.1 90-100 off toa\n", "tcp:80-90 192.0.2.1 90-100 off toa\n"},
	{"one-port ranges are single ports", "tcp:80-80 192.0.2.1 90-90 off off\n", "tcp:80 192.0.2.1 90 off off\n"},
	{"one-port range in a list", "tcp:80-80;81 192.0.2.1 90 off off\n", "tcp:80;81 192.0.2.1 90 off off\n"},
	{"single origin port for a range", "tcp:8000-8010 192.0.2.1 8080 off off\n", "tcp:8000-8010 192.0.2.1 8080 off off\n"},
	{"single origin port for a list", "tcp:1;2;3 192.0.2.1 8080 off off\n", "tcp:1;2;3 192.0.2.1 8080 off off\n"},
	{"IPv6 in canonical form", "udp:5000 2001:DB8:0:0:0:0:0:1 5000 off spp\n", "udp:5000 2001:db8::1 5000 off spp\n"},
	{"IPv6 loopback", "udp:5000 ::1 5000 off spp\n", "udp:5000 ::1 5000 off spp\n"},
	{"IPv4-mapped IPv6 stays IPv6", "tcp:1 ::FFFF:192.0.2.1 1 off off\n", "tcp:1 ::ffff:192.0.2.1 1 off off\n"},
	{"private and loopback IPv4", "tcp:1 10.0.0.1 1 off off\ntcp:2 127.0.0.1 2 off off\n", "tcp:1 10.0.0.1 1 off off\ntcp:2 127.0.0.1 2 off off\n"},
	{"single-label domain", "tcp:1 backend 1 off off\n", "tcp:1 backend 1 off off\n"},
	{"domain with digits and hyphens", "tcp:1 a-1.B2.example 1 off off\n", "tcp:1 a-1.b2.example 1 off off\n"},
	{"domain with a numeric first label", "tcp:1 1.example.com 1 off off\n", "tcp:1 1.example.com 1 off off\n"},
	{"tag keeps inner blanks and #", "tcp:80 192.0.2.1 80 off off   a  b\t#c  \n", "tcp:80 192.0.2.1 80 off off a  b\t#c\n"},
	{"tag keeps its case", "tcp:80 192.0.2.1 80 off off My Tag\n", "tcp:80 192.0.2.1 80 off off My Tag\n"},
	{"tag of 50 runes", "tcp:80 192.0.2.1 80 off off " + strings.Repeat("标", 50) + "\n", "tcp:80 192.0.2.1 80 off off " + strings.Repeat("标", 50) + "\n"},
	{"tag of one character", "tcp:80 192.0.2.1 80 off off x\n", "tcp:80 192.0.2.1 80 off off x\n"},
	{"tag that looks like fields", "tcp:80 192.0.2.1 80 off off udp:53 1.2.3.4 53 on ppv2\n", "tcp:80 192.0.2.1 80 off off udp:53 1.2.3.4 53 on ppv2\n"},
	{"CRLF line ends and BOM", "\uFEFF# c\r\n\r\ntcp:80 192.0.2.1 80 off off\r\n", "tcp:80 192.0.2.1 80 off off\n"},
	{"BOM before a rule", "\uFEFFtcp:80 192.0.2.1 80 off off", "tcp:80 192.0.2.1 80 off off\n"},
	{"no newline at end", "tcp:80 192.0.2.1 80 off off", "tcp:80 192.0.2.1 80 off off\n"},
	{"limits of port numbers", "tcp:1;64999 192.0.2.1 65535 off off\ntcp:2-3 192.0.2.1 65534-65535 off off\n", "tcp:1;64999 192.0.2.1 65535 off off\ntcp:2-3 192.0.2.1 65534-65535 off off\n"},
	{"ports next to reserved ones", "tcp:3942;3945;6087;6089 192.0.2.1 1 off off\nudp:4788;4791 192.0.2.1 1 off off\n", "tcp:3942;3945;6087;6089 192.0.2.1 1 off off\nudp:4788;4791 192.0.2.1 1 off off\n"},
	{"reserved ports of the other protocol", "udp:3943;3944;6088;36000;56000 192.0.2.1 1 off off\ntcp:4789;4790;6080;61708 192.0.2.1 1 off off\n", "udp:3943;3944;6088;36000;56000 192.0.2.1 1 off off\ntcp:4789;4790;6080;61708 192.0.2.1 1 off off\n"},
	{"same port for tcp and udp", "tcp:53 192.0.2.1 53 off off\nudp:53 192.0.2.1 53 off off\n", "tcp:53 192.0.2.1 53 off off\nudp:53 192.0.2.1 53 off off\n"},
	{"every ip mode", "tcp:1 192.0.2.1 1 off toa\ntcp:2 192.0.2.1 1 off ppv1\ntcp:3 192.0.2.1 1 off ppv2\ntcp:4 192.0.2.1 1 off off\nudp:1 192.0.2.1 1 off ppv2\nudp:2 192.0.2.1 1 off spp\nudp:3 192.0.2.1 1 off off\n",
		"tcp:1 192.0.2.1 1 off toa\ntcp:2 192.0.2.1 1 off ppv1\ntcp:3 192.0.2.1 1 off ppv2\ntcp:4 192.0.2.1 1 off off\nudp:1 192.0.2.1 1 off ppv2\nudp:2 192.0.2.1 1 off spp\nudp:3 192.0.2.1 1 off off\n"},
	{"every forwarding port but the reserved", wideTCP + " 192.0.2.1 80 on toa\n", wideTCP + " 192.0.2.1 80 on toa\n"},
	{"widest udp range", "udp:4791-6079 192.0.2.1 4791-6079 off ppv2\n", "udp:4791-6079 192.0.2.1 4791-6079 off ppv2\n"},
}

func TestParseAccepts(t *testing.T) {
	groups := testGroups(t)
	for _, tc := range acceptCases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse(strings.NewReader(tc.in), "rules.txt", groups)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := export(t, s); got != tc.want {
				t.Errorf("Export:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestExportRoundTrip(t *testing.T) {
	groups := testGroups(t)
	for _, tc := range acceptCases {
		t.Run(tc.name, func(t *testing.T) {
			first, err := Parse(strings.NewReader(tc.in), "rules.txt", groups)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			text := export(t, first)
			second, err := Parse(strings.NewReader(text), "export.txt", groups)
			if err != nil {
				t.Fatalf("Parse of export: %v\n%s", err, text)
			}
			if again := export(t, second); again != text {
				t.Errorf("second export differs:\n got %q\nwant %q", again, text)
			}
			if !sameRules(first.Rules, second.Rules) {
				t.Errorf("rules differ after round trip:\n%+v\n%+v", first.Rules, second.Rules)
			}
		})
	}
}

// sameRules compares rules without their line numbers.
func sameRules(a, b []Rule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		x.Line, y.Line = 0, 0
		if !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

func TestParseRuleFields(t *testing.T) {
	in := "# comment\n" +
		"tcp:80;443;8000-8010 og:web 8080 on ppv1 my tag\n" +
		"udp:5000-5009 2001:db8::10 6000-6009 off spp\n" +
		"tcp:22 Git.Example.com 2222 off off\n"
	s, err := Parse(strings.NewReader(in), "rules.txt", testGroups(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{
		{
			Proto:      TCP,
			Ports:      []PortRange{{80, 80}, {443, 443}, {8000, 8010}},
			Origin:     Origin{Kind: OriginGroup, Name: "web"},
			OriginPort: PortRange{8080, 8080},
			Persist:    true,
			IPMode:     wire.PPv1,
			Tag:        "my tag",
			Line:       2,
		},
		{
			Proto:      UDP,
			Ports:      []PortRange{{5000, 5009}},
			Origin:     Origin{Kind: OriginIP, Addr: netip.MustParseAddr("2001:db8::10")},
			OriginPort: PortRange{6000, 6009},
			IPMode:     wire.SPP,
			Line:       3,
		},
		{
			Proto:      TCP,
			Ports:      []PortRange{{22, 22}},
			Origin:     Origin{Kind: OriginDomain, Name: "git.example.com"},
			OriginPort: PortRange{2222, 2222},
			IPMode:     wire.None,
			Line:       4,
		},
	}
	if !reflect.DeepEqual(s.Rules, want) {
		t.Errorf("rules:\n got %+v\nwant %+v", s.Rules, want)
	}
	if len(s.Groups) != 2 {
		t.Errorf("Set.Groups has %d groups, want 2", len(s.Groups))
	}
}

// fields is a valid tail for a rule line, after PROTO:PORTS.
const fields = " 192.0.2.1 80 off off"

var rejectCases = []struct {
	name, in string
	want     []string // the whole error text, one entry per line
}{
	// Field count and PROTO:PORTS.
	{"too few fields", "tcp:80 192.0.2.1 80 off\n", []string{"rules.txt:1: want at least 5 fields (PROTO:PORTS ORIGIN ORIGINPORT PERSIST IPMODE [TAG]), got 4"}},
	{"one field", "tcp:80\n", []string{"rules.txt:1: want at least 5 fields (PROTO:PORTS ORIGIN ORIGINPORT PERSIST IPMODE [TAG]), got 1"}},
	{"missing colon", "tcp80" + fields, []string{`rules.txt:1: missing ":" between protocol and ports in "tcp80"`}},
	{"unknown protocol", "sctp:80" + fields, []string{`rules.txt:1: unknown protocol "sctp" (want tcp or udp)`}},
	{"empty protocol", ":80" + fields, []string{`rules.txt:1: unknown protocol "" (want tcp or udp)`}},
	{"no ports", "tcp:" + fields, []string{`rules.txt:1: missing forwarding ports after "tcp:"`}},
	{"space after colon", "tcp: 80 192.0.2.1 80 off off", []string{`rules.txt:1: missing forwarding ports after "tcp:"`}},
	{"empty list entry", "tcp:80;;443" + fields, []string{`rules.txt:1: empty entry in port list "80;;443"`}},
	{"trailing semicolon", "udp:80;" + fields, []string{`rules.txt:1: empty entry in port list "80;"`}},
	{"port not a number", "tcp:http" + fields, []string{`rules.txt:1: invalid port "http"`}},
	{"port with sign", "tcp:+80" + fields, []string{`rules.txt:1: invalid port "+80"`}},
	{"port with leading zero", "tcp:080" + fields, []string{`rules.txt:1: invalid port "080"`}},
	{"port too long to be a number", "tcp:1234567890" + fields, []string{`rules.txt:1: invalid port "1234567890"`}},
	{"port 0", "tcp:0" + fields, []string{"rules.txt:1: port 0 is out of range 1-64999"}},
	{"port 65000", "tcp:65000" + fields, []string{"rules.txt:1: port 65000 is out of range 1-64999"}},
	{"range end too high", "udp:64000-65535" + fields, []string{"rules.txt:1: port 65535 is out of range 1-64999"}},
	{"range backwards", "tcp:90-80" + fields, []string{`rules.txt:1: invalid port range "90-80": start is greater than end`}},
	{"range without start", "tcp:-80" + fields, []string{`rules.txt:1: invalid port range "-80"`}},
	{"range without end", "tcp:80-" + fields, []string{`rules.txt:1: invalid port range "80-"`}},
	{"range of three", "tcp:1-2-3" + fields, []string{`rules.txt:1: invalid port "2-3"`}},
	{"reserved tcp port", "tcp:3943" + fields, []string{"rules.txt:1: port 3943 is reserved for tcp"}},
	{"reserved tcp port in a list", "tcp:80;56000" + fields, []string{"rules.txt:1: port 56000 is reserved for tcp"}},
	{"reserved udp port", "udp:61708" + fields, []string{"rules.txt:1: port 61708 is reserved for udp"}},
	{"reserved port as a one-port range", "udp:6080-6080" + fields, []string{"rules.txt:1: port 6080 is reserved for udp"}},
	{"range over one reserved port", "tcp:6000-7000" + fields, []string{"rules.txt:1: port range 6000-7000 includes reserved tcp port 6088"}},
	{"range over two reserved ports", "tcp:3900-4000" + fields, []string{"rules.txt:1: port range 3900-4000 includes reserved tcp ports 3943, 3944"}},
	{"all tcp ports", "tcp:1-64999" + fields, []string{"rules.txt:1: port range 1-64999 includes reserved tcp ports 3943, 3944, 6088, 36000, 56000"}},
	{"all udp ports", "udp:1-64999" + fields, []string{"rules.txt:1: port range 1-64999 includes reserved udp ports 4789, 4790, 6080, 61708"}},
	{"port twice in a rule", "tcp:80;443;80" + fields, []string{"rules.txt:1: port 80 appears more than once in this rule"}},
	{"port in a range and a list", "tcp:80-90;85" + fields, []string{"rules.txt:1: port 85 appears more than once in this rule"}},
	{"overlapping ranges in a rule", "udp:10-20;15-30" + fields, []string{"rules.txt:1: port 15 appears more than once in this rule"}},
	{"port used by an earlier rule", "tcp:80" + fields + "\n# c\ntcp:443;80" + fields, []string{"rules.txt:3: tcp port 80 is already used by the rule on line 1"}},
	{"range overlaps an earlier rule", "udp:100-200" + fields + "\nudp:50-150" + fields, []string{"rules.txt:2: udp port 100 is already used by the rule on line 1"}},
	{"rejected rule claims no ports", "tcp:80" + fields + "\ntcp:81;80" + fields + "\ntcp:81" + fields, []string{"rules.txt:2: tcp port 80 is already used by the rule on line 1"}},
	{"bad rule claims no ports", "tcp:81 192.0.2.1 80 off spp\ntcp:81" + fields, []string{"rules.txt:1: IP passing mode spp is not available for tcp"}},

	// ORIGIN.
	{"IPv6 in brackets", "tcp:80 [2001:db8::1] 80 off off", []string{`rules.txt:1: invalid origin "[2001:db8::1]": write an IPv6 address without brackets`}},
	{"bad IPv6", "tcp:80 2001:db8::g 80 off off", []string{`rules.txt:1: invalid origin "2001:db8::g": not a valid IPv6 address`}},
	{"IPv6 with zone", "tcp:80 fe80::1%eth0 80 off off", []string{`rules.txt:1: invalid origin "fe80::1%eth0": an IPv6 zone is not allowed`}},
	{"host with port", "tcp:80 example.com:80 80 off off", []string{`rules.txt:1: invalid origin "example.com:80": not a valid IPv6 address (the port is a field of its own)`}},
	{"bad IPv4", "tcp:80 192.0.2.999 80 off off", []string{`rules.txt:1: invalid origin "192.0.2.999": not a valid IPv4 address (and a domain name cannot end in an all-digit label)`}},
	{"IPv4 with leading zero", "tcp:80 192.0.2.01 80 off off", []string{`rules.txt:1: invalid origin "192.0.2.01": not a valid IPv4 address (and a domain name cannot end in an all-digit label)`}},
	{"short IPv4", "tcp:80 10.1 80 off off", []string{`rules.txt:1: invalid origin "10.1": not a valid IPv4 address (and a domain name cannot end in an all-digit label)`}},
	{"number as origin", "tcp:80 8080 80 off off", []string{`rules.txt:1: invalid origin "8080": not a valid IPv4 address (and a domain name cannot end in an all-digit label)`}},
	{"unspecified IPv4", "tcp:80 0.0.0.0 80 off off", []string{`rules.txt:1: invalid origin "0.0.0.0": the unspecified address cannot be an origin`}},
	{"unspecified IPv6", "tcp:80 :: 80 off off", []string{`rules.txt:1: invalid origin "::": the unspecified address cannot be an origin`}},
	{"multicast IPv4", "udp:80 224.0.0.1 80 off off", []string{`rules.txt:1: invalid origin "224.0.0.1": a multicast address cannot be an origin`}},
	{"multicast IPv6", "udp:80 ff02::1 80 off off", []string{`rules.txt:1: invalid origin "ff02::1": a multicast address cannot be an origin`}},
	{"broadcast", "udp:80 255.255.255.255 80 off off", []string{`rules.txt:1: invalid origin "255.255.255.255": the broadcast address cannot be an origin`}},
	{"empty label", "tcp:80 a..example 80 off off", []string{`rules.txt:1: invalid origin "a..example": empty label in domain name`}},
	{"leading dot", "tcp:80 .example 80 off off", []string{`rules.txt:1: invalid origin ".example": empty label in domain name`}},
	{"trailing dot", "tcp:80 example.com. 80 off off", []string{`rules.txt:1: invalid origin "example.com.": a domain name must not end with a dot`}},
	{"label starts with hyphen", "tcp:80 -a.example 80 off off", []string{`rules.txt:1: invalid origin "-a.example": domain label "-a" starts or ends with a hyphen`}},
	{"label ends with hyphen", "tcp:80 a-.example 80 off off", []string{`rules.txt:1: invalid origin "a-.example": domain label "a-" starts or ends with a hyphen`}},
	{"underscore", "tcp:80 a_b.example 80 off off", []string{`rules.txt:1: invalid origin "a_b.example": invalid character '_' in domain name`}},
	{"non-ASCII domain", "tcp:80 bücher.example 80 off off", []string{`rules.txt:1: invalid origin "bücher.example": invalid character 'ü' in domain name`}},
	{"label too long", "tcp:80 " + strings.Repeat("a", 64) + ".example 80 off off", []string{`rules.txt:1: invalid origin "` + strings.Repeat("a", 64) + `.example": domain label "` + strings.Repeat("a", 64) + `" is longer than 63 characters`}},
	{"domain too long", "tcp:80 " + strings.Repeat("abcdefghi.", 25) + "abcd 80 off off", []string{`rules.txt:1: invalid origin "` + strings.Repeat("abcdefghi.", 25) + `abcd": a domain name is at most 253 characters`}},
	{"empty group name", "tcp:80 og: 80 off off", []string{"rules.txt:1: empty origin group name"}},
	{"bad group name", "tcp:80 og:-web 80 off off", []string{`rules.txt:1: origin group name "-web" must start with a letter or digit`}},
	{"bad character in group name", "tcp:80 og:we/b 80 off off", []string{`rules.txt:1: invalid character '/' in origin group name "we/b"`}},
	{"group name too long", "tcp:80 og:" + strings.Repeat("g", 51) + " 80 off off", []string{`rules.txt:1: origin group name "` + strings.Repeat("g", 51) + `" is longer than 50 characters`}},
	{"unknown group", "tcp:80 og:api 80 off off", []string{`rules.txt:1: unknown origin group "api"`}},
	{"unknown group in upper case", "tcp:80 OG:API 80 off off", []string{`rules.txt:1: unknown origin group "api"`}},

	// ORIGINPORT.
	{"origin port not a number", "tcp:80 192.0.2.1 http off off", []string{`rules.txt:1: invalid origin port "http"`}},
	{"origin port 0", "tcp:80 192.0.2.1 0 off off", []string{"rules.txt:1: origin port 0 is out of range 1-65535"}},
	{"origin port 65536", "tcp:80 192.0.2.1 65536 off off", []string{"rules.txt:1: origin port 65536 is out of range 1-65535"}},
	{"origin range backwards", "tcp:80-90 192.0.2.1 100-90 off off", []string{`rules.txt:1: invalid origin port range "100-90": start is greater than end`}},
	{"origin range without end", "tcp:80-90 192.0.2.1 100- off off", []string{`rules.txt:1: invalid origin port range "100-"`}},
	{"origin port list", "tcp:80;81 192.0.2.1 80;81 off off", []string{`rules.txt:1: invalid origin port "80;81"`}},
	{"origin range for a list", "tcp:80;81 192.0.2.1 90-91 off off", []string{"rules.txt:1: origin port range 90-91 needs a single forwarding port range, not a list"}},
	{"origin range for a list of ranges", "tcp:80-81;90-91 192.0.2.1 90-93 off off", []string{"rules.txt:1: origin port range 90-93 needs a single forwarding port range, not a list"}},
	{"origin range for one port", "tcp:80 192.0.2.1 90-91 off off", []string{"rules.txt:1: origin port range 90-91 needs a forwarding port range, not the single port 80"}},
	{"origin range too short", "tcp:80-90 192.0.2.1 90-99 off off", []string{"rules.txt:1: origin port range 90-99 has 10 ports but forwarding range 80-90 has 11"}},
	{"origin range too long", "udp:80-90 192.0.2.1 1-65535 off off", []string{"rules.txt:1: origin port range 1-65535 has 65535 ports but forwarding range 80-90 has 11"}},

	// PERSIST, IPMODE, TAG.
	{"bad persistence", "tcp:80 192.0.2.1 80 yes off", []string{`rules.txt:1: invalid session persistence "yes" (want on or off)`}},
	{"bad ip mode", "tcp:80 192.0.2.1 80 off pp", []string{`rules.txt:1: invalid IP passing mode "pp" (want toa, ppv1, ppv2, spp or off)`}},
	{"toa on udp", "udp:80 192.0.2.1 80 off toa", []string{"rules.txt:1: IP passing mode toa is not available for udp"}},
	{"ppv1 on udp", "udp:80 192.0.2.1 80 off PPV1", []string{"rules.txt:1: IP passing mode ppv1 is not available for udp"}},
	{"spp on tcp", "tcp:80 192.0.2.1 80 off spp", []string{"rules.txt:1: IP passing mode spp is not available for tcp"}},
	{"tag too long", "tcp:80 192.0.2.1 80 off off " + strings.Repeat("x", 51), []string{"rules.txt:1: tag is 51 characters long, at most 50 are allowed"}},
	{"tag of 51 runes", "tcp:80 192.0.2.1 80 off off " + strings.Repeat("标", 51), []string{"rules.txt:1: tag is 51 characters long, at most 50 are allowed"}},
	{"tag not UTF-8", "tcp:80 192.0.2.1 80 off off a\xffb", []string{"rules.txt:1: tag is not valid UTF-8"}},
	{"tag with control character", "tcp:80 192.0.2.1 80 off off a\x01b", []string{"rules.txt:1: tag contains control character U+0001"}},
	{"tag with carriage return", "tcp:80 192.0.2.1 80 off off a\rb\n", []string{"rules.txt:1: tag contains control character U+000D"}},

	// Several lines.
	{"every bad line is reported", "# header\n" +
		"tcp:80" + fields + "\n" +
		"tcp:3943" + fields + "\n" +
		"\n" +
		"udp:80 192.0.2.1 80 off toa\n" +
		"tcp:81" + fields + "\n" +
		"tcp:81;82" + fields + "\n" +
		"tcp:83 og:nope 80 off off\n",
		[]string{
			"rules.txt:3: port 3943 is reserved for tcp",
			"rules.txt:5: IP passing mode toa is not available for udp",
			"rules.txt:7: tcp port 81 is already used by the rule on line 6",
			`rules.txt:8: unknown origin group "nope"`,
		}},
}

func TestParseRejects(t *testing.T) {
	groups := testGroups(t)
	for _, tc := range rejectCases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse(strings.NewReader(tc.in), "rules.txt", groups)
			if err == nil {
				t.Fatalf("Parse succeeded, want errors; export:\n%s", export(t, s))
			}
			if s != nil {
				t.Errorf("Parse returned a Set with its error")
			}
			checkErrors(t, err, tc.want)
		})
	}
}

// checkErrors checks that err is an ErrorList with exactly the lines want.
func checkErrors(t *testing.T, err error, want []string) {
	t.Helper()
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error is %T, want ErrorList: %v", err, err)
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("errors:\n got %s\nwant %s", got, strings.Join(want, "\n"))
	}
	if len(list) != len(want) {
		t.Errorf("ErrorList has %d entries, want %d", len(list), len(want))
	}
}

func TestUnknownGroupWithoutGroups(t *testing.T) {
	_, err := Parse(strings.NewReader("tcp:80 og:web 80 off off\n"), "rules.txt", nil)
	checkErrors(t, err, []string{`rules.txt:1: unknown origin group "web" (no origin groups are defined)`})
}

func TestLineErrorFields(t *testing.T) {
	_, err := Parse(strings.NewReader("\n\ntcp:3944"+fields), "edge.rules", nil)
	var le *LineError
	if !errors.As(err, &le) {
		t.Fatalf("errors.As(*LineError) failed for %v", err)
	}
	want := LineError{File: "edge.rules", Line: 3, Msg: "port 3944 is reserved for tcp"}
	if *le != want {
		t.Errorf("LineError = %+v, want %+v", *le, want)
	}
}

func TestLineTooLong(t *testing.T) {
	long := "tcp:1 192.0.2.1 1 off off " + strings.Repeat("x", maxLine)
	in := "tcp:80" + fields + "\n" + long + "\n" + "tcp:80" + fields + "\n" + long
	_, err := Parse(strings.NewReader(in), "rules.txt", nil)
	checkErrors(t, err, []string{
		fmt.Sprintf("rules.txt:2: line is longer than %d bytes", maxLine),
		"rules.txt:3: tcp port 80 is already used by the rule on line 1",
		fmt.Sprintf("rules.txt:4: line is longer than %d bytes", maxLine),
	})
}

func TestLongPortList(t *testing.T) {
	// Every TCP forwarding port listed one by one: about 380 KB on a line.
	var ports []string
	for p := 1; p <= MaxForwardPort; p++ {
		if len(reservedIn(TCP, PortRange{uint16(p), uint16(p)})) == 0 {
			ports = append(ports, fmt.Sprint(p))
		}
	}
	line := "tcp:" + strings.Join(ports, ";") + fields + "\n"
	s, err := Parse(strings.NewReader(line), "rules.txt", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := export(t, s); got != line {
		t.Errorf("export differs from input (%d vs %d bytes)", len(got), len(line))
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestReadError(t *testing.T) {
	_, err := Parse(failingReader{}, "rules.txt", nil)
	if err == nil || err.Error() != "rules.txt: read: disk on fire" {
		t.Errorf("err = %v, want the read error with the file name", err)
	}
	_, err = ParseGroups(failingReader{}, "groups.txt")
	if err == nil || err.Error() != "groups.txt: read: disk on fire" {
		t.Errorf("err = %v, want the read error with the file name", err)
	}
}
