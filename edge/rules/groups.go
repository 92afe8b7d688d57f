package rules

import (
	"fmt"
	"io"
	"strings"
)

// Group is an origin group: a name that rules use as "og:NAME", and its hosts.
type Group struct {
	Name  string   // lower case
	Hosts []Origin // IP addresses and domain names, in the order written
	Line  int      // line of the group in its file
}

// String returns the group in canonical form, without a line end.
func (g Group) String() string {
	var b strings.Builder
	b.WriteString(g.Name)
	for _, h := range g.Hosts {
		b.WriteByte(' ')
		b.WriteString(h.String())
	}
	return b.String()
}

// Groups is the content of an origin-groups file, in file order.
type Groups []Group

// Lookup returns the group called name (in any case).
func (gs Groups) Lookup(name string) (*Group, bool) {
	for i := range gs {
		if strings.EqualFold(gs[i].Name, name) {
			return &gs[i], true
		}
	}
	return nil, false
}

// names returns the set of lower-case group names.
func (gs Groups) names() map[string]bool {
	m := make(map[string]bool, len(gs))
	for _, g := range gs {
		m[strings.ToLower(g.Name)] = true
	}
	return m
}

// ParseGroups reads an origin-groups file from r. file names it in errors.
// When the file has bad lines, ParseGroups returns nil and an ErrorList
// with one LineError per bad line.
func ParseGroups(r io.Reader, file string) (Groups, error) {
	var (
		groups Groups
		errs   ErrorList
		lineOf = map[string]int{} // group name -> line that defined it
	)
	scan := func(n int, line string) {
		g, err := parseGroup(line)
		if err == nil && lineOf[g.Name] != 0 {
			err = fmt.Errorf("origin group %q is already defined on line %d", g.Name, lineOf[g.Name])
		}
		if err != nil {
			errs.add(file, n, err.Error())
			return
		}
		g.Line = n
		lineOf[g.Name] = n
		groups = append(groups, g)
	}
	if err := scanLines(r, file, &errs, scan); err != nil {
		return nil, err
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return groups, nil
}

// parseGroup parses one "NAME HOST [HOST...]" line.
func parseGroup(line string) (Group, error) {
	name, rest := cutField(line)
	name, err := checkGroupName(name)
	if err != nil {
		return Group{}, err
	}
	g := Group{Name: name}
	seen := map[string]bool{}
	for field := range strings.FieldsFuncSeq(rest, func(c rune) bool { return c == ' ' || c == '\t' }) {
		h, err := parseGroupHost(field)
		if err != nil {
			return Group{}, err
		}
		if seen[h.String()] {
			return Group{}, fmt.Errorf("host %s is listed twice in origin group %q", h, name)
		}
		seen[h.String()] = true
		g.Hosts = append(g.Hosts, h)
	}
	if len(g.Hosts) == 0 {
		return Group{}, fmt.Errorf("origin group %q has no hosts (want NAME HOST [HOST...])", name)
	}
	return g, nil
}

// parseGroupHost parses one host of a group.
func parseGroupHost(s string) (Origin, error) {
	if _, ok := cutGroupPrefix(s); ok {
		return Origin{}, fmt.Errorf("invalid host %q: an origin group cannot contain another group", s)
	}
	h, err := parseHost(s)
	if err != nil {
		return Origin{}, fmt.Errorf("invalid host %q: %w", s, err)
	}
	return h, nil
}
