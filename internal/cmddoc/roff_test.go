package cmddoc

import (
	"slices"
	"strings"
	"testing"
)

const samplePage = `.\" a comment
.TH frob 8 2026-01-02 "realip 1.0" "System Manager's Manual"
.ad l
.SH NAME
frob \- frobnicate the \fIwidgets\fR
.SH SYNOPSIS
.SY frob
.B run
.RB [ \-config
.IR FILE ]
.YS
.SY frob
.B stop
.YS
.SH COMMANDS
.SS run
Runs it.
.TP
.BI \-config " FILE"
The file.
Default:
.IR /etc/frob.yaml .
.PP
After the list.
.TP
.B \-v
Verbose, \(em really.
.IP
More of \-v's text.
.SS stop
Stops.
.SH "EXIT STATUS"
.TP
.B 0
Done.
.TP 4
.BR 78 " (config)"
Bad file.
.SH EXAMPLES
.EX
frob run \e
    \-config x.yaml
.EE
`

func parseSample(t *testing.T) *Page {
	t.Helper()
	p, err := Parse([]byte(samplePage))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseHeadings(t *testing.T) {
	p := parseSample(t)
	if p.Name != "frob" || p.Section != "8" {
		t.Errorf(".TH: %q %q", p.Name, p.Section)
	}
	if got, want := p.Headings(), []string{"NAME", "SYNOPSIS", "COMMANDS", "EXIT STATUS", "EXAMPLES"}; !slices.Equal(got, want) {
		t.Errorf("Headings = %q, want %q", got, want)
	}
	sub, err := p.Subheadings("COMMANDS")
	if err != nil || !slices.Equal(sub, []string{"run", "stop"}) {
		t.Errorf("Subheadings(COMMANDS) = %q, %v", sub, err)
	}
	if _, err := p.Items("OPTIONS"); err == nil || !strings.Contains(err.Error(), `no heading "OPTIONS"`) {
		t.Errorf("Items(OPTIONS): %v", err)
	}
}

func TestParseLines(t *testing.T) {
	p := parseSample(t)
	for _, tc := range []struct {
		heading string
		want    []string
	}{
		{"NAME", []string{"frob - frobnicate the widgets"}},
		{"SYNOPSIS", []string{"frob run [-config FILE]", "frob stop"}},
		{"stop", []string{"Stops."}},
		{"EXAMPLES", []string{`frob run \`, "-config x.yaml"}},
		{"run", []string{"Runs it.", "-config FILE", "The file. Default: /etc/frob.yaml.", "After the list.",
			"-v", "Verbose, \u2014 really.", "More of -v's text."}},
	} {
		got, err := p.Lines(tc.heading)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Lines(%s) = %q, %v; want %q", tc.heading, got, err, tc.want)
		}
	}
}

func TestParseItems(t *testing.T) {
	p := parseSample(t)
	for _, tc := range []struct {
		heading string
		want    []Item
	}{
		{"run", []Item{
			{Tag: "-config FILE", Text: "The file. Default: /etc/frob.yaml.", Line: 18},
			{Tag: "-v", Text: "Verbose, \u2014 really. More of -v's text.", Line: 25},
		}},
		{"COMMANDS", []Item{
			{Tag: "-config FILE", Text: "The file. Default: /etc/frob.yaml.", Line: 18},
			{Tag: "-v", Text: "Verbose, \u2014 really. More of -v's text.", Line: 25},
		}},
		{"EXIT STATUS", []Item{{Tag: "0", Text: "Done.", Line: 33}, {Tag: "78 (config)", Text: "Bad file.", Line: 36}}},
		{"stop", nil},
	} {
		got, err := p.Items(tc.heading)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Items(%s) = %+v, %v; want %+v", tc.heading, got, err, tc.want)
		}
	}
	items, _ := p.Items("EXIT STATUS")
	if k := items[1].Key(); k != "78" {
		t.Errorf("Key of %q = %q", items[1].Tag, k)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"", "no .TH line"},
		{"text\n", "line 1: text before .TH"},
		{".TH x 1\ntext\n", "line 2: text before the first .SH"},
		{".TH x\n", "line 1: .TH needs a title and a section"},
		{".TH x 1\n.SS a\n", "line 2: .SS before the first .SH"},
		{".TH x 1\n.SH\n", "line 2: heading without text"},
		{".TH x 1\n.SH A\n.TP\n", "line 3: .TP without a tag line"},
		{".TH x 1\n.SH A\n.TP\n.PP\n", "line 4: .PP where the tag of the .TP on line 3 belongs"},
		{".TH x 1\n.SH A\n.TP\n.SH B\n", "line 4: heading where the tag"},
		{".TH x 1\n.SH A\n.de XX\n", "line 3: request .de is not one the pages use"},
	} {
		_, err := Parse([]byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", tc.src, err, tc.want)
		}
	}
}

func TestDuplicateHeading(t *testing.T) {
	p, err := Parse([]byte(".TH x 1\n.SH A\n.SS run\n.SH B\n.SS run\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Items("run"); err == nil || !strings.Contains(err.Error(), `heading "run" on lines 3 and 5`) {
		t.Errorf("Items(run) with two: %v", err)
	}
}

func TestUnescape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`\fBbold\fR and \fIit\fP`, "bold and it"},
		{`\f(CWcode\f[R]`, "code"},
		{`a\-b \e \\`, `a-b \ \`},
		{`x\&.y\|z\^w\c`, "x.yzw"},
		{`non\ breaking\~space`, "non breaking space"},
		{`\(em\(en\(aq\(dq\[lq]\[rq]`, "\u2014\u2013'\"\u201c\u201d"},
		{`\s-1small\s0 \s+2big\s(12`, "small big"},
		{`text \" comment`, "text "},
		{`\(zz and \*(Tm`, `\(zz and \*(Tm`},
		{`trailing\`, `trailing\`},
		{`\f`, ""},
	} {
		if got := unescape(tc.in); got != tc.want {
			t.Errorf("unescape(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSplitArgs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`a b  c`, []string{"a", "b", "c"}},
		{`"a b" c`, []string{"a b", "c"}},
		{`\-x " FILE"`, []string{`\-x`, " FILE"}},
		{`"say ""hi""" x`, []string{`say "hi"`, "x"}},
		{`a\ b c`, []string{`a\ b`, "c"}},
		{`""`, []string{""}},
		{``, nil},
	} {
		if got := splitArgs(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(samplePage))
	f.Add([]byte(".TH a 1\n.SH B\n.TP\n.BI \\-x \" Y\"\ntext \\f(CW\\(em\\*[x]\\s+(12\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := Parse(src)
		if err != nil {
			return
		}
		for _, h := range p.Headings() {
			if _, err := p.Items(h); err != nil && !strings.Contains(err.Error(), "heading") {
				t.Fatalf("Items(%q): %v", h, err)
			}
			if _, err := p.Text(h); err != nil && !strings.Contains(err.Error(), "heading") {
				t.Fatalf("Text(%q): %v", h, err)
			}
		}
	})
}
