package cmddoc

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// Page is a manual page read by [Read].
type Page struct {
	Path    string
	Name    string // the .TH title, e.g. "realip-agent"
	Section string // the .TH section, e.g. "8"
	heads   []*heading
}

// heading is a .SH or .SS heading with what follows it up to the next
// heading of the same or a higher level.
type heading struct {
	name  string
	sub   bool // .SS
	line  int
	items []Item
	lines []string // output lines, in order
	// parent is the .SH an .SS belongs to (nil for an .SH).
	parent *heading
}

// Item is a tagged paragraph (.TP): its tag line and the text up to the
// next paragraph or heading, as plain text.
type Item struct {
	Tag  string
	Text string
	Line int // the line of its .TP in the page's source
}

// Key is the item's tag up to its first space, without a trailing ':',
// ',' or '='; for "-config FILE" it is "-config".
func (it Item) Key() string {
	k, _, _ := strings.Cut(it.Tag, " ")
	return strings.TrimRight(k, ":,=")
}

// Read parses the man(7) source at path.
func Read(path string) (*Page, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cmddoc: %w", err)
	}
	p, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("cmddoc: %s: %w", path, err)
	}
	p.Path = path
	return p, nil
}

// Parse parses a man(7) source. It fails on a page without a .TH line, on
// text before it, and on a .TP with no tag line.
func Parse(src []byte) (*Page, error) {
	r := &reader{p: &Page{}, item: -1}
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		r.n++
		if err := r.line(sc.Text()); err != nil {
			return nil, fmt.Errorf("line %d: %w", r.n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if r.p.Name == "" {
		return nil, fmt.Errorf("no .TH line")
	}
	if r.wantTag {
		return nil, fmt.Errorf("line %d: .TP without a tag line", r.tpLine)
	}
	r.flush()
	return r.p, nil
}

// Headings returns the names of the page's .SH headings in order.
func (p *Page) Headings() []string {
	var out []string
	for _, h := range p.heads {
		if !h.sub {
			out = append(out, h.name)
		}
	}
	return out
}

// Subheadings returns the names of the .SS headings under the .SH called
// name, in order.
func (p *Page) Subheadings(name string) ([]string, error) {
	sh, err := p.find(name)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, h := range p.heads {
		if h.parent == sh {
			out = append(out, h.name)
		}
	}
	return out, nil
}

// Items returns the tagged paragraphs under the heading called name (an
// .SH with its .SS subsections, or one .SS), in order.
func (p *Page) Items(name string) ([]Item, error) {
	var out []Item
	err := p.each(name, func(h *heading) { out = append(out, h.items...) })
	return out, err
}

// Lines returns the output lines under the heading called name (an .SH
// with its .SS subsections, or one .SS): the text between two breaks
// (.br, .PP, .TP, .SY, ...), joined by single spaces.
func (p *Page) Lines(name string) ([]string, error) {
	var out []string
	err := p.each(name, func(h *heading) { out = append(out, h.lines...) })
	return out, err
}

// Text returns Lines(name) joined by single spaces.
func (p *Page) Text(name string) (string, error) {
	l, err := p.Lines(name)
	return strings.Join(l, " "), err
}

// each calls f for the heading called name and, for an .SH, each of its
// .SS headings.
func (p *Page) each(name string, f func(*heading)) error {
	h, err := p.find(name)
	if err != nil {
		return err
	}
	for _, x := range p.heads {
		if x == h || (x.parent == h && h.parent == nil && !h.sub) {
			f(x)
		}
	}
	return nil
}

// find returns the one heading called name.
func (p *Page) find(name string) (*heading, error) {
	var found *heading
	for _, h := range p.heads {
		if h.name != name {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("cmddoc: %s: heading %q on lines %d and %d", p.Path, name, found.line, h.line)
		}
		found = h
	}
	if found == nil {
		return nil, fmt.Errorf("cmddoc: %s: no heading %q (headings: %s)", p.Path, name, strings.Join(p.Headings(), ", "))
	}
	return found, nil
}
