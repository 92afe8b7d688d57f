package rules

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustParse(t testing.TB, in string) *Set {
	t.Helper()
	s, err := Parse(strings.NewReader(in), "rules.txt", testGroups(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLookup(t *testing.T) {
	s := mustParse(t, "tcp:80;443;8000-8010 og:web 8080 on ppv1 web\n"+
		"tcp:9000-9009 192.0.2.1 19000-19009 off toa range\n"+
		"udp:80 2001:db8::1 53 off spp dns\n")
	cases := []struct {
		proto      Proto
		port       uint16
		ok         bool
		line       int
		originPort uint16
	}{
		{TCP, 80, true, 1, 8080},
		{TCP, 443, true, 1, 8080},
		{TCP, 8000, true, 1, 8080},
		{TCP, 8010, true, 1, 8080},
		{TCP, 9000, true, 2, 19000},
		{TCP, 9005, true, 2, 19005},
		{TCP, 9009, true, 2, 19009},
		{UDP, 80, true, 3, 53},
		{TCP, 81, false, 0, 0},
		{TCP, 8011, false, 0, 0},
		{UDP, 443, false, 0, 0},
		{TCP, 0, false, 0, 0},
		{TCP, 65000, false, 0, 0},
		{TCP, 65535, false, 0, 0},
		{0, 80, false, 0, 0},
		{Proto(7), 80, false, 0, 0},
	}
	for _, tc := range cases {
		r, op, ok := s.Lookup(tc.proto, tc.port)
		if ok != tc.ok || (ok && (r.Line != tc.line || op != tc.originPort)) {
			line := 0
			if r != nil {
				line = r.Line
			}
			t.Errorf("Lookup(%v, %d) = line %d, %d, %v; want line %d, %d, %v",
				tc.proto, tc.port, line, op, ok, tc.line, tc.originPort, tc.ok)
		}
	}
}

func TestLookupZeroSet(t *testing.T) {
	var s Set
	if _, _, ok := s.Lookup(TCP, 80); ok {
		t.Error("zero Set found a rule")
	}
	if got := export(t, &s); got != "" {
		t.Errorf("zero Set exports %q", got)
	}
}

func TestMappings(t *testing.T) {
	cases := []struct {
		line string
		want string // port>origin, in order
	}{
		{"tcp:443;80;8000-8002 192.0.2.1 8080 off off", "443>8080 80>8080 8000>8080 8001>8080 8002>8080"},
		{"tcp:80-83 192.0.2.1 90-93 off off", "80>90 81>91 82>92 83>93"},
		{"udp:64998-64999 192.0.2.1 65534-65535 off off", "64998>65534 64999>65535"},
		{"udp:7 192.0.2.1 7 off off", "7>7"},
	}
	for _, tc := range cases {
		r := mustParse(t, tc.line).Rules[0]
		var got []string
		for p, op := range r.Mappings() {
			got = append(got, fmt.Sprintf("%d>%d", p, op))
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%s: Mappings = %s, want %s", tc.line, strings.Join(got, " "), tc.want)
		}
		if r.PortCount() != len(got) {
			t.Errorf("%s: PortCount = %d, want %d", tc.line, r.PortCount(), len(got))
		}
	}
}

func TestMappingsStopsEarly(t *testing.T) {
	r := mustParse(t, "tcp:1-1000 192.0.2.1 80 off off").Rules[0]
	n := 0
	for range r.Mappings() {
		n++
		if n == 3 {
			break
		}
	}
	if n != 3 {
		t.Errorf("loop ran %d times, want 3", n)
	}
}

func TestWideRange(t *testing.T) {
	s := mustParse(t, wideTCP+" 192.0.2.1 80 on toa\nudp:1-4788 192.0.2.2 1-4788 off ppv2\n")
	if n := s.Rules[0].PortCount(); n != MaxForwardPort-5 {
		t.Errorf("PortCount = %d, want %d", n, MaxForwardPort-5)
	}
	for p := 1; p <= MaxForwardPort; p++ {
		_, op, ok := s.Lookup(TCP, uint16(p))
		reserved := len(reservedIn(TCP, PortRange{uint16(p), uint16(p)})) > 0
		if ok == reserved || (ok && op != 80) {
			t.Fatalf("Lookup(tcp, %d) = %d, %v", p, op, ok)
		}
	}
	if _, op, ok := s.Lookup(UDP, 4788); !ok || op != 4788 {
		t.Errorf("Lookup(udp, 4788) = %d, %v", op, ok)
	}
}

// generatedRules returns n distinct valid rules, one per line.
func generatedRules(n int) string {
	var b strings.Builder
	for i := range n {
		proto := "tcp"
		mode := "ppv1"
		if i%2 == 1 {
			proto, mode = "udp", "spp"
		}
		fmt.Fprintf(&b, "%s:%d;%d-%d 192.0.2.%d %d on %s rule %d\n",
			proto, 10000+i, 20000+i*5, 20000+i*5+2, i%250+1, 8000+i%100, mode, i)
	}
	return b.String()
}

func TestMaxRules(t *testing.T) {
	s := mustParse(t, generatedRules(MaxRules))
	if len(s.Rules) != MaxRules {
		t.Fatalf("got %d rules, want %d", len(s.Rules), MaxRules)
	}
	if got := export(t, s); got != generatedRules(MaxRules) {
		t.Errorf("export of the generated file differs from it")
	}
}

func TestTooManyRules(t *testing.T) {
	in := "# many\n" + generatedRules(MaxRules+1)
	_, err := Parse(strings.NewReader(in), "rules.txt", nil)
	checkErrors(t, err, []string{"rules.txt:2002: too many rules: a file holds at most 2000"})
}

func TestTooManyRulesLaterLinesChecked(t *testing.T) {
	in := generatedRules(MaxRules+1) + "tcp:3943" + fields + "\n" + "tcp:10000" + fields + "\n"
	_, err := Parse(strings.NewReader(in), "rules.txt", nil)
	checkErrors(t, err, []string{
		"rules.txt:2001: too many rules: a file holds at most 2000",
		"rules.txt:2002: port 3943 is reserved for tcp",
	})
}

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	groups := writeFile(t, dir, "groups.txt", testGroupsText)
	rules := writeFile(t, dir, "rules.txt", "tcp:80 og:web 8080 on ppv1\n")
	s, err := Load(rules, groups)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Rules) != 1 || len(s.Groups) != 2 {
		t.Errorf("Load: %d rules, %d groups; want 1, 2", len(s.Rules), len(s.Groups))
	}
}

func TestLoadWithoutGroups(t *testing.T) {
	dir := t.TempDir()
	rules := writeFile(t, dir, "rules.txt", "tcp:80 192.0.2.1 8080 on ppv1\n")
	s, err := Load(rules, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Rules) != 1 || s.Groups != nil {
		t.Errorf("Load: %d rules, groups %v", len(s.Rules), s.Groups)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	goodGroups := writeFile(t, dir, "groups.txt", testGroupsText)
	badGroups := writeFile(t, dir, "bad-groups.txt", "web\n")
	badRules := writeFile(t, dir, "rules.txt", "tcp:80 og:web 8080 on ppv1\ntcp:80 og:nope 1 off off\n")
	missing := filepath.Join(dir, "missing.txt")

	_, err := Load(badRules, goodGroups)
	checkErrors(t, err, []string{badRules + `:2: unknown origin group "nope"`})

	_, err = Load(badRules, badGroups)
	checkErrors(t, err, []string{badGroups + `:1: origin group "web" has no hosts (want NAME HOST [HOST...])`})

	if _, err := Load(missing, ""); !os.IsNotExist(err) {
		t.Errorf("Load(missing rules) = %v, want a not-exist error", err)
	}
	if _, err := Load(badRules, missing); !os.IsNotExist(err) {
		t.Errorf("Load(missing groups) = %v, want a not-exist error", err)
	}
}

func BenchmarkParseMaxRules(b *testing.B) {
	in := generatedRules(MaxRules)
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := Parse(strings.NewReader(in), "rules.txt", nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseWideRange(b *testing.B) {
	in := wideTCP + " 192.0.2.1 80 on toa\n"
	for b.Loop() {
		if _, err := Parse(strings.NewReader(in), "rules.txt", nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLookup(b *testing.B) {
	s := mustParse(b, generatedRules(MaxRules))
	for b.Loop() {
		if _, _, ok := s.Lookup(UDP, 20015); !ok {
			b.Fatal("not found")
		}
	}
}
