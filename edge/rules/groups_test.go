package rules

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

var groupAcceptCases = []struct {
	name, in, want string
}{
	{"empty file", "", ""},
	{"comments and blanks", "# groups\n\n \t\n", ""},
	{"one host", "web 192.0.2.10\n", "web 192.0.2.10\n"},
	{"several hosts of every kind", "mix 192.0.2.1 2001:DB8::0:1 Origin.Example.com backend\n", "mix 192.0.2.1 2001:db8::1 origin.example.com backend\n"},
	{"name in upper case", "WEB-1_a.b 192.0.2.1\n", "web-1_a.b 192.0.2.1\n"},
	{"name starting with a digit", "1st 192.0.2.1\n", "1st 192.0.2.1\n"},
	{"name of 50 characters", strings.Repeat("g", 50) + " 192.0.2.1\n", strings.Repeat("g", 50) + " 192.0.2.1\n"},
	{"blanks around and between", "\t web \t192.0.2.1   192.0.2.2\t\n", "web 192.0.2.1 192.0.2.2\n"},
	{"CRLF, BOM, no final newline", "\uFEFFweb 192.0.2.1\r\ndb 192.0.2.2", "web 192.0.2.1\ndb 192.0.2.2\n"},
	{"several groups keep their order", "b 192.0.2.2\na 192.0.2.1\n", "b 192.0.2.2\na 192.0.2.1\n"},
}

func exportGroups(t testing.TB, g Groups) string {
	t.Helper()
	var b strings.Builder
	if err := g.Export(&b); err != nil {
		t.Fatalf("Export: %v", err)
	}
	return b.String()
}

func TestParseGroupsAccepts(t *testing.T) {
	for _, tc := range groupAcceptCases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := ParseGroups(strings.NewReader(tc.in), "groups.txt")
			if err != nil {
				t.Fatalf("ParseGroups: %v", err)
			}
			got := exportGroups(t, g)
			if got != tc.want {
				t.Errorf("Export:\n got %q\nwant %q", got, tc.want)
			}
			again, err := ParseGroups(strings.NewReader(got), "export.txt")
			if err != nil {
				t.Fatalf("ParseGroups of export: %v", err)
			}
			if exportGroups(t, again) != got {
				t.Errorf("second export differs")
			}
		})
	}
}

func TestParseGroupsFields(t *testing.T) {
	g, err := ParseGroups(strings.NewReader("# c\nWeb 192.0.2.1 web.example\n"), "groups.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := Groups{{
		Name: "web",
		Hosts: []Origin{
			{Kind: OriginIP, Addr: netip.MustParseAddr("192.0.2.1")},
			{Kind: OriginDomain, Name: "web.example"},
		},
		Line: 2,
	}}
	if !reflect.DeepEqual(g, want) {
		t.Errorf("groups:\n got %+v\nwant %+v", g, want)
	}
	for _, name := range []string{"web", "WEB", "Web"} {
		if got, ok := g.Lookup(name); !ok || got.Name != "web" {
			t.Errorf("Lookup(%q) = %v, %v", name, got, ok)
		}
	}
	if _, ok := g.Lookup("api"); ok {
		t.Errorf("Lookup(api) found a group")
	}
}

var groupRejectCases = []struct {
	name, in string
	want     []string
}{
	{"name only", "web\n", []string{`groups.txt:1: origin group "web" has no hosts (want NAME HOST [HOST...])`}},
	{"name with blanks only", "web \t \n", []string{`groups.txt:1: origin group "web" has no hosts (want NAME HOST [HOST...])`}},
	{"name with og prefix", "og:web 192.0.2.1\n", []string{`groups.txt:1: invalid character ':' in origin group name "og:web"`}},
	{"name starting with a hyphen", "-web 192.0.2.1\n", []string{`groups.txt:1: origin group name "-web" must start with a letter or digit`}},
	{"name starting with underscore", "_web 192.0.2.1\n", []string{`groups.txt:1: origin group name "_web" must start with a letter or digit`}},
	{"name too long", strings.Repeat("g", 51) + " 192.0.2.1\n", []string{`groups.txt:1: origin group name "` + strings.Repeat("g", 51) + `" is longer than 50 characters`}},
	{"non-ASCII name", "wéb 192.0.2.1\n", []string{`groups.txt:1: invalid character 'é' in origin group name "wéb"`}},
	{"duplicate name", "web 192.0.2.1\n\nweb 192.0.2.2\n", []string{`groups.txt:3: origin group "web" is already defined on line 1`}},
	{"duplicate name in other case", "web 192.0.2.1\nWEB 192.0.2.2\n", []string{`groups.txt:2: origin group "web" is already defined on line 1`}},
	{"duplicate host", "web 192.0.2.1 192.0.2.1\n", []string{`groups.txt:1: host 192.0.2.1 is listed twice in origin group "web"`}},
	{"duplicate IPv6 host in other form", "web 2001:db8::1 2001:DB8:0::1\n", []string{`groups.txt:1: host 2001:db8::1 is listed twice in origin group "web"`}},
	{"duplicate domain in other case", "web a.example A.EXAMPLE\n", []string{`groups.txt:1: host a.example is listed twice in origin group "web"`}},
	{"group in a group", "web og:db\n", []string{`groups.txt:1: invalid host "og:db": an origin group cannot contain another group`}},
	{"bad IPv4 host", "web 192.0.2.300\n", []string{`groups.txt:1: invalid host "192.0.2.300": not a valid IPv4 address (and a domain name cannot end in an all-digit label)`}},
	{"bad domain host", "web a..example\n", []string{`groups.txt:1: invalid host "a..example": empty label in domain name`}},
	{"unspecified host", "web ::\n", []string{`groups.txt:1: invalid host "::": the unspecified address cannot be an origin`}},
	{"trailing comment", "web 192.0.2.1 # main\n", []string{`groups.txt:1: invalid host "#": invalid character '#' in domain name`}},
	{"every bad line is reported", "web 192.0.2.1\nbad\ndb 192.0.2.2\nweb 192.0.2.3\nx [::1]\n", []string{
		`groups.txt:2: origin group "bad" has no hosts (want NAME HOST [HOST...])`,
		`groups.txt:4: origin group "web" is already defined on line 1`,
		`groups.txt:5: invalid host "[::1]": write an IPv6 address without brackets`,
	}},
}

func TestParseGroupsRejects(t *testing.T) {
	for _, tc := range groupRejectCases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := ParseGroups(strings.NewReader(tc.in), "groups.txt")
			if err == nil {
				t.Fatalf("ParseGroups succeeded, want errors; export:\n%s", exportGroups(t, g))
			}
			if g != nil {
				t.Errorf("ParseGroups returned groups with its error")
			}
			checkErrors(t, err, tc.want)
		})
	}
}
