//go:build linux

package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Layout of doctor's text: a verdict column, a name column, then the
// detail and advice wrapped so that no line is wider than TextWidth.
const (
	TextWidth     = 80
	verdictWidth  = 8
	nameWidth     = 10
	textColumn    = verdictWidth + nameWidth + 1
	advicePrefix  = "fix: "
	adviceHanging = len(advicePrefix)
)

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes r for a person, no line wider than TextWidth: a
// heading, one entry per check (verdict, name, what was seen, "fix:" and
// what to do), and a count of the verdicts.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	span := "totals since the receiver started (-watch compares two readings)"
	if r.WindowSeconds > 0 {
		span = fmt.Sprintf("what moved in a window of %gs", r.WindowSeconds)
	}
	for _, head := range []string{
		fmt.Sprintf("realip-agent doctor: kernel %s, receiver %s", r.Kernel, r.Receiver),
		"config: " + r.Config,
		"counters: " + span,
	} {
		for _, line := range wrap(head, TextWidth) {
			b.WriteString(line + "\n")
		}
	}
	b.WriteString("\n")
	for _, c := range r.Checks {
		writeCheck(&b, c)
	}
	fmt.Fprintf(&b, "\n%s\n", r.summary())
	_, err := io.WriteString(w, b.String())
	return err
}

func writeCheck(b *strings.Builder, c Check) {
	verdict := string(c.Status)
	if c.Status == CheckProblem {
		verdict = "PROBLEM"
	}
	head := fmt.Sprintf("%-*s%-*s ", verdictWidth, verdict, nameWidth, c.Name)
	if len(head) > textColumn {
		b.WriteString(strings.TrimRight(head, " ") + "\n")
		head = ""
	}
	pad := strings.Repeat(" ", textColumn)
	for i, line := range wrap(c.Detail, TextWidth-textColumn) {
		if i == 0 && head != "" {
			b.WriteString(head + line + "\n")
			continue
		}
		b.WriteString(pad + line + "\n")
	}
	if c.Advice == "" {
		return
	}
	for i, line := range wrap(c.Advice, TextWidth-textColumn-adviceHanging) {
		lead := strings.Repeat(" ", adviceHanging)
		if i == 0 {
			lead = advicePrefix
		}
		b.WriteString(pad + lead + line + "\n")
	}
}

// summary counts the verdicts: "1 problem, 2 warnings, 8 ok, 1 skipped".
func (r *Report) summary() string {
	plural := func(n int, one, many string) string {
		if n == 1 {
			return fmt.Sprintf("%d %s", n, one)
		}
		return fmt.Sprintf("%d %s", n, many)
	}
	parts := []string{
		plural(r.count(CheckProblem), "problem", "problems"),
		plural(r.count(CheckWarn), "warning", "warnings"),
		fmt.Sprintf("%d ok", r.count(CheckOK)),
		fmt.Sprintf("%d skipped", r.count(CheckSkip)),
	}
	return strings.Join(parts, ", ")
}

// wrap breaks s into lines of at most width characters at spaces; a word
// longer than width is cut.
func wrap(s string, width int) []string {
	var lines []string
	var line []rune
	for _, f := range strings.Fields(s) {
		word := []rune(f)
		for len(word) > width {
			if len(line) > 0 {
				lines = append(lines, string(line))
				line = nil
			}
			lines = append(lines, string(word[:width]))
			word = word[width:]
		}
		switch {
		case len(line) == 0:
			line = word
		case len(line)+1+len(word) <= width:
			line = append(append(line, ' '), word...)
		default:
			lines = append(lines, string(line))
			line = word
		}
	}
	if len(line) > 0 || len(lines) == 0 {
		lines = append(lines, string(line))
	}
	return lines
}
