package rules

import (
	"errors"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, tc := range acceptCases {
		f.Add(tc.in)
	}
	for _, tc := range rejectCases {
		f.Add(tc.in)
	}
	f.Add(generatedRules(20))
	groups := testGroups(f)
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse(strings.NewReader(in), "fuzz.txt", groups)
		if err != nil {
			checkFuzzError(t, err, s == nil)
			return
		}
		text := export(t, s)
		again, err := Parse(strings.NewReader(text), "export.txt", groups)
		if err != nil {
			t.Fatalf("export does not parse: %v\ninput %q\nexport %q", err, in, text)
		}
		if got := export(t, again); got != text {
			t.Fatalf("export changed on round trip:\nfirst  %q\nsecond %q", text, got)
		}
		if !sameRules(s.Rules, again.Rules) {
			t.Fatalf("rules changed on round trip:\n%+v\n%+v", s.Rules, again.Rules)
		}
		checkLookups(t, s)
	})
}

func FuzzParseGroups(f *testing.F) {
	for _, tc := range groupAcceptCases {
		f.Add(tc.in)
	}
	for _, tc := range groupRejectCases {
		f.Add(tc.in)
	}
	f.Add(testGroupsText)
	f.Fuzz(func(t *testing.T, in string) {
		g, err := ParseGroups(strings.NewReader(in), "fuzz.txt")
		if err != nil {
			checkFuzzError(t, err, g == nil)
			return
		}
		text := exportGroups(t, g)
		again, err := ParseGroups(strings.NewReader(text), "export.txt")
		if err != nil {
			t.Fatalf("export does not parse: %v\ninput %q\nexport %q", err, in, text)
		}
		if got := exportGroups(t, again); got != text {
			t.Fatalf("export changed on round trip:\nfirst  %q\nsecond %q", text, got)
		}
	})
}

// checkFuzzError checks that a parse error is a well-formed ErrorList.
func checkFuzzError(t *testing.T, err error, nilResult bool) {
	t.Helper()
	if !nilResult {
		t.Fatalf("non-nil result with error %v", err)
	}
	var list ErrorList
	if !errors.As(err, &list) || len(list) == 0 {
		t.Fatalf("error is not a non-empty ErrorList: %T %v", err, err)
	}
	last := 0
	for _, e := range list {
		if e.File != "fuzz.txt" || e.Line <= last || e.Msg == "" {
			t.Fatalf("bad LineError %+v after line %d", e, last)
		}
		last = e.Line
	}
}

// checkLookups checks that Lookup finds every forwarding port of every rule.
func checkLookups(t *testing.T, s *Set) {
	t.Helper()
	for i := range s.Rules {
		for p, op := range s.Rules[i].Mappings() {
			r, got, ok := s.Lookup(s.Rules[i].Proto, p)
			if !ok || r != &s.Rules[i] || got != op {
				t.Fatalf("Lookup(%v, %d) = %v, %d, %v; want rule %d, %d", s.Rules[i].Proto, p, r, got, ok, i, op)
			}
		}
	}
}
