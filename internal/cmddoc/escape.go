package cmddoc

import "strings"

// specials are the special characters (\(xx, \[xx]) the pages may use.
var specials = map[string]string{
	"em": "\u2014", "en": "\u2013", "aq": "'", "dq": `"`, "ga": "`", "ti": "~",
	"ha": "^", "rs": `\`, "bu": "\u2022", "lq": "\u201c", "rq": "\u201d",
	"oq": "\u2018", "cq": "\u2019", "mi": "-", "pl": "+", "<=": "\u2264",
	">=": "\u2265", "->": "\u2192", "<-": "\u2190", "mu": "\u00d7", "co": "\u00a9",
}

// unescape turns troff text into plain text: font and size changes are
// dropped, \- is '-', \e is '\', special characters become what they
// stand for, and a \" comment ends the text. An escape it does not know
// is kept as written, so a test shows it.
func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		n, out, stop := escape(s[i:])
		if stop {
			break
		}
		b.WriteString(out)
		i += n - 1
	}
	return b.String()
}

// escape reads the escape after a backslash at the start of s and returns
// how many bytes it takes, its text, and stop for a \" comment.
func escape(s string) (n int, out string, stop bool) {
	switch c := s[0]; c {
	case '"':
		return 1, "", true
	case 'f':
		return 1 + argLen(s[1:]), "", false
	case 's':
		i := 1
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i < len(s) && s[i] == '(' {
			return i + 3, "", false
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i, "", false
	case '-':
		return 1, "-", false
	case 'e', '\\':
		return 1, `\`, false
	case '&', '|', '^', 'c', ':', ')', '%':
		return 1, "", false
	case ' ', '~', '0':
		return 1, " ", false
	case '\'':
		return 1, "\u00b4", false
	case '`':
		return 1, "`", false
	case '(', '[':
		l := argLen(s)
		name := strings.TrimSuffix(s[1:l], "]")
		if v, ok := specials[name]; ok {
			return l, v, false
		}
		return l, `\` + s[:l], false
	case '*':
		l := 1 + argLen(s[1:])
		return l, `\` + s[:l], false
	}
	return 1, s[:1], false
}

// argLen is the length of an escape's argument at the start of s: "(xx",
// "[name]" or a single character.
func argLen(s string) int {
	switch {
	case s == "":
		return 0
	case s[0] == '(':
		return min(3, len(s))
	case s[0] == '[':
		if i := strings.IndexByte(s, ']'); i >= 0 {
			return i + 1
		}
		return len(s)
	}
	return 1
}
