package rules

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/realip/realip/wire"
)

// Parse reads a rules file from r. file names it in errors. groups are the
// origin groups that "og:NAME" origins may refer to; they are kept in the
// returned Set. When the file has bad lines, Parse returns a nil Set and an
// ErrorList with one LineError per bad line.
func Parse(r io.Reader, file string, groups Groups) (*Set, error) {
	p := &ruleParser{file: file, known: groups.names(), set: &Set{Groups: groups}}
	if err := scanLines(r, file, &p.errs, p.line); err != nil {
		return nil, err
	}
	if err := p.errs.err(); err != nil {
		return nil, err
	}
	return p.set, nil
}

// ruleParser holds the state of Parse.
type ruleParser struct {
	file  string
	known map[string]bool // lower-case names of the defined groups
	set   *Set
	count int // rule lines seen, good or bad
	errs  ErrorList
}

// line handles one rule line (not blank, not a comment).
func (p *ruleParser) line(n int, text string) {
	p.count++
	if p.count == MaxRules+1 {
		p.errs.add(p.file, n, fmt.Sprintf("too many rules: a file holds at most %d", MaxRules))
		return
	}
	r, err := parseRule(text, p.known)
	if err != nil {
		p.errs.add(p.file, n, err.Error())
		return
	}
	if p.count > MaxRules {
		return
	}
	r.Line = n
	if err := p.set.add(r); err != nil {
		p.errs.add(p.file, n, err.Error())
	}
}

const ruleFormat = "PROTO:PORTS ORIGIN ORIGINPORT PERSIST IPMODE [TAG]"

// parseRule parses one rule line, trimmed of surrounding blanks. It checks
// the line on its own, not against other rules.
func parseRule(line string, known map[string]bool) (Rule, error) {
	var f [5]string
	rest := line
	for i := range f {
		f[i], rest = cutField(rest)
		if f[i] == "" {
			return Rule{}, fmt.Errorf("want at least 5 fields (%s), got %d", ruleFormat, countFields(line))
		}
	}
	var r Rule
	var err error
	if r.Proto, r.Ports, err = parseProtoPorts(f[0]); err != nil {
		return Rule{}, err
	}
	if r.Origin, err = parseOrigin(f[1], known); err != nil {
		return Rule{}, err
	}
	if r.OriginPort, err = parseOriginPort(f[2], r.Ports); err != nil {
		return Rule{}, err
	}
	if r.Persist, err = parsePersist(f[3]); err != nil {
		return Rule{}, err
	}
	if r.IPMode, err = parseIPMode(f[4], r.Proto); err != nil {
		return Rule{}, err
	}
	if r.Tag, err = parseTag(rest); err != nil {
		return Rule{}, err
	}
	return r, nil
}

// parseProtoPorts parses the PROTO:PORTS field.
func parseProtoPorts(s string) (Proto, []PortRange, error) {
	name, ports, ok := strings.Cut(s, ":")
	if !ok {
		return 0, nil, fmt.Errorf("missing \":\" between protocol and ports in %q", s)
	}
	proto, err := parseProto(name)
	if err != nil {
		return 0, nil, err
	}
	list, err := parseForwardPorts(proto, ports)
	if err != nil {
		return 0, nil, err
	}
	return proto, list, nil
}

func parseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (want tcp or udp)", s)
}

func parsePersist(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "on":
		return true, nil
	case "off":
		return false, nil
	}
	return false, fmt.Errorf("invalid session persistence %q (want on or off)", s)
}

// parseIPMode parses IPMODE and checks that proto supports it.
func parseIPMode(s string, proto Proto) (wire.Proto, error) {
	keyword := strings.ToLower(s)
	for _, im := range ipModes {
		if keyword != ModeKeyword(im.mode) {
			continue
		}
		if !proto.Supports(im.mode) {
			return 0, fmt.Errorf("IP passing mode %s is not available for %s", keyword, proto)
		}
		return im.mode, nil
	}
	keywords := make([]string, len(ipModes))
	for i, im := range ipModes {
		keywords[i] = ModeKeyword(im.mode)
	}
	last := len(keywords) - 1
	return 0, fmt.Errorf("invalid IP passing mode %q (want %s or %s)", s, strings.Join(keywords[:last], ", "), keywords[last])
}

// parseTag checks the text after IPMODE and returns it trimmed.
func parseTag(rest string) (string, error) {
	tag := strings.Trim(rest, " \t")
	if tag == "" {
		return "", nil
	}
	if !utf8.ValidString(tag) {
		return "", errors.New("tag is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(tag); n > MaxTagLen {
		return "", fmt.Errorf("tag is %d characters long, at most %d are allowed", n, MaxTagLen)
	}
	for _, c := range tag {
		if c != '\t' && unicode.IsControl(c) {
			return "", fmt.Errorf("tag contains control character %U", c)
		}
	}
	return tag, nil
}
