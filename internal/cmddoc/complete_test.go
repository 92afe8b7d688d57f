package cmddoc

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSplitWords(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"frob", []string{"frob"}},
		{"frob ", []string{"frob", ""}},
		{"frob  run -x", []string{"frob", "run", "-x"}},
		{"frob -config=a.yaml", []string{"frob", "-config", "=", "a.yaml"}},
		{"frob -config=", []string{"frob", "-config", "="}},
		{"frob -listen [::1]:80", []string{"frob", "-listen", "[", "::", "1]", ":", "80"}},
		{"frob a==b\t", []string{"frob", "a", "==", "b", ""}},
		{"", []string{""}},
	} {
		if got := SplitWords(tc.line); !slices.Equal(got, tc.want) {
			t.Errorf("SplitWords(%q) = %q, want %q", tc.line, got, tc.want)
		}
	}
}

// frob is a small completion in the style of realip's: flags, a value
// flag that completes files, a boolean one.
const frob = `_frob() {
    local cur prev words cword
    _init_completion -n = || return
    if [[ $cur == -*=* ]]; then prev=${cur%%=*}; cur=${cur#*=}; fi
    case $prev in -file) _filedir txt; return ;; -n) return ;; esac
    local w="-file -n -q"
    [[ $cur == --* ]] && w="--file --n --q"
    mapfile -t COMPREPLY < <(compgen -W "$w" -- "$cur")
} && complete -F _frob frob
`

func frobCompletion(t *testing.T) Completion {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "frob")
	if err := os.WriteFile(script, []byte(frob), 0o644); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "work")
	for _, f := range []string{"a.txt", "b.txt", "c.yaml"} {
		if err := os.MkdirAll(work, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(work, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	return Completion{Script: script, WorkDir: work}
}

func TestComplete(t *testing.T) {
	RequireBashCompletion(t)
	c := frobCompletion(t)
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"frob ", []string{"-file", "-n", "-q"}},
		{"frob -f", []string{"-file"}},
		{"frob -file ", []string{"a.txt", "b.txt", "sub"}},
		{"frob -file a", []string{"a.txt"}},
		{"frob -file=", []string{"a.txt", "b.txt", "sub"}},
		{"frob -file=b", []string{"b.txt"}},
		{"frob -n ", nil},
		{"frob -q -", []string{"-file", "-n", "-q"}},
	} {
		got, err := c.Complete(tc.line)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q completes to %q, want %q", tc.line, got, tc.want)
		}
	}
	if _, err := c.Complete("other x"); err == nil || !strings.Contains(err.Error(), "does not start with frob") {
		t.Errorf("a line for another command: %v", err)
	}
}

func TestCompleteErrors(t *testing.T) {
	RequireBashCompletion(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "frob")
	if err := os.WriteFile(script, []byte("# registers nothing\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := (Completion{Script: script, WorkDir: dir}).Complete("frob "); err == nil || !strings.Contains(err.Error(), "no completion for frob") {
		t.Errorf("a script that registers no completion: %v", err)
	}
	if err := os.WriteFile(script, []byte("complete -W 'a b' frob\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := (Completion{Script: script, WorkDir: dir}).Complete("frob "); err == nil || !strings.Contains(err.Error(), "not a function completion") {
		t.Errorf("a word-list completion: %v", err)
	}
}

// TestCheckFlagCompletion runs the flag checks on frob: its flags agree,
// and a flag set with one more flag, or a value flag frob offers flags
// after, is reported.
func TestCheckFlagCompletion(t *testing.T) {
	RequireBashCompletion(t)
	c := frobCompletion(t)
	fs := flag.NewFlagSet("frob", flag.ContinueOnError)
	fs.String("file", "", "a file")
	fs.Int("n", 1, "a number")
	fs.Bool("q", false, "quiet")
	problems, err := c.CheckFlagCompletion("frob ", fs)
	if err != nil || len(problems) != 0 {
		t.Errorf("frob: %q, %v", problems, err)
	}
	fs.Bool("extra", false, "not completed")
	fs.String("list", "", "frob offers flags after it")
	problems, err = c.CheckFlagCompletion("frob ", fs)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(problems, "\n")
	for _, want := range []string{`"frob -" completes to ["-file" "-n" "-q"], want ["-extra" "-file" "-list" "-n" "-q"]`,
		"-list takes a value, but \"frob -list \" completes to flags"} {
		if !strings.Contains(joined, want) {
			t.Errorf("problems lack %q:\n%s", want, joined)
		}
	}
}

// TestCheckFlags compares a flag set with items as a page documents them.
func TestCheckFlags(t *testing.T) {
	fs := flag.NewFlagSet("frob", flag.ContinueOnError)
	fs.String("config", "/etc/frob.yaml", "file")
	fs.Bool("json", false, "json")
	fs.Duration("idle", 0, "idle")
	fs.Int("n", 7, "n")
	good := []Item{
		{Tag: "-config FILE", Text: "The file. Default: /etc/frob.yaml."},
		{Tag: "-json", Text: "JSON."},
		{Tag: "-idle DURATION", Text: "Idle."},
		{Tag: "-n N", Text: "Default: 7."},
	}
	if p := CheckFlags(fs, good); len(p) != 0 {
		t.Errorf("good items: %q", p)
	}
	bad := []Item{
		{Tag: "-config", Text: "The file.", Line: 1},
		{Tag: "-json BOOL", Text: "JSON.", Line: 2},
		{Tag: "-n N", Text: "Default: 8.", Line: 3},
		{Tag: "-gone X", Text: "Old.", Line: 4},
		{Tag: "-gone X", Text: "Twice.", Line: 5},
	}
	want := []string{
		`-config takes a value, but its tag "-config" (line 1) is not "-config VALUE"`,
		`-config: the text (line 1) does not give the default "/etc/frob.yaml"`,
		`-gone (line 5) is documented but is not a flag`,
		`-gone is documented twice (line 5)`,
		`-json is a boolean flag, but its tag "-json BOOL" (line 2) names a value`,
		`-n: the text (line 3) does not give the default "7"`,
		`flag -idle (idle) is not documented`,
	}
	if got := CheckFlags(fs, bad); !slices.Equal(got, want) {
		t.Errorf("bad items:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
