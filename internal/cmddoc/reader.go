package cmddoc

import (
	"fmt"
	"strings"
)

// reader is Parse's state: the heading and tagged paragraph being read,
// the words of the output line being filled.
type reader struct {
	p       *Page
	n       int // source line number
	cur     *heading
	sh      *heading // the current .SH
	item    int      // index in cur.items of the open paragraph, or -1
	words   []string
	wantTag bool // after .TP: the next line is the tag
	tpLine  int
	nofill  bool // .nf or .EX: every source line is an output line
}

// breaks are the requests and macros that end the output line; the ones
// mapped to true also end a tagged paragraph.
var breaks = map[string]bool{
	"br": false, "sp": false, "IP": false, "HP": false, "RS": false, "RE": false,
	"SY": false, "YS": false, "EX": false, "EE": false, "nf": false, "fi": false,
	"in": false, "ti": false,
	"PP": true, "P": true, "LP": true,
}

// ignored are requests and macros that change the layout but neither the
// text nor the structure the tests read.
var ignored = map[string]bool{
	"ad": true, "na": true, "nh": true, "hy": true, "ne": true, "PD": true,
	"UR": true, "UE": true, "MT": true, "ME": true, "ns": true, "rs": true,
	"ll": true, "ta": true, "ft": true,
}

func (r *reader) line(s string) error {
	if s == "." || strings.HasPrefix(s, `.\"`) || strings.HasPrefix(s, `'\"`) {
		return nil
	}
	if !strings.HasPrefix(s, ".") && !strings.HasPrefix(s, "'") {
		if r.p.Name == "" {
			return fmt.Errorf("text before .TH")
		}
		return r.text(unescape(s))
	}
	name, rest, _ := strings.Cut(strings.TrimLeft(s[1:], " \t"), " ")
	args := splitArgs(rest)
	switch name {
	case "TH":
		if len(args) < 2 {
			return fmt.Errorf(".TH needs a title and a section")
		}
		r.p.Name, r.p.Section = unescape(args[0]), unescape(args[1])
		return nil
	case "SH", "SS":
		return r.heading(name == "SS", args)
	case "TP":
		r.endItem()
		r.wantTag, r.tpLine = true, r.n
		return nil
	case "B", "I", "SM", "SB":
		return r.text(unescape(strings.Join(args, " ")))
	case "BI", "BR", "IB", "IR", "RB", "RI":
		return r.text(unescape(strings.Join(args, "")))
	case "OP":
		return r.text("[" + unescape(strings.Join(args, " ")) + "]")
	}
	if ends, ok := breaks[name]; ok {
		return r.brk(name, ends, args)
	}
	if ignored[name] {
		return nil
	}
	return fmt.Errorf("request .%s is not one the pages use (cmddoc reads %s)", name, "man(7) and .SY/.YS/.OP/.EX/.EE")
}

// brk ends the output line for a break request; ends: it also ends the
// tagged paragraph.
func (r *reader) brk(name string, ends bool, args []string) error {
	if r.wantTag {
		return fmt.Errorf(".%s where the tag of the .TP on line %d belongs", name, r.tpLine)
	}
	r.flush()
	if ends {
		r.endItem()
	}
	switch name {
	case "nf", "EX":
		r.nofill = true
	case "fi", "EE":
		r.nofill = false
	case "SY":
		r.words = append(r.words, unescape(strings.Join(args, " ")))
	}
	return nil
}

func (r *reader) heading(sub bool, args []string) error {
	if r.wantTag {
		return fmt.Errorf("heading where the tag of the .TP on line %d belongs", r.tpLine)
	}
	if len(args) == 0 {
		return fmt.Errorf("heading without text (write it on the .SH/.SS line)")
	}
	if sub && r.sh == nil {
		return fmt.Errorf(".SS before the first .SH")
	}
	r.flush()
	r.endItem()
	h := &heading{name: unescape(strings.Join(args, " ")), sub: sub, line: r.n}
	if sub {
		h.parent = r.sh
	} else {
		r.sh = h
	}
	r.p.heads = append(r.p.heads, h)
	r.cur = h
	return nil
}

func (r *reader) text(s string) error {
	if r.cur == nil {
		return fmt.Errorf("text before the first .SH")
	}
	if r.wantTag {
		r.wantTag = false
		tag := normalize(s)
		r.cur.items = append(r.cur.items, Item{Tag: tag, Line: r.tpLine})
		r.cur.lines = append(r.cur.lines, tag)
		r.item = len(r.cur.items) - 1
		return nil
	}
	r.words = append(r.words, s)
	if r.nofill {
		r.flush()
	}
	return nil
}

// flush ends the output line being filled.
func (r *reader) flush() {
	l := normalize(strings.Join(r.words, " "))
	r.words = r.words[:0]
	if l == "" || r.cur == nil {
		return
	}
	r.cur.lines = append(r.cur.lines, l)
	if r.item >= 0 {
		it := &r.cur.items[r.item]
		it.Text = strings.TrimSpace(it.Text + " " + l)
	}
}

func (r *reader) endItem() {
	r.flush()
	r.item = -1
}

func normalize(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// splitArgs splits a macro's arguments: separated by spaces, a double-quoted
// argument may hold spaces and "" stands for a quote; escapes are kept for
// unescape.
func splitArgs(s string) []string {
	var (
		args  []string
		cur   strings.Builder
		inArg bool
		quote bool
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			cur.WriteByte(c)
			cur.WriteByte(s[i+1])
			i++
			inArg = true
		case quote && c == '"' && i+1 < len(s) && s[i+1] == '"':
			cur.WriteByte('"')
			i++
		case c == '"' && (quote || !inArg):
			quote = !quote
			inArg = true
		case !quote && (c == ' ' || c == '\t'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}
