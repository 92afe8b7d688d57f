package cmddoc

import (
	"flag"
	"fmt"
	"slices"
	"strings"
)

// isBool reports whether f is a boolean flag (given without a value).
func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// zeroDefaults are the defaults of flags that are unset by default; a
// page need not write them out.
var zeroDefaults = map[string]bool{"": true, "false": true, "0": true, "0s": true}

// FlagNames returns the flags of fs as typed, "-name", sorted.
func FlagNames(fs *flag.FlagSet) []string {
	var out []string
	fs.VisitAll(func(f *flag.Flag) { out = append(out, "-"+f.Name) })
	slices.Sort(out)
	return out
}

// CheckFlags compares a flag set with the tagged paragraphs that document
// it (tags "-name VALUE", or "-name" for a boolean flag) and returns every
// difference: a flag without a paragraph, a paragraph for no flag, a value
// flag whose tag names no value or a boolean flag's tag that names one,
// and a default value (other than a zero one: "", false, 0, 0s) that the
// text does not give.
func CheckFlags(fs *flag.FlagSet, items []Item) []string {
	var problems []string
	byKey := make(map[string]Item)
	for _, it := range items {
		if _, dup := byKey[it.Key()]; dup {
			problems = append(problems, fmt.Sprintf("%s is documented twice (line %d)", it.Key(), it.Line))
		}
		byKey[it.Key()] = it
	}
	fs.VisitAll(func(f *flag.Flag) {
		it, ok := byKey["-"+f.Name]
		delete(byKey, "-"+f.Name)
		if !ok {
			problems = append(problems, fmt.Sprintf("flag -%s (%s) is not documented", f.Name, f.Usage))
			return
		}
		words := len(strings.Fields(it.Tag))
		switch {
		case isBool(f) && words != 1:
			problems = append(problems, fmt.Sprintf("-%s is a boolean flag, but its tag %q (line %d) names a value", f.Name, it.Tag, it.Line))
		case !isBool(f) && words != 2:
			problems = append(problems, fmt.Sprintf("-%s takes a value, but its tag %q (line %d) is not \"-%s VALUE\"", f.Name, it.Tag, it.Line, f.Name))
		}
		if d := f.DefValue; !zeroDefaults[d] && !strings.Contains(it.Text, d) {
			problems = append(problems, fmt.Sprintf("-%s: the text (line %d) does not give the default %q", f.Name, it.Line, d))
		}
	})
	for k, it := range byKey {
		problems = append(problems, fmt.Sprintf("%s (line %d) is documented but is not a flag", k, it.Line))
	}
	slices.Sort(problems)
	return problems
}

// CheckFlagCompletion checks the completion of the flags of fs after
// prefix (the command line up to them, e.g. "realip-agent status "):
// "-" and "--" complete to exactly the flags; after a boolean flag the
// flags are offered again, after a value flag (as "-name " and "-name=")
// none is. It returns every difference.
func (c Completion) CheckFlagCompletion(prefix string, fs *flag.FlagSet) ([]string, error) {
	var problems []string
	want := FlagNames(fs)
	dashes := make([]string, len(want))
	for i, f := range want {
		dashes[i] = "-" + f
	}
	for _, tc := range []struct {
		line string
		want []string
	}{{prefix + "-", want}, {prefix + "--", dashes}} {
		got, err := c.Complete(tc.line)
		if err != nil {
			return nil, err
		}
		if !slices.Equal(got, tc.want) {
			problems = append(problems, fmt.Sprintf("%q completes to %q, want %q", tc.line, got, tc.want))
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil {
			return
		}
		var p []string
		p, err = c.checkAfterFlag(prefix, f, want)
		problems = append(problems, p...)
	})
	return problems, err
}

// checkAfterFlag completes the word after flag f.
func (c Completion) checkAfterFlag(prefix string, f *flag.Flag, flags []string) ([]string, error) {
	lines := []string{prefix + "-" + f.Name + " "}
	if !isBool(f) {
		lines = append(lines, prefix+"-"+f.Name+"=")
	}
	var problems []string
	for _, line := range lines {
		got, err := c.Complete(line)
		if err != nil {
			return nil, err
		}
		switch {
		case isBool(f) && !slices.Equal(got, flags):
			problems = append(problems, fmt.Sprintf("after boolean flag -%s: %q completes to %q, want the flags %q", f.Name, line, got, flags))
		case !isBool(f) && slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "-") }):
			problems = append(problems, fmt.Sprintf("-%s takes a value, but %q completes to flags: %q", f.Name, line, got))
		}
	}
	return problems, nil
}
